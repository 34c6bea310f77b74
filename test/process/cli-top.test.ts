/**
 * `shmbus inspect` and `shmbus top`, run as the real command against live traffic in child
 * processes (fixture traffic.ts): a channel kept half full by a slow reader, a fan-out sender
 * with a blob store and three consumers (a key filter, a group filter with an opt-in kind, one
 * that never reads and gets evicted), a daemon with a client sending requests, and a session
 * whose receiver holds each slot for a while. Everything goes to a private directory.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { type Child, startFixture } from '../helpers/children.js';
import { slow as scaled } from '../helpers/slow.js';

const dir = mkdtempSync('/dev/shm/shmbus-top-test-');
const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const socket = join(dir, 'feed.sock');
const children: Child[] = [];

function shmbus(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args, '--dir', dir], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// biome-ignore lint/suspicious/noExplicitAny: the --json documents are checked field by field below
type Json = any;

function inspectJson(name: string): Json {
  const r = shmbus('inspect', name, '--json');
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

async function start(role: string, name: string, config: object = {}): Promise<Child> {
  const child = startFixture('traffic', [role, name, JSON.stringify(config)], { SHMBUS_DIR: dir });
  children.push(child);
  const m = await child.waitFor((x) => x.ready === true || x.error !== undefined, scaled(15_000));
  assert.equal(m.ready, true, JSON.stringify(m));
  return child;
}

/** Polls `check` (which throws while the condition does not hold) until it passes or the deadline. */
async function eventually<T>(check: () => T, timeoutMs = scaled(15_000)): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(100);
    }
  }
}

let senderName = '';

before(async () => {
  await start('channel-tx', 'orders');
  await start('channel-rx', 'orders');
  await start('sender', 'feed', { path: socket });
  await start('consumer', 'c', { path: socket, name: 'keys', subscribe: { keys: ['k0', 'k1'] } });
  await start('consumer', 'c', { path: socket, name: 'group-optin', subscribe: { groups: ['g1'], kinds: [7] } });
  await start('consumer', 'c', { path: socket, name: 'stalled', subscribe: { keys: ['k2'] }, stall: true });
  await start('daemon', 'pricing');
  await start('client', 'pricing');
  await start('session-a', 'render');
  await start('session-b', 'render');
  const listed = JSON.parse(shmbus('ls', '--json').stdout) as { name: string; kind: string }[];
  senderName = listed.find((s) => s.kind === 'fan-out sender')?.name ?? '';
  assert.notEqual(senderName, '', 'the sender registration is listed');
});

after(async () => {
  for (const c of children) c.kill('SIGTERM');
  for (const c of children) await c.exited(scaled(10_000)).catch(() => c.kill('SIGKILL'));
  rmSync(dir, { recursive: true, force: true });
});

test('inspect shows a channel’s frames in flight per ring, counted by walking its records', () => {
  const info = inspectJson('orders');
  assert.equal(info.kind, 'channel');
  assert.equal(info.details.consumer.alive, true);
  assert.ok(info.details.producer.sentFrames > 0);
  const ring = info.details.rings[0];
  assert.equal(ring.class, 0);
  // The reader drains 20 frames every 5 ms; the writer keeps the ring about half full.
  assert.ok(ring.fill > 0.1, `fill ${ring.fill}`);
  assert.equal(typeof ring.framesInFlight, 'number', 'the walk added up');
  // 200-byte frames take 208 bytes with their header; at most one padding record (< 208 B) at the ring's end.
  const padding = ring.fillBytes - 208 * ring.framesInFlight;
  assert.ok(padding >= 0 && padding < 208, `${ring.framesInFlight} frames in ${ring.fillBytes} bytes`);
  assert.ok(ring.framesInFlight > 0);
  assert.equal(info.details.latency, null, 'a plain channel has no latency');
});

