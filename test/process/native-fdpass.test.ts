/**
 * The unix-socket helpers of the native addon (unixConnect, sendFds, recvFds,
 * peerCredentials) against their contract in src/native/binding.ts: the fan-out control
 * plane, where a sender's net.Server hands each consumer a ring segment fd and an eventfd
 * with SCM_RIGHTS and checks the consumer's uid with SO_PEERCRED.
 *
 * The consumer is a real child process (test/fixtures/native-fdpass-child.ts) wherever a
 * second process matters: credentials, fds that work in another process, EOF, a crashed
 * listener, a full fd table. Edge cases of one syscall use both ends in this process. Every
 * socket path is unique under os.tmpdir() and removed afterwards, every wait has a
 * deadline, and nothing asserts a duration.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { constants as osConstants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native/binding.js';
import { type Child, startFixture } from '../helpers/children.js';

const sut = native();
const DEADLINE_MS = 20_000;
const SIZE = 4096;
/** Linux's O_CLOEXEC as /proc/<pid>/fdinfo shows it (node:fs has no constant for it). */
const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;

// ---------------------------------------------------------------------------------------
// Helpers

let sockets = 0;
function uniqueSocketPath(): string {
  sockets += 1;
  return join(tmpdir(), `shmbus-fdpass-${process.pid}-${sockets}.sock`);
}

let segments = 0;
function uniqueSegmentPath(): string {
  segments += 1;
  return `/dev/shm/shmbus-test-fdpass-${process.pid}-${segments}`;
}

/** Undone after each test, last first: servers, sockets, children, fds, files. */
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  const failures: unknown[] = [];
  for (let cleanup = cleanups.pop(); cleanup !== undefined; cleanup = cleanups.pop()) {
    try {
      await cleanup();
    } catch (err) {
      failures.push(err); // the rest still runs: one failed cleanup must not leak into the next test
    }
  }
  if (failures.length > 0) throw failures[0];
});

function closeLater(fd: number): number {
  cleanups.push(() => {
    try {
      sut.closeFd(fd);
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'EBADF') throw err; // the test closed it itself
    }
  });
  return fd;
}

async function deadline<T>(promise: Promise<T>, what: string, ms = DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** The fd under a net.Socket: what a sender built on node:net hands to sendFds. */
function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  assert.ok(typeof fd === 'number' && fd >= 0, 'a connected net.Socket has an fd');
  return fd;
}

interface Listener {
  path: string;
  server: Server;
  /** The accepted sockets, in order. */
  nextConnection(): Promise<Socket>;
}

/** A net.Server on a fresh unix socket path, closed (and the path removed) after the test. */
async function listen(options: { pauseOnConnect?: boolean } = {}): Promise<Listener> {
  const path = uniqueSocketPath();
  const server = createServer({ pauseOnConnect: options.pauseOnConnect ?? false });
  const accepted: Socket[] = [];
  let notify: (() => void) | undefined;
  server.on('connection', (socket) => {
    accepted.push(socket);
    notify?.();
  });
  cleanups.push(async () => {
    for (const socket of accepted) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(path, { force: true });
  });
  await deadline(new Promise<void>((resolve) => server.listen(path, resolve)), 'listening');
  let taken = 0;
  return {
    path,
    server,
    nextConnection: () =>
      deadline(
        new Promise<Socket>((resolve) => {
          const check = (): void => {
            if (accepted.length > taken) {
              notify = undefined;
              resolve(accepted[taken++]);
            }
          };
          notify = check;
          check();
        }),
        'connection',
      ),
  };
}

/** Both ends in this process: `client` from unixConnect, `peer` the accepted net.Socket. */
async function connectedPair(options: { pauseOnConnect?: boolean } = {}) {
  const listener = await listen(options);
  const client = closeLater(sut.unixConnect(listener.path));
  const peer = await listener.nextConnection();
  return { client, peer, peerFd: socketFd(peer) };
}

function startChild(scenario: string, path: string): Child {
  const child = startFixture('native-fdpass-child', [scenario, path]);
  cleanups.push(() => child.kill());
  return child;
}

