/**
 * `shmbus demo`, run as the real command (dist/src/cli/main.js) in a child process with a
 * private segment directory (SHMBUS_DIR) and a private TMPDIR (where its sockets go): every
 * consumer receives something and only what its filter allows (each consumer checks every
 * update itself; the demo also counts what the sender sent that never arrived), the
 * side-by-side has figures for both transports, and nothing is left behind.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { ConsumerSummary } from '../../src/cli/demo.js';

const cli = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));
const shmDir = mkdtempSync('/dev/shm/shmbus-demo-test-');
const tmpDir = mkdtempSync(join(tmpdir(), 'shmbus-demo-test-'));
after(() => {
  rmSync(shmDir, { recursive: true, force: true });
  rmSync(tmpDir, { recursive: true, force: true });
});

/** A run of the demo normally takes 5-10 s; past this the child is killed and the test fails. */
const DEADLINE_MS = 90_000;

interface Run {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the demo; `onStdout` sees the output so far after every chunk (with the child). */
function demo(
  args: string[],
  env: Record<string, string> = {},
  onStdout?: (stdout: string, child: ChildProcess) => void,
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, 'demo', ...args], {
      env: { ...process.env, SHMBUS_DIR: shmDir, TMPDIR: tmpDir, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      onStdout?.(stdout, child);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`shmbus demo ${args.join(' ')}: no exit within ${DEADLINE_MS} ms\n${stdout}\n${stderr}`));
    }, DEADLINE_MS);
    child.on('exit', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

/** Nothing of the run is left: no segment in SHMBUS_DIR, no socket (or its directory) in TMPDIR. */
function assertNothingLeft(): void {
  assert.deepEqual(readdirSync(shmDir), [], 'segments left in SHMBUS_DIR');
  assert.deepEqual(readdirSync(tmpDir), [], 'sockets left in TMPDIR');
}

interface Figures {
  delivered: number;
  deliveredPerSecond: number;
  latencyDeliveries: number;
  p50Ns: number;
  p99Ns: number;
  missing: number;
  violations: number;
}

interface Summary {
  ok: boolean;
  sender: { published: number; dispatched: number; evictions: number };
  workload: { transactionEvery: number; slotEvery: number };
  consumers: ConsumerSummary[];
  sideBySide: { consumers: number; shmbus: Figures; unixSockets: Figures; ratio: { throughput: number } } | null;
  problems: string[];
}

test('--json: every consumer receives only what its filter allows, nothing is missing, both transports have figures, nothing is left', async () => {
  const r = await demo(['--seconds', '2', '--json']);
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  const s = JSON.parse(r.stdout) as Summary;
  assert.equal(s.ok, true, s.problems.join('\n'));
  assert.deepEqual(s.problems, []);
  assert.equal(s.consumers.length, 3);
  assert.ok(s.sender.published > 0 && s.sender.dispatched > 0);
  for (const c of s.consumers) {
    const what = `consumer #${c.index} (${c.filter.label})`;
    assert.ok(c.received > 0, `${what} received nothing`);
    assert.equal(c.violations, 0, `${what}: updates outside its filter`);
    assert.equal(c.missing, 0, `${what}: sent but never received`);
    assert.equal(c.received + c.dropped, c.sent, what);
    assert.equal(c.accounts + c.transactions + c.slots, c.received, what);
    // Independent of the consumers' own checks: the live phase's updates are numbered from 1,
    // every slotEvery-th is a slot update (to everyone), every other transactionEvery-th a
    // transaction (opt-in); nothing dropped means every one of them arrived.
    const slots = Math.floor(s.sender.published / s.workload.slotEvery);
    const transactions = Math.floor(s.sender.published / s.workload.transactionEvery) - slots;
    if (c.dropped === 0) assert.equal(c.slots, slots, `${what}: slot updates reach every consumer`);
    if (!c.filter.transactions) assert.equal(c.transactions, 0, `${what} got transactions it did not opt in to`);
    else if (c.dropped === 0) assert.equal(c.transactions, transactions, `${what} opted in to transactions`);
    assert.ok(c.p50Ns > 0 && c.p99Ns >= c.p50Ns, what);
  }
  // Different filters, different streams: the owner subscription gets far more than 8 pubkeys.
  const [pubkeys, owner] = s.consumers;
  assert.ok(owner.accounts > pubkeys.accounts, `${owner.accounts} vs ${pubkeys.accounts}`);
  const b = s.sideBySide;
  assert.ok(b !== null);
  assert.equal(b.consumers, 3);
  for (const [name, f] of [
    ['shmbus', b.shmbus],
    ['unix sockets', b.unixSockets],
  ] as const) {
    assert.ok(f.delivered > 0 && f.deliveredPerSecond > 0, `${name}: no throughput figure`);
    assert.ok(f.latencyDeliveries > 0 && f.p50Ns > 0 && f.p99Ns >= f.p50Ns, `${name}: no latency figure`);
    assert.equal(f.missing, 0, name);
    assert.equal(f.violations, 0, name);
  }
  assert.ok(b.ratio.throughput > 0);
  assertNothingLeft();
});

test('--no-live prints a line per second, the live table, the side-by-side and what next; nothing is left', async () => {
  const r = await demo(['--seconds', '1', '--no-live']);
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  assert.ok(!r.stdout.includes('\u001b['), 'no terminal escapes when not live');
  assert.match(r.stdout, /^\s+[\d.]+ s {2}sender [\d,]+ upd\/s -> [\d,]+ deliveries\/s \| #0 /m);
  assert.match(r.stdout, /^live: [\d.]+ s, [\d,]+ updates published/m);
  for (const label of ['8 AMM pool pubkeys', 'owner Token program', 'owner Pyth \\+ transactions'])
    assert.match(r.stdout, new RegExp(`^  \\d  ${label}\\s+[\\d,]+ `, 'm'));
  assert.match(r.stdout, /^ {2}delivered, max rate\s+[\d,]+ msg\/s\s+[\d,]+ msg\/s\s+[\d.]+x$/m);
  assert.match(r.stdout, /^ {2}latency p50, paced\s+[\d.]+ [nµm]?s\s+[\d.]+ [nµm]?s\s+[\d.]+x$/m);
  assert.match(r.stdout, /^what next:/m);
  assert.doesNotMatch(r.stdout, /PROBLEM/);
  assertNothingLeft();
});

test('a consumer that receives what its filter does not allow fails the demo (exit 1, the violation named)', async () => {
  // Consumer #1 subscribes to the Token program but checks against an empty filter.
  const r = await demo(['--seconds', '0.5', '--consumers', '2', '--no-compare', '--json'], {
    SHMBUS_TEST_DEMO_MISCHECK: '1',
  });
  assert.equal(r.status, 1, `${r.stdout}\n${r.stderr}`);
  const s = JSON.parse(r.stdout) as Summary;
  assert.equal(s.ok, false);
  assert.ok(s.consumers[1].violations > 0);
  assert.equal(s.consumers[0].violations, 0);
  assert.equal(s.sideBySide, null);
  assert.ok(
    s.problems.some((p) => /consumer #1 received \d+ updates its filter does not allow/.test(p)),
    s.problems.join('\n'),
  );
  assertNothingLeft();
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('SIGTERM in the middle of the live phase stops the consumers and removes everything (exit 143)', async () => {
  let consumers: number[] = [];
  let signalled = false;
  const r = await demo(['--seconds', '60', '--no-live', '--no-compare'], {}, (stdout, child) => {
    // The first per-second line: the sender and the consumers are running.
    if (signalled || !/^\s+[\d.]+ s {2}sender /m.test(stdout)) return;
    signalled = true;
    const pid = child.pid as number;
    consumers = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
    child.kill('SIGTERM');
  });
  assert.equal(signalled, true, r.stdout);
  assert.equal(r.status, 143, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stderr, /stopped by SIGTERM/);
  assert.equal(consumers.length, 3, `children: ${consumers.join(' ')}`);
  for (const pid of consumers) assert.equal(alive(pid), false, `consumer process ${pid} is still running`);
  assertNothingLeft();
});

test('bad options exit 2 with a message naming the option and the value, before anything starts', () => {
  const cases: [string[], RegExp][] = [
    [['--consumers', '0'], /--consumers takes an integer in 1\.\.\d+, got "0"/],
    [['--consumers'], /--consumers takes an integer .*got ""/],
    [['--seconds', '-1'], /--seconds takes a number in \(0, 3600\], got "-1"/],
    [['--rate', 'fast'], /--rate takes updates per second .* or max, got "fast"/],
    [['--bogus'], /unknown option "--bogus"/],
  ];
  for (const [args, message] of cases) {
    const r = spawnSync(process.execPath, [cli, 'demo', ...args], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.match(r.stderr, /usage: shmbus demo/);
    assert.equal(r.stdout, '', 'nothing ran');
  }
});