test('inspect of a fan-out sender lists each consumer with its filter, its ring’s lag and latency, and evictions with their reason', async () => {
  const info = await eventually(() => {
    const i = inspectJson(senderName);
    const byName = (n: string) => i.details.perConsumer.find((c: Json) => c.name === n);
    assert.equal(byName('stalled')?.state, 'evicted');
    assert.ok(byName('keys')?.ring.latency !== null && byName('group-optin')?.ring.latency !== null);
    return i;
  });
  const d = info.details;
  assert.equal(d.protocol, 2);
  assert.deepEqual(d.kindModes['opt-in'], [7]);
  assert.equal(d.consumers, 2, 'two consumers left');
  assert.ok(d.evictions['ring-full'] >= 1);
  const byName = (n: string) => d.perConsumer.find((c: Json) => c.name === n);
  const keys = byName('keys');
  assert.equal(keys.state, 'live');
  assert.deepEqual([keys.keys, keys.groups, keys.kinds], [2, 0, []]);
  assert.match(keys.filter, /^2 key\(s\), 0 group\(s\), 0 opted-in kind\(s\)$/);
  const group = byName('group-optin');
  assert.deepEqual([group.keys, group.groups, group.kinds], [0, 1, [7]]);
  for (const c of [keys, group]) {
    assert.ok(c.pid > 0 && c.pid !== process.pid);
    assert.ok(c.delivered > 0 && c.deliveredBytes > c.delivered);
    assert.equal(c.ring.found, true);
    assert.equal(c.ring.consumerAlive, true);
    assert.equal(typeof c.ring.lagFrames, 'number');
    assert.ok(c.ring.latency.p50Ns > 0 && c.ring.latency.p99Ns >= c.ring.latency.p50Ns);
    assert.ok(c.ring.latency.samples > 0);
  }
  // The group consumer gets every kind-1 message (all carry group g1); the key one half of them.
  assert.ok(group.delivered > keys.delivered, `${group.delivered} > ${keys.delivered}`);
  const stalled = byName('stalled');
  assert.equal(stalled.evictReason, 'ring-full');
  assert.ok(stalled.endedMs >= stalled.connectedMs);
  assert.equal(stalled.ring.found, false, 'an evicted consumer’s ring is removed');
});

test('inspect of a daemon shows its client, the command queues per class, the commands served and the state version', async () => {
  const first = inspectJson('pricing').details;
  assert.equal(first.clients.length, 1);
  const c = first.clients[0];
  assert.equal(c.alive, true);
  assert.equal(c.commands.perClass.length, 3);
  assert.deepEqual(
    c.commands.perClass.map((k: Json) => k.class),
    ['critical', 'high', 'low'],
  );
  assert.ok(c.commands.served > 0);
  assert.ok(c.responses.sent > 0);
  assert.equal(typeof c.commands.queued, 'number');
  await sleep(200);
  const second = inspectJson('pricing').details;
  assert.ok(second.stateVersion > first.stateVersion, 'the daemon publishes every 10 ms');
  assert.ok(second.commandsServed > first.commandsServed);
});

test('inspect of a session counts its slots per state and per peer, and the descriptors each way', () => {
  const d = inspectJson('render').details;
  const s = d.slots;
  assert.equal(s.slots, 8);
  assert.equal(s.free + s.held + s.inFlight, 8);
  assert.ok(s.inFlight > 0, 'B holds each message 20 ms');
  assert.equal(d.peerB.alive, true);
  assert.ok(d.aToB.sentFrames > 0);
  assert.equal(s.byPeer.A.inFlight + s.byPeer.B.inFlight, s.inFlight);
});

test('inspect of a blob store shows its chunks with entries, acknowledgements and ages', () => {
  const d = inspectJson('feed-blobs').details;
  assert.ok(d.chunks.length >= 1);
  assert.ok(d.entries > 0);
  assert.ok(d.acked <= d.entries);
  assert.equal(typeof d.oldestChunkAgeMs, 'number');
  assert.ok(d.oldestChunkAgeMs >= d.newestChunkAgeMs);
  const active = d.chunks.find((c: Json) => c.state === 'active');
  assert.equal(active.file.found, true);
  assert.ok(active.file.used > 0);
});