function fdFlags(fd: number): number {
  const match = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return Number.parseInt(match?.[1] ?? 'NaN', 8);
}

function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

function systemError(code: string, syscall: string, path?: string): (err: unknown) => boolean {
  return (err: unknown): boolean => {
    assert.ok(err instanceof Error);
    const fields = err as Error & { code?: unknown; errno?: unknown; syscall?: unknown; path?: unknown };
    assert.equal(fields.code, code);
    assert.equal(fields.errno, -(osConstants.errno as Record<string, number>)[code]);
    assert.equal(fields.syscall, syscall);
    assert.equal(fields.path, path);
    assert.match(err.message, new RegExp(`^${code}: .+, ${syscall}`));
    return true;
  };
}

const invalidType = { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' };
const outOfRange = { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' };
const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text));

// ---------------------------------------------------------------------------------------
// Across processes

test('a net.Server hands a child a /dev/shm file and an eventfd that both work in the child', async () => {
  const listener = await listen();
  const child = startChild('receive', listener.path);
  const connection = listener.nextConnection();

  const ready = await child.waitFor((m) => m.step === 'ready', DEADLINE_MS);
  const socket = await connection;
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  assert.deepEqual(ready.peer, [process.pid, uid, gid], "the child sees the listener's pid and our uid");
  assert.deepEqual(sut.peerCredentials(socketFd(socket)), [child.proc.pid, uid, gid], "we see the child's");
  assert.equal(ready.pid, child.proc.pid);
  assert.deepEqual(ready.early, [-1, []], 'recvFds before anything was sent');
  assert.equal((ready.flags as number) & (O_NONBLOCK | O_CLOEXEC), O_NONBLOCK | O_CLOEXEC);

  const segment = uniqueSegmentPath();
  cleanups.push(() => {
    sut.unlink(segment);
  });
  const fileFd = sut.createFile(segment, SIZE, 0o600);
  const [buffer, handle] = sut.map(fileFd, SIZE, true);
  cleanups.push(() => sut.unmap(handle, buffer));
  const mapped = new Uint8Array(buffer);
  mapped.set(Buffer.from('hello from the parent'), 0);
  const [, dev, ino] = sut.fstat(fileFd);
  const eventFd = closeLater(sut.eventfdCreate(0, false));

  const frame = bytes('frame: ring + wake-up');
  assert.equal(sut.sendFds(socketFd(socket), frame, [fileFd, eventFd]), frame.length);
  sut.closeFd(fileFd); // the child holds its own reference now

  const received = await child.waitFor((m) => m.step === 'frame', DEADLINE_MS);
  assert.deepEqual(received, {
    step: 'frame',
    bytes: frame.length,
    text: 'frame: ring + wake-up',
    fdCount: 2,
    flags: received.flags,
    stat: [SIZE, dev, ino],
    mapped: 'hello from the parent',
    read: 'hello from the parent',
  });
  for (const flags of received.flags as number[]) assert.equal(flags & O_CLOEXEC, O_CLOEXEC, 'MSG_CMSG_CLOEXEC');
  assert.equal(Buffer.from(mapped.subarray(1024, 1044)).toString(), 'hello from the child');

  sut.eventfdWrite(eventFd, 41);
  assert.deepEqual(await child.waitFor((m) => m.step === 'count', DEADLINE_MS), { step: 'count', count: 41 });

  socket.end();
  assert.deepEqual(await child.waitFor((m) => m.step === 'eof', DEADLINE_MS), { step: 'eof', bytes: 0, fds: [] });
  assert.deepEqual(await child.exited(DEADLINE_MS), { code: 0, signal: null });
});

