/**
 * Daemon and clients across real processes: a daemon child (test/fixtures/daemon-server.ts)
 * publishing self-checking state and serving the commands of daemon-protocol.ts, client
 * children (test/fixtures/daemon-client.ts) that verify every snapshot and reply, and this
 * process as a client where nothing of it needs to die. Crash tests SIGKILL real processes
 * mid-operation and assert what the survivors observe.
 *
 * Every test file run gets its own segment directory (a mkdtemp under /dev/shm, as
 * SHMBUS_DIR for this process and every child), so a test can assert which segment files
 * exist; afterEach kills the children, closes this process's ends and empties it. Every wait
 * has a deadline; nothing asserts a duration.
 */
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { Client, Daemon, ErrorCode, ShmError } from '../../src/index.js';
import { PROTOCOL_VERSION_OFFSET } from '../../src/layout/daemon.js';
import { command, commandU32, Op } from '../fixtures/daemon-protocol.js';
import { type Child, startFixture, uniqueName } from '../helpers/children.js';
import { testSeed } from '../helpers/prng.js';

const dir = mkdtempSync('/dev/shm/shmbus-daemon-test-');
process.env.SHMBUS_DIR = dir;

const children: Child[] = [];
const ends: { close(): void }[] = [];

afterEach(async () => {
  for (const end of ends.splice(0)) end.close();
  const running = children.splice(0);
  for (const child of running) child.kill('SIGKILL');
  await Promise.all(running.map((child) => child.exited(30_000)));
  for (const file of readdirSync(dir)) rmSync(join(dir, file), { force: true });
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const segmentFile = (name: string) => join(dir, `shmbus.${name}`);
const hasCode = (code: string) => (err: unknown) => err instanceof ShmError && err.code === code;
const has = (key: string) => (m: Record<string, unknown>) => key in m;

/** Starts a daemon child and waits until it created its segment. */
async function startDaemon(name: string, config: Record<string, unknown>): Promise<Child> {
  const child = startFixture('daemon-server', [name, JSON.stringify(config)]);
  children.push(child);
  const first = await child.waitFor((m) => 'ready' in m || 'createError' in m, 30_000);
  assert.equal(first.ready, true, `daemon did not start: ${JSON.stringify(first)}`);
  return child;
}

/** Starts a client child and waits until it connected. */
async function startClient(name: string, config: Record<string, unknown>): Promise<Child> {
  const child = startFixture('daemon-client', [name, JSON.stringify(config)]);
  children.push(child);
  const first = await child.waitFor((m) => 'ready' in m || 'connectError' in m, 30_000);
  assert.equal(first.ready, true, `client did not connect: ${JSON.stringify(first)}`);
  return child;
}

/** A client in this process, closed by afterEach. */
function connect(name: string, options: Parameters<typeof Client.connect>[1] = {}): Client {
  const c = Client.connect(name, options);
  ends.push(c);
  return c;
}

/** Resolves once `child` printed at least `n` messages matching `match`; returns them. */
async function waitForCount(
  child: Child,
  match: (m: Record<string, unknown>) => boolean,
  n: number,
  timeoutMs: number,
): Promise<Record<string, unknown>[]> {
  await child.waitFor(() => child.messages.filter(match).length >= n, timeoutMs);
  return child.messages.filter(match);
}

async function stats(c: Client): Promise<{
  stats: Record<string, number>;
  clients: { clientId: number; slot: number; commands: number }[];
}> {
  return JSON.parse(text(await c.request(command(Op.STATS), { timeoutMs: 30_000 })));
}

function echoOf(c: Client, cmd: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + cmd.length);
  new DataView(out.buffer).setUint32(0, c.clientId, true);
  out.set(cmd, 4);
  return out;
}

describe('shared state across processes', () => {
  test('four reader processes never see a torn snapshot while the daemon publishes flat out for 5 s', async () => {
    const name = uniqueName('torn');
    const dataSize = 128 * 1024;
    const sut = await startDaemon(name, { mode: 'torn', create: { dataSize }, waitClients: 4, durationMs: 5000 });
    const readers = await Promise.all([0, 1, 2, 3].map(() => startClient(name, { mode: 'torn', dataSize })));

    await sut.waitFor(has('publishing'), 30_000);
    const done = await sut.waitFor(has('published'), 120_000);
    const reports = await Promise.all(readers.map((r) => r.waitFor(has('checked'), 120_000)));

    assert.ok((done.published as number) > 1000, `the daemon published only ${done.published} versions`);
    for (const [i, r] of reports.entries()) {
      assert.equal(r.problem, null, `reader ${i}: ${r.problem}`);
      assert.equal(r.finalProblem, null, `reader ${i} (final read): ${r.finalProblem}`);
      assert.ok((r.checked as number) > 1000, `reader ${i} checked only ${r.checked} snapshots`);
      assert.ok((r.distinct as number) > 50, `reader ${i} saw only ${r.distinct} distinct versions`);
      assert.equal(r.finalVersion, done.lastVersion, `reader ${i} ends on the last version published`);
    }
    await sut.exited(30_000);
    assert.equal(existsSync(segmentFile(name)), false, 'the daemon closed cleanly: its segment is gone');
  });

  test('a daemon SIGKILLed mid-publish leaves the last complete state and its clients report it dead', async () => {
    const name = uniqueName('crash');
    const dataSize = 64 * 1024;
    const sut = await startDaemon(name, { mode: 'tight', create: { dataSize, livenessCheckMs: 50 }, waitClients: 2 });
    const readers = await Promise.all([0, 1].map(() => startClient(name, { mode: 'crash', dataSize })));
    await sut.waitFor(has('publishing'), 30_000);
    await Promise.all(readers.map((r) => r.waitFor(has('progress'), 60_000)));

    sut.kill('SIGKILL');
    assert.equal((await sut.exited(30_000)).signal, 'SIGKILL');
    const reports = await Promise.all(readers.map((r) => r.waitFor(has('settled'), 60_000)));

    for (const [i, r] of reports.entries()) {
      const at = `reader ${i}: ${JSON.stringify(r)}`;
      assert.equal(r.problem, null, at);
      assert.equal(r.finalProblem, null, `the state after the crash is complete; ${at}`);
      assert.ok((r.distinct as number) >= 20, at);
      assert.equal(r.settled, true, `the pending request ended; ${at}`);
      assert.equal(r.pendingError, ErrorCode.PEER_DEAD, `the request pending at the kill; ${at}`);
      assert.equal(r.alive, false, `daemonAlive(); ${at}`);
      assert.equal(r.newError, ErrorCode.PEER_DEAD, `a request after the kill; ${at}`);
      assert.equal(r.syncError, ErrorCode.PEER_DEAD, `a requestSync after the kill; ${at}`);
      assert.equal(r.againVersion, r.finalVersion, `the state no longer moves; ${at}`);
      assert.equal(r.latest, r.finalVersion, `latestVersion() is the last complete write; ${at}`);
      assert.equal(r.pendingAfter, 0, at);
    }
    assert.equal(reports[0].finalVersion, reports[1].finalVersion, 'both readers agree on the last complete version');
    assert.equal(
      existsSync(segmentFile(name)),
      true,
      'a crashed daemon leaves its segment (the next create replaces it)',
    );
  });

  test('readData() returns the true length, truncates to a short buffer and never leaks older bytes', async () => {
    const name = uniqueName('length');
    await startDaemon(name, { mode: 'serve', create: { dataSize: 64 } });
    const sut = connect(name);
    const ten = Uint8Array.from([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    const v1 = Number(text(await sut.request(command(Op.WRITE, ten), { timeoutMs: 30_000 })));
    const v2 = Number(text(await sut.request(command(Op.WRITE, Uint8Array.of(1, 2, 3)), { timeoutMs: 30_000 })));
    assert.equal(v2, v1 + 1);

    const two = new Uint8Array(2);
    assert.equal(sut.readData(two), 3, 'the true length, not the bytes copied');
    assert.deepEqual([...two], [1, 2]);
    assert.equal(sut.dataVersion, v2);

    const whole = sut.readData();
    assert.deepEqual([...whole], [1, 2, 3], 'exactly the 3 bytes of the latest write');

    const wide = new Uint8Array(16).fill(0xee);
    assert.equal(sut.readData(wide), 3);
    assert.deepEqual([...wide.subarray(0, 3)], [1, 2, 3]);
    assert.ok(
      wide.subarray(3).every((b) => b === 0xee),
      `bytes past the state are untouched (no tail of the 10-byte state): ${[...wide]}`,
    );

    const v3 = Number(text(await sut.request(command(Op.WRITE, new Uint8Array(0)), { timeoutMs: 30_000 })));
    assert.equal(sut.readData(two), 0, 'an empty state has length 0');
    assert.equal(sut.dataVersion, v3);
    assert.equal(sut.readData().length, 0);
  });

  test('waitData resolves on a new version and times out with SHM_ERR_TIMEOUT otherwise', async () => {
    const name = uniqueName('wait');
    await startDaemon(name, { mode: 'serve', initial: 'first' });
    const sut = connect(name);
    const writer = connect(name);
    assert.equal(text(sut.readData()), 'first');
    const v1 = sut.dataVersion;
    assert.equal(v1, 1);

    await assert.rejects(sut.waitData({ timeoutMs: 200 }), hasCode(ErrorCode.TIMEOUT));

    const waiting = sut.waitData({ timeoutMs: 30_000 });
    const written = Number(text(await writer.request(command(Op.WRITE, 'second'), { timeoutMs: 30_000 })));
    assert.equal(await waiting, written);
    assert.ok(written > v1);
    assert.equal(text(sut.readData()), 'second');

    assert.equal(await sut.waitData({ sinceVersion: v1, timeoutMs: 30_000 }), written, 'already newer: at once');
  });
});

describe('requests across processes', () => {
  test('four client processes x 10,000 concurrent requests each get exactly their own replies', async () => {
    const name = uniqueName('echo');
    const seed = testSeed();
    await startDaemon(name, { mode: 'serve' });
    const clients = await Promise.all(
      [0, 1, 2, 3].map((i) =>
        startClient(name, {
          mode: 'echo',
          count: 10_000,
          chunk: 100,
          syncEvery: 97,
          seed: seed + i,
          timeoutMs: 120_000,
        }),
      ),
    );
    const reports = await Promise.all(clients.map((c) => c.waitFor(has('ok'), 300_000)));
    for (const [i, r] of reports.entries()) {
      const at = `client ${i} (seed ${seed + i}): ${JSON.stringify(r)}`;
      assert.equal(r.bad, 0, at);
      assert.deepEqual(r.errors, {}, at);
      assert.equal(r.ok, 10_000, at);
      assert.equal(r.pendingAfter, 0, at);
    }
    const probe = connect(name);
    const s = (await stats(probe)).stats;
    assert.equal(s.commands, 40_001, 'every request was served once (plus this STATS)');
    assert.equal(s.handlerErrors, 0);
    assert.equal(s.badFrames, 0);
    assert.equal(s.droppedReplies, 0);
  });

  test('more requests in flight than the command ring holds wait for room and still get their own replies', async () => {
    const name = uniqueName('overflow');
    const seed = testSeed();
    const sut = await startDaemon(name, { mode: 'serve', create: { cmdSlots: 8, cmdMaxBytes: 256 } });
    const clients = [0, 1].map((i) => {
      const child = startFixture('daemon-client', [
        name,
        JSON.stringify({ mode: 'echo', count: 2000, chunk: 200, syncEvery: 0, seed: seed + i, timeoutMs: 30_000 }),
      ]);
      children.push(child);
      return child;
    });
    const reports = await Promise.all(clients.map((c) => c.waitFor((m) => 'ok' in m || 'connectError' in m, 300_000)));
    assert.equal(
      sut.messages.find(has('serveDone')),
      undefined,
      `the daemon's serve loop survived its clients (seed ${seed}): ${JSON.stringify(sut.messages.find(has('serveDone')))}`,
    );
    for (const [i, r] of reports.entries()) {
      const at = `client ${i} (seed ${seed + i}): ${JSON.stringify(r)}`;
      assert.equal(r.bad, 0, at);
      assert.deepEqual(r.errors, {}, at);
      assert.equal(r.ok, 2000, at);
    }
  });

  test('a request that times out rejects with SHM_ERR_TIMEOUT and its late reply is discarded', async () => {
    const name = uniqueName('timeout');
    await startDaemon(name, { mode: 'serve' });
    const sut = connect(name);

    await assert.rejects(
      sut.request(commandU32(Op.DELAY, 1500, 'stale'), { timeoutMs: 200 }),
      hasCode(ErrorCode.TIMEOUT),
    );
    assert.equal(sut.pendingRequests, 0);
    const fresh = command(Op.ECHO, 'fresh');
    assert.deepEqual(
      await sut.request(fresh, { timeoutMs: 30_000 }),
      echoOf(sut, fresh),
      'the next request gets its own reply, not the stale one',
    );

    assert.throws(
      () => sut.requestSync(commandU32(Op.DELAY, 1000, 'stale-sync'), { timeoutMs: 200 }),
      hasCode(ErrorCode.TIMEOUT),
    );
    const freshSync = command(Op.ECHO, 'fresh-sync');
    assert.deepEqual(sut.requestSync(freshSync, { timeoutMs: 30_000 }), echoOf(sut, freshSync));
    const last = command(Op.ECHO, 'last');
    assert.deepEqual(await sut.request(last, { timeoutMs: 30_000 }), echoOf(sut, last));
  });

  test('a handler that throws rejects the request with SHM_ERR_REMOTE and the daemon keeps serving', async () => {
    const name = uniqueName('remote');
    await startDaemon(name, { mode: 'serve' });
    const sut = connect(name);

    await assert.rejects(sut.request(command(Op.THROW, 'boom-17'), { timeoutMs: 30_000 }), (err: unknown) => {
      assert.ok(hasCode(ErrorCode.REMOTE)(err), String(err));
      assert.match((err as Error).message, /boom-17/);
      return true;
    });
    // An async handler that rejects (unknown op) goes the same way.
    await assert.rejects(sut.request(command(99), { timeoutMs: 30_000 }), (err: unknown) => {
      assert.ok(hasCode(ErrorCode.REMOTE)(err), String(err));
      assert.match((err as Error).message, /unknown op 99/);
      return true;
    });
    assert.throws(
      () => sut.requestSync(command(Op.THROW, 'sync-boom'), { timeoutMs: 30_000 }),
      (err: unknown) => hasCode(ErrorCode.REMOTE)(err) && /sync-boom/.test((err as Error).message),
    );
    const ping = command(Op.ECHO, 'still there');
    assert.deepEqual(await sut.request(ping, { timeoutMs: 30_000 }), echoOf(sut, ping));
    assert.equal((await stats(sut)).stats.handlerErrors, 3);
  });

  test('a command larger than cmdMaxBytes is refused with SHM_ERR_TOO_LARGE on every path', async () => {
    const name = uniqueName('too-large');
    await startDaemon(name, { mode: 'serve', create: { cmdMaxBytes: 64 } });
    const sut = connect(name);
    const big = new Uint8Array(65).fill(Op.ECHO);
    await assert.rejects(sut.request(big, { timeoutMs: 30_000 }), hasCode(ErrorCode.TOO_LARGE));
    assert.throws(() => sut.send(big), hasCode(ErrorCode.TOO_LARGE));
    assert.throws(() => sut.requestSync(big, { timeoutMs: 30_000 }), hasCode(ErrorCode.TOO_LARGE));
    assert.equal(sut.pendingRequests, 0);
    const largest = new Uint8Array(64).fill(Op.ECHO);
    assert.deepEqual(await sut.request(largest, { timeoutMs: 30_000 }), echoOf(sut, largest));
  });

  test('a reply larger than the response ring rejects with SHM_ERR_REMOTE instead of hanging', async () => {
    const name = uniqueName('big-reply');
    await startDaemon(name, { mode: 'serve', create: { respCapacity: 1024 } });
    const sut = connect(name);
    await assert.rejects(sut.request(commandU32(Op.BIG, 4096), { timeoutMs: 30_000 }), (err: unknown) => {
      assert.ok(hasCode(ErrorCode.REMOTE)(err), String(err));
      assert.match((err as Error).message, /larger than the response ring/);
      return true;
    });
    assert.throws(() => sut.requestSync(commandU32(Op.BIG, 2048), { timeoutMs: 30_000 }), hasCode(ErrorCode.REMOTE));
    const small = await sut.request(commandU32(Op.BIG, 100), { timeoutMs: 30_000 });
    assert.equal(small.length, 100);
    assert.ok(small.every((b) => b === 0x5a));
    const ping = command(Op.ECHO, 'after');
    assert.deepEqual(await sut.request(ping, { timeoutMs: 30_000 }), echoOf(sut, ping));
  });
});

describe('command queues across processes', () => {
  test('commands queued before serve() arrive exactly once and in FIFO order per client', async () => {
    const name = uniqueName('fifo');
    const sut = await startDaemon(name, { mode: 'hold', create: { cmdSlots: 8, cmdMaxBytes: 64 } });
    const tags = ['A', 'B', 'C'];
    const senders = await Promise.all(tags.map((tag) => startClient(name, { mode: 'fifo', total: 300, tag })));
    const ids = senders.map((s) => s.messages[0].clientId as number);
    const fulls = await Promise.all(senders.map((s) => s.waitFor(has('full'), 60_000)));
    for (const f of fulls)
      assert.ok((f.full as number) > 0, `queued some before the ring was full: ${JSON.stringify(f)}`);
    assert.equal(sut.messages.filter(has('rec')).length, 0, 'nothing served before serve()');

    sut.kill('SIGUSR1');
    await Promise.all(senders.map((s) => s.waitFor((m) => m.sent === 300, 120_000)));
    const records = await waitForCount(sut, has('rec'), 900, 120_000);
    assert.equal(records.length, 900, 'no command served twice');
    for (const [i, tag] of tags.entries()) {
      const mine = records.filter((r) => (r.rec as string).startsWith(`${tag}:`));
      assert.deepEqual(
        mine.map((r) => Number((r.rec as string).slice(2))),
        Array.from({ length: 300 }, (_, k) => k),
        `client ${tag}: every command once, in order`,
      );
      assert.ok(
        mine.every((r) => r.clientId === ids[i]),
        `client ${tag}'s commands carry its id ${ids[i]}`,
      );
    }
    const perClient = tags.map((tag) => records.findIndex((r) => (r.rec as string).startsWith(`${tag}:`)));
    assert.ok(
      perClient.every((first) => first < 300),
      `the clients were served interleaved, not one after another: first indices ${perClient}`,
    );
  });

  test('a client can queue cmdSlots commands of cmdMaxBytes at the default priority', async () => {
    const name = uniqueName('slots');
    await startDaemon(name, { mode: 'hold', create: { cmdSlots: 8, cmdMaxBytes: 64 } });
    const sut = connect(name);
    let queued = 0;
    while (queued < 1000 && sut.send(new Uint8Array(64).fill(Op.RECORD))) queued++;
    assert.ok(queued >= 8, `cmdSlots=8 but send() returned false after ${queued} commands of cmdMaxBytes`);
  });

  test('queued commands are served critical first, then high, then low, FIFO within a class', async () => {
    const name = uniqueName('priority');
    const sut = await startDaemon(name, { mode: 'hold' });
    const plans = ['lhclhcllhhccchlhlcl', 'hlcchlllcchhhlcclhl'];
    const tags = ['P', 'Q'];
    const senders = await Promise.all(plans.map((plan, i) => startClient(name, { mode: 'queue', plan, tag: tags[i] })));
    for (const s of senders)
      assert.deepEqual(await s.waitFor((m) => 'queued' in m || 'refused' in m, 30_000), {
        queued: 19,
      });

    sut.kill('SIGUSR1');
    const records = (await waitForCount(sut, has('rec'), 38, 60_000)).map((r) => (r.rec as string).split(':'));
    const rank: Record<string, number> = { c: 0, h: 1, l: 2 };
    const classes = records.map(([, p]) => p).join('');
    assert.match(classes, /^c+h+l+$/, `critical, then high, then low: ${classes}`);
    for (const tag of tags)
      for (const p of ['c', 'h', 'l']) {
        const ks = records.filter(([t, q]) => t === tag && q === p).map(([, , k]) => Number(k));
        assert.deepEqual(
          ks,
          ks.map((_, i) => i),
          `client ${tag}, class ${p}: FIFO`,
        );
      }
    assert.equal(records.length, 38);
    assert.ok(records.every(([, p]) => rank[p] !== undefined));
  });
});

describe('clients coming and going', () => {
  test('maxClients is enforced; a SIGKILLed client slot is reclaimed by the serving daemon; ids are never reused', async () => {
    const name = uniqueName('max');
    const sut = await startDaemon(name, { mode: 'serve', create: { maxClients: 2, livenessCheckMs: 50 }, watch: true });
    const seen: number[] = [];
    let holders = await Promise.all([0, 1].map(() => startClient(name, { mode: 'hold' })));
    for (const h of holders) seen.push(h.messages[0].clientId as number);

    for (let round = 0; round < 3; round++) {
      assert.throws(
        () => Client.connect(name, { connectTimeoutMs: 200 }),
        (err: unknown) => hasCode(ErrorCode.REFUSED)(err) && (err as ShmError).details.reason === 'max-clients',
        `round ${round}: a third client is refused`,
      );
      const victim = holders[round % 2];
      const victimId = victim.messages[0].clientId as number;
      victim.kill('SIGKILL');
      await victim.exited(30_000);
      // No connect attempt asks for it: the serving daemon notices the death on its own.
      await sut.waitFor((m) => {
        const w = m.watch as { clients: number[]; reclaimed: number } | undefined;
        return w !== undefined && w.reclaimed === round + 1 && !w.clients.includes(victimId);
      }, 30_000);
      const fresh = await startClient(name, { mode: 'hold' });
      const id = fresh.messages[0].clientId as number;
      assert.ok(
        seen.every((old) => id > old),
        `round ${round}: new id ${id} is above every earlier id ${seen}`,
      );
      assert.equal(fresh.messages[0].slot, victim.messages[0].slot, 'it took the freed slot');
      seen.push(id);
      holders = round % 2 === 0 ? [fresh, holders[1]] : [holders[0], fresh];
    }
    assert.equal(existsSync(segmentFile(name)), true, 'clients dying never unlink the segment');
  });

  test('a connect that finds only dead clients holding the slots asks the daemon to reclaim one', async () => {
    const name = uniqueName('reclaim-on-connect');
    // A liveness period far longer than the test: only the connect's request can trigger the sweep.
    await startDaemon(name, { mode: 'serve', create: { maxClients: 2, livenessCheckMs: 600_000 } });
    const holders = await Promise.all([0, 1].map(() => startClient(name, { mode: 'hold' })));
    const ids = holders.map((h) => h.messages[0].clientId as number);
    holders[1].kill('SIGKILL');
    await holders[1].exited(30_000);

    const sut = connect(name, { connectTimeoutMs: 20_000 });
    assert.ok(
      ids.every((old) => sut.clientId > old),
      `id ${sut.clientId} above ${ids}`,
    );
    assert.equal(sut.slot, holders[1].messages[0].slot);
    const ping = command(Op.ECHO, 'hello');
    assert.deepEqual(await sut.request(ping, { timeoutMs: 30_000 }), echoOf(sut, ping));
    assert.throws(() => Client.connect(name, { connectTimeoutMs: 200 }), hasCode(ErrorCode.REFUSED));
  });

  test('commands a client committed before it was SIGKILLed are still served, then its slot is freed', async () => {
    const name = uniqueName('dead-commands');
    const sut = await startDaemon(name, { mode: 'hold', create: { maxClients: 1, livenessCheckMs: 50 }, watch: true });
    const sender = await startClient(name, { mode: 'queue', plan: 'hhhhhlllllccccc', tag: 'D' });
    await sender.waitFor(has('queued'), 30_000);
    sender.kill('SIGKILL');
    await sender.exited(30_000);

    sut.kill('SIGUSR1');
    const records = await waitForCount(sut, has('rec'), 15, 30_000);
    assert.deepEqual(
      records.map((r) => r.rec),
      ['c', 'h', 'l'].flatMap((p) => [0, 1, 2, 3, 4].map((k) => `D:${p}:${k}`)),
    );
    await sut.waitFor((m) => (m.watch as { reclaimed?: number } | undefined)?.reclaimed === 1, 30_000);
    const next = connect(name);
    assert.equal(next.slot, 0);
  });

  test('a client SIGKILLed in the middle of its requests does not disturb the other clients', async () => {
    const name = uniqueName('client-crash');
    const seed = testSeed();
    const sut = await startDaemon(name, { mode: 'serve', create: { livenessCheckMs: 50 }, watch: true });
    const victim = await startClient(name, { mode: 'echo', count: 1_000_000, chunk: 100, seed, timeoutMs: 120_000 });
    const survivor = await startClient(name, { mode: 'echo', count: 5000, chunk: 50, syncEvery: 13, seed: seed + 1 });
    const victimId = victim.messages[0].clientId as number;
    // Kill it once the daemon has served some of its requests (it is mid-stream).
    const probe = connect(name);
    await (async () => {
      const deadline = Date.now() + 60_000;
      for (;;) {
        const mine = (await stats(probe)).clients.find((c) => c.clientId === victimId);
        assert.ok(mine !== undefined, `the daemon lists the victim`);
        if (mine.commands > 1000) return;
        assert.ok(Date.now() < deadline, `the victim's requests were not served: ${JSON.stringify(mine)}`);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    victim.kill('SIGKILL');
    await victim.exited(30_000);

    const report = await survivor.waitFor(has('ok'), 300_000);
    assert.equal(report.bad, 0, `seed ${seed + 1}: ${JSON.stringify(report)}`);
    assert.deepEqual(report.errors, {}, JSON.stringify(report));
    assert.equal(report.ok, 5000);
    await sut.waitFor((m) => {
      const w = m.watch as { clients: number[]; reclaimed: number } | undefined;
      return w !== undefined && w.reclaimed >= 1 && !w.clients.includes(victimId);
    }, 30_000);
    const ping = command(Op.ECHO, 'after the crash');
    assert.deepEqual(await probe.request(ping, { timeoutMs: 30_000 }), echoOf(probe, ping));
    assert.equal(sut.messages.find(has('serveDone')), undefined, 'the serve loop is still running');
  });

  test("a client's exit, by close() or by SIGKILL, never unlinks the segment", async () => {
    const name = uniqueName('client-exit');
    await startDaemon(name, { mode: 'serve', initial: 'kept' });
    const closer = await startClient(name, { mode: 'close' });
    await closer.waitFor(has('closed'), 30_000);
    assert.equal((await closer.exited(30_000)).code, 0);
    assert.equal(existsSync(segmentFile(name)), true, 'after a client closed');

    const victim = await startClient(name, { mode: 'hold' });
    victim.kill('SIGKILL');
    await victim.exited(30_000);
    assert.equal(existsSync(segmentFile(name)), true, 'after a client was killed');

    const sut = connect(name);
    assert.equal(text(sut.readData()), 'kept');
    const ping = command(Op.ECHO, 'alive');
    assert.deepEqual(await sut.request(ping, { timeoutMs: 30_000 }), echoOf(sut, ping));
    sut.close();
    assert.equal(existsSync(segmentFile(name)), true, 'after a client in this process closed');
  });
});

describe('daemon lifecycle', () => {
  test('a second create on a live name is refused and a SIGKILLed daemon is replaced by the next one', async () => {
    const name = uniqueName('replace');
    const first = await startDaemon(name, { mode: 'serve', initial: 'gen1' });
    assert.throws(() => Daemon.create(name), hasCode(ErrorCode.EXISTS));
    const loser = startFixture('daemon-server', [name, JSON.stringify({ mode: 'serve' })]);
    children.push(loser);
    assert.equal(
      (await loser.waitFor((m) => 'createError' in m || 'ready' in m, 30_000)).createError,
      ErrorCode.EXISTS,
    );

    const old = connect(name, { livenessCheckMs: 50 });
    const ping = command(Op.ECHO, 'gen1?');
    assert.deepEqual(
      await old.request(ping, { timeoutMs: 30_000 }),
      echoOf(old, ping),
      'the first daemon still serves',
    );
    assert.equal(text(old.readData()), 'gen1');

    first.kill('SIGKILL');
    await first.exited(30_000);
    assert.equal(existsSync(segmentFile(name)), true);
    await startDaemon(name, { mode: 'serve', initial: 'gen2' });

    assert.equal(old.daemonAlive(), false, 'the old client sees its daemon dead');
    await assert.rejects(old.request(ping, { timeoutMs: 30_000 }), hasCode(ErrorCode.PEER_DEAD));
    assert.equal(text(old.readData()), 'gen1', 'and still reads its last state');

    const sut = connect(name);
    assert.equal(text(sut.readData()), 'gen2');
    assert.deepEqual(await sut.request(ping, { timeoutMs: 30_000 }), echoOf(sut, ping));
    assert.throws(() => Daemon.create(name), hasCode(ErrorCode.EXISTS), 'the new daemon is live too');
  });

  test('a segment whose protocolVersion differs is refused with SHM_ERR_VERSION_MISMATCH', async () => {
    const name = uniqueName('version');
    await startDaemon(name, { mode: 'serve' });
    connect(name).close(); // the untouched segment is accepted

    const fd = openSync(segmentFile(name), 'r+');
    const original = Buffer.alloc(4);
    try {
      assert.equal(readSync(fd, original, 0, 4, PROTOCOL_VERSION_OFFSET), 4);
      const bumped = Buffer.alloc(4);
      bumped.writeUInt32LE(original.readUInt32LE(0) + 1, 0);
      writeSync(fd, bumped, 0, 4, PROTOCOL_VERSION_OFFSET);
      assert.throws(
        () => Client.connect(name),
        (err: unknown) =>
          hasCode(ErrorCode.VERSION_MISMATCH)(err) &&
          (err as ShmError).details.version === original.readUInt32LE(0) + 1,
      );
    } finally {
      writeSync(fd, original, 0, 4, PROTOCOL_VERSION_OFFSET);
      closeSync(fd);
    }
    const sut = connect(name);
    const ping = command(Op.ECHO, 'restored');
    assert.deepEqual(await sut.request(ping, { timeoutMs: 30_000 }), echoOf(sut, ping));
  });

  test('close() rejects pending requests and waits with SHM_ERR_PEER_CLOSED, keeps the last state and unlinks', async () => {
    const name = uniqueName('close');
    const daemon = await startDaemon(name, { mode: 'serve', initial: 'last words' });
    const sut = connect(name);
    const other = await startClient(name, { mode: 'hold' });
    assert.equal(text(sut.readData()), 'last words');

    const pending = sut.request(commandU32(Op.DELAY, 2000, 'never'), { timeoutMs: 60_000 });
    const settled = pending.then(
      () => 'resolved',
      (err: unknown) => (err as ShmError).code,
    );
    const waiting = sut.waitData({ timeoutMs: 60_000 }).then(
      () => 'resolved',
      (err: unknown) => (err as ShmError).code,
    );
    await daemon.waitFor(has('delaying'), 30_000);

    daemon.kill('SIGUSR2');
    await daemon.waitFor(has('closed'), 30_000);
    assert.equal(await settled, ErrorCode.PEER_CLOSED);
    assert.equal(await waiting, ErrorCode.PEER_CLOSED);
    assert.equal(sut.pendingRequests, 0);
    assert.equal(text(sut.readData()), 'last words');
    assert.equal(sut.daemonAlive(), false);
    await assert.rejects(sut.request(command(Op.ECHO, 'late'), { timeoutMs: 30_000 }), hasCode(ErrorCode.PEER_CLOSED));
    assert.equal(existsSync(segmentFile(name)), false, 'close() unlinked the segment');
    assert.throws(() => Client.connect(name), hasCode(ErrorCode.NOT_FOUND));

    // The handler that was running when the daemon closed ends without breaking the loop.
    const done = await daemon.waitFor(has('serveDone'), 30_000);
    assert.deepEqual(done, { serveDone: 'ok' });
    assert.equal((await daemon.exited(30_000)).code, 0);
    other.kill('SIGKILL');
  });
});