test('top --once --json reports rates above zero for every primitive carrying traffic, and the fan-out latency', async () => {
  const doc = await eventually(() => {
    const r = shmbus('top', '--once', '--json', '--interval', '500');
    assert.equal(r.status, 0, r.stderr);
    const d = JSON.parse(r.stdout);
    const row = (n: string) => d.rows.find((x: Json) => x.name === n);
    for (const n of ['orders', senderName, 'pricing', 'render', 'feed-blobs']) {
      assert.ok(row(n)?.framesPerSec > 0, `${n}: ${JSON.stringify(row(n))}`);
      assert.ok(row(n)?.bytesPerSec > 0, n);
    }
    assert.ok(row(senderName).latencyP99Ns > 0);
    // Inside the retry: under load the stalled consumer's eviction and the reader's pace take a while.
    assert.ok(row('orders').fill > 0.1, JSON.stringify(row('orders')));
    assert.ok(row(senderName).drops >= 1, 'the eviction counts as a drop');
    assert.equal(row(senderName).peers, '2 consumer(s)');
    return d;
  });
  assert.ok(doc.intervalMs >= 500);
  const row = (n: string) => doc.rows.find((x: Json) => x.name === n);
  assert.equal(row('feed-blobs')?.kind, 'blob store');
  assert.equal(
    doc.rows.some((x: Json) => x.kind === 'blob chunk'),
    false,
    'chunks are folded into their store',
  );
});

test('top --once prints a table with the expected columns', () => {
  const r = shmbus('top', '--once', '--interval', '200');
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^shmbus top - .* UTC - .* segment\(s\), rates over \d+ ms$/);
  assert.match(lines[1], /^NAME\s+KIND\s+PID\s+STATE\s+FILL\s+FRAMES\/S\s+BYTES\/S\s+DROPS\s+LAT p50\/p99\s+PEERS$/);
  assert.match(
    r.stdout,
    /^orders\s+channel\s+\d+\s+alive\s+\d+%\s+\d[\d.]*k?\/s\s+[\d.]+ (B|KiB|MiB)\/s\s+\d+\s+-\s+consumer alive$/m,
  );
  assert.match(
    r.stdout,
    /^sender\.\S+\s+fan-out sender\s+\d+\s+alive\s+.*\d+(us|\.\dms)\/\d+(us|\.\dms)\s+\d consumer\(s\)$/m,
  );
  assert.equal(shmbus('top', '--interval', 'x').status, 2);
  assert.equal(shmbus('top', '--bogus').status, 2);
});

test('top with stdout not a terminal prints one plain snapshot per interval until interrupted', async () => {
  const child = spawn(process.execPath, [cli, 'top', '--interval', '150', '--dir', dir], { stdio: 'pipe' });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    out += s;
  });
  await eventually(() => assert.ok((out.match(/^NAME /gm) ?? []).length >= 2, out), scaled(10_000));
  child.kill('SIGINT');
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  assert.equal(code, 0);
  assert.equal(out.includes('\x1b['), false, 'no escape sequences when stdout is not a terminal');
});

const hasScript = spawnSync('script', ['--version']).status === 0;

test('top on a terminal draws on the alternate screen and restores the terminal on q', {
  skip: !hasScript && 'no script(1) here to give it a terminal',
}, async () => {
  const child = spawn('script', ['-qfc', `${process.execPath} ${cli} top --interval 150 --dir ${dir}`, '/dev/null'], {
    stdio: 'pipe',
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => {
    out += s;
  });
  await eventually(() => assert.match(out, /FRAMES\/S/), scaled(10_000));
  child.stdin.write('q');
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  assert.equal(code, 0);
  assert.ok(out.startsWith('\x1b[?1049h\x1b[?25l'), 'enters the alternate screen, hides the cursor');
  assert.ok(out.includes('\x1b[H\x1b[2J'), 'clears and redraws');
  assert.ok(out.endsWith('\x1b[?25h\x1b[?1049l'), 'shows the cursor and leaves the alternate screen last');
});