test('recvFds closes every fd and throws EMSGSIZE when the kernel could install only some (MSG_CTRUNC)', async () => {
  const listener = await listen();
  const eventFds = [0, 1, 2].map(() => closeLater(sut.eventfdCreate(0, false)));
  listener.server.on('connection', (socket) => {
    sut.sendFds(socketFd(socket), bytes('three fds'), eventFds);
  });
  // The child fills its fd table up to its limit: 64, not the thousands node raises it to.
  const fixture = fileURLToPath(new URL('../fixtures/native-fdpass-child.js', import.meta.url));
  const child = spawn(
    '/bin/sh',
    ['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, fixture, 'ctrunc', listener.path],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  cleanups.push(() => {
    child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const code = await deadline(new Promise((resolve) => child.on('close', resolve)), 'child exit');
  assert.equal(code, 0, stderr);
  const report = JSON.parse(stdout);
  assert.ok(report.fillers > 0, 'the table was filled');
  assert.equal(report.result, undefined);
  assert.equal(report.error.code, 'EMSGSIZE');
  assert.equal(report.error.errno, -osConstants.errno.EMSGSIZE);
  assert.equal(report.error.syscall, 'recvmsg');
  assert.match(report.error.message, /^EMSGSIZE: control data truncated \(MSG_CTRUNC\).*, recvmsg$/);
  assert.equal(report.after, report.baseline, 'the one fd that was installed was closed');
});

test('unixConnect to a socket file whose listener was killed throws ECONNREFUSED with the path', async () => {
  const path = uniqueSocketPath();
  cleanups.push(() => rmSync(path, { force: true }));
  const child = startChild('listen', path);
  await child.waitFor((m) => m.step === 'listening', DEADLINE_MS);
  child.kill('SIGKILL');
  assert.equal((await child.exited(DEADLINE_MS)).signal, 'SIGKILL');
  assert.throws(() => sut.unixConnect(path), systemError('ECONNREFUSED', 'connect', path));
});

// ---------------------------------------------------------------------------------------
// One process, both ends

test('unixConnect throws ENOENT for a missing or empty path and ECONNREFUSED for a file that is no socket', () => {
  const path = uniqueSocketPath();
  assert.throws(() => sut.unixConnect(path), systemError('ENOENT', 'connect', path));
  assert.throws(() => sut.unixConnect(''), systemError('ENOENT', 'connect', ''));
  const segment = uniqueSegmentPath();
  closeLater(sut.createFile(segment, SIZE, 0o600));
  cleanups.push(() => {
    sut.unlink(segment);
  });
  assert.throws(() => sut.unixConnect(segment), systemError('ECONNREFUSED', 'connect', segment));
});

test('unixConnect takes a path of 107 bytes to the kernel and refuses 108 with ENAMETOOLONG', () => {
  const base = join(tmpdir(), `shmbus-fdpass-${process.pid}-`);
  const longest = base.padEnd(107, 'x');
  assert.equal(Buffer.byteLength(longest), 107);
  assert.throws(() => sut.unixConnect(longest), systemError('ENOENT', 'connect', longest));
  const tooLong = `${longest}x`;
  assert.throws(() => sut.unixConnect(tooLong), systemError('ENAMETOOLONG', 'connect', tooLong));
  assert.throws(() => sut.unixConnect(`/${'x'.repeat(5000)}`), systemError('ENAMETOOLONG', 'connect'));
  assert.throws(() => sut.unixConnect(`${base}\0x`), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' });
});

test('peerCredentials reports this process on both ends of a connection within it', async () => {
  const { client, peerFd } = await connectedPair();
  const self = [process.pid, process.getuid?.(), process.getgid?.()];
  assert.deepEqual(sut.peerCredentials(client), self);
  assert.deepEqual(sut.peerCredentials(peerFd), self);
});

test('recvFds returns -1 with nothing queued, then the frame, then 0 at EOF', async () => {
  const { client, peer, peerFd } = await connectedPair();
  const buffer = new Uint8Array(64);
  assert.deepEqual(sut.recvFds(client, buffer, 4), [-1, []]);
  assert.equal(sut.sendFds(peerFd, bytes('no fds'), []), 6);
  assert.deepEqual(sut.recvFds(client, buffer, 4), [6, []]);
  assert.equal(Buffer.from(buffer.subarray(0, 6)).toString(), 'no fds');
  assert.deepEqual(sut.recvFds(client, buffer, 4), [-1, []]);
  const closed = new Promise((resolve) => peer.on('close', resolve));
  peer.destroy();
  await deadline(closed, 'close of the accepted socket');
  assert.deepEqual(sut.recvFds(client, buffer, 4), [0, []]);
});

test('recvFds writes at the byteOffset of a Uint8Array view and never past its end', async () => {
  const { client, peerFd } = await connectedPair();
  const backing = new Uint8Array(16).fill(0xee);
  const view = backing.subarray(4, 8);
  assert.equal(sut.sendFds(peerFd, bytes('abcdefgh'), []), 8);
  assert.deepEqual(sut.recvFds(client, view, 0), [4, []]);
  assert.deepEqual(sut.recvFds(client, view, 0), [4, []]);
  assert.equal(Buffer.from(view).toString(), 'efgh');
  assert.deepEqual([...backing.subarray(0, 4), ...backing.subarray(8)], new Array(12).fill(0xee));
});

test('fds arrive in the order sent, each with the read that returns its frame, never two frames at once', async () => {
  const { client, peerFd } = await connectedPair();
  const sent = [1, 2, 3].map((initial) => closeLater(sut.eventfdCreate(initial, false)));
  assert.equal(sut.sendFds(peerFd, bytes('first'), [sent[0], sent[1]]), 5);
  assert.equal(sut.sendFds(peerFd, bytes('second'), [sent[2]]), 6);
  const buffer = new Uint8Array(64);
  const [n1, first] = sut.recvFds(client, buffer, 4);
  assert.equal(Buffer.from(buffer.subarray(0, n1)).toString(), 'first');
  const [n2, second] = sut.recvFds(client, buffer, 4);
  assert.equal(Buffer.from(buffer.subarray(0, n2)).toString(), 'second');
  for (const fd of [...first, ...second]) closeLater(fd);
  assert.deepEqual([first.length, second.length], [2, 1]);
  const received = [...first, ...second];
  assert.deepEqual(
    received.map((fd) => sut.eventfdRead(fd)),
    [1, 2, 3],
    'the same eventfds, in order',
  );
  assert.ok(
    received.every((fd) => !sent.includes(fd)),
    'new descriptors, not our numbers',
  );
  for (const fd of received) assert.equal(fdFlags(fd) & O_CLOEXEC, O_CLOEXEC, 'MSG_CMSG_CLOEXEC');
});

test('recvFds closes the fds beyond maxFds instead of leaking them', async () => {
  const { client, peerFd } = await connectedPair();
  const sent = [10, 20, 30].map((initial) => closeLater(sut.eventfdCreate(initial, false)));
  const buffer = new Uint8Array(64);

  assert.equal(sut.sendFds(peerFd, bytes('x'), sent), 1);
  let before = openFdCount();
  const [n, kept] = sut.recvFds(client, buffer, 1);
  assert.equal(openFdCount(), before + 1, 'one fd more: the one returned');
  assert.equal(n, 1);
  assert.equal(kept.length, 1);
  closeLater(kept[0]);
  assert.equal(sut.eventfdRead(kept[0]), 10, 'the first one sent');

  assert.equal(sut.sendFds(peerFd, bytes('y'), sent), 1);
  before = openFdCount();
  assert.deepEqual(sut.recvFds(client, buffer, 0), [1, []]);
  assert.equal(openFdCount(), before, 'maxFds 0: every fd closed');
});

test('sendFds throws EAGAIN once the peer stops reading, and EPIPE once it has closed', async () => {
  const { client, peer } = await connectedPair({ pauseOnConnect: true });
  const chunk = new Uint8Array(64 * 1024);
  let sent = 0;
  let full: unknown;
  for (let i = 0; i < 10_000 && full === undefined; i++) {
    try {
      sent += sut.sendFds(client, chunk, []);
    } catch (err) {
      full = err;
    }
  }
  assert.ok(sent > 0);
  assert.ok(systemError('EAGAIN', 'sendmsg')(full));
  const eventFd = closeLater(sut.eventfdCreate(0, false));
  assert.throws(() => sut.sendFds(client, bytes('z'), [eventFd]), systemError('EAGAIN', 'sendmsg'));

  const closed = new Promise((resolve) => peer.on('close', resolve));
  peer.destroy();
  await deadline(closed, 'close of the accepted socket');
  assert.throws(() => sut.sendFds(client, bytes('z'), []), systemError('EPIPE', 'sendmsg'));
});

test('the calls throw system errors for fds that are closed or not sockets', async () => {
  const { client, peerFd } = await connectedPair();
  const eventFd = closeLater(sut.eventfdCreate(0, false));
  const closedFd = sut.eventfdCreate(0, false);
  sut.closeFd(closedFd);
  const buffer = new Uint8Array(8);
  assert.throws(() => sut.peerCredentials(eventFd), systemError('ENOTSOCK', 'getsockopt'));
  assert.throws(() => sut.sendFds(eventFd, bytes('x'), []), systemError('ENOTSOCK', 'sendmsg'));
  assert.throws(() => sut.recvFds(eventFd, buffer, 1), systemError('ENOTSOCK', 'recvmsg'));
  assert.throws(() => sut.peerCredentials(closedFd), systemError('EBADF', 'getsockopt'));
  assert.throws(() => sut.recvFds(closedFd, buffer, 1), systemError('EBADF', 'recvmsg'));
  assert.throws(() => sut.sendFds(peerFd, bytes('x'), [eventFd, closedFd]), systemError('EBADF', 'sendmsg'));
  assert.deepEqual(sut.recvFds(client, buffer, 1), [-1, []], 'the refused message was not sent');
});

test('arguments of the wrong type throw TypeError and out-of-range numbers RangeError', async () => {
  const { client, peer } = await connectedPair();
  const arrived: Buffer[] = [];
  const ok = new Promise((resolve) => {
    peer.on('data', (chunk: Buffer) => {
      arrived.push(chunk);
      if (Buffer.concat(arrived).includes('ok')) resolve(undefined);
    });
  });
  const data = bytes('x');
  assert.throws(() => sut.unixConnect(42 as never), invalidType);
  assert.throws(() => sut.unixConnect(undefined as never), invalidType);
  assert.throws(() => sut.sendFds('3' as never, data, []), invalidType);
  assert.throws(() => sut.sendFds(-1, data, []), outOfRange);
  assert.throws(() => sut.sendFds(client, 'x' as never, []), invalidType);
  assert.throws(() => sut.sendFds(client, new Uint16Array(1) as never, []), invalidType);
  assert.throws(() => sut.sendFds(client, data.buffer as never, []), invalidType);
  assert.throws(() => sut.sendFds(client, data, 3 as never), invalidType);
  assert.throws(() => sut.sendFds(client, data, [client, '4'] as never), invalidType);
  assert.throws(() => sut.sendFds(client, data, [1.5]), outOfRange);
  assert.throws(() => sut.sendFds(client, data, new Array(17).fill(client)), outOfRange);
  assert.throws(() => sut.sendFds(client, new Uint8Array(0), [client]), outOfRange);
  assert.throws(() => sut.recvFds(Number.NaN, new Uint8Array(1), 1), outOfRange);
  assert.throws(() => sut.recvFds(client, new ArrayBuffer(8) as never, 1), invalidType);
  assert.throws(() => sut.recvFds(client, new Uint8Array(0), 1), outOfRange);
  assert.throws(() => sut.recvFds(client, new Uint8Array(1), -1), outOfRange);
  assert.throws(() => sut.recvFds(client, new Uint8Array(1), 254), outOfRange);
  assert.throws(() => sut.recvFds(client, new Uint8Array(1), undefined as never), invalidType);
  assert.throws(() => sut.peerCredentials(null as never), invalidType);
  // None of the refused calls reached the socket, and it still works.
  assert.equal(sut.sendFds(client, new Uint8Array(0), []), 0);
  assert.equal(sut.sendFds(client, bytes('ok'), []), 2);
  await deadline(ok, "the peer's data");
  assert.equal(Buffer.concat(arrived).toString(), 'ok');
});
