/**
 * The native addon (native/shmbus.c) against its contract in src/native/binding.ts: files,
 * mappings, OFD locks, futexes across threads and processes, waiters that report into the
 * event loop, eventfd + uv_poll and argument errors.
 *
 * Every segment is a unique /dev/shm file removed in a finally block, every wait has a
 * deadline, and no test asserts a maximum duration (a cross-process wake-up on this VM
 * takes 25-55 us, but the machine is noisy).
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { constants as fsConstants, statfsSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import {
  type MappingHandle,
  native,
  type UringHandle,
  WAIT_CANCELLED,
  WAIT_NOT_EQUAL,
  WAIT_TIMED_OUT,
  WAIT_WOKEN,
} from '../../src/native/binding.js';

const sut = native();
const DEADLINE_MS = 20_000;
const SIZE = 4096;

// ---------------------------------------------------------------------------------------
// Helpers

let segments = 0;
function uniquePath(): string {
  segments += 1;
  return `/dev/shm/shmbus-test-native-${process.pid}-${segments}`;
}

function fixture(name: string): string {
  return fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url));
}

interface Segment {
  path: string;
  fd: number;
  buffer: ArrayBuffer;
  handle: MappingHandle;
  i32: Int32Array;
}

async function withSegment(fn: (segment: Segment) => Promise<void> | void, size = SIZE): Promise<void> {
  const path = uniquePath();
  const fd = sut.createFile(path, size, 0o600);
  try {
    const [buffer, handle] = sut.map(fd, size, true);
    try {
      await fn({ path, fd, buffer, handle, i32: new Int32Array(buffer) });
    } finally {
      sut.unmap(handle, buffer);
    }
  } finally {
    sut.closeFd(fd);
    sut.unlink(path);
  }
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

/** Collects values pushed by callbacks; next() resolves with the next one, buffered if it came early. */
class Inbox<T> {
  readonly items: T[] = [];
  #taken = 0;
  #notify: (() => void) | undefined;

  readonly push = (item: T): void => {
    this.items.push(item);
    this.#notify?.();
  };

  next(what: string): Promise<T> {
    return deadline(
      new Promise<T>((resolve) => {
        const check = (): void => {
          if (this.items.length > this.#taken) {
            this.#notify = undefined;
            resolve(this.items[this.#taken++]);
          }
        };
        this.#notify = check;
        check();
      }),
      what,
    );
  }
}

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a compiled fixture in a child process; SIGKILLed after the deadline. */
function runChild(
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  nodeArgs: string[] = [],
): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, fixture(script), ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), DEADLINE_MS);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function assertExitedCleanly(result: ChildResult): void {
  assert.equal(result.signal, null, `killed by ${result.signal}; stderr: ${result.stderr}`);
  assert.equal(result.code, 0, `stderr: ${result.stderr}`);
}

function systemError(code: string, syscall: string, path?: string): (err: unknown) => boolean {
  return (err: unknown): boolean => {
    assert.ok(err instanceof Error);
    const fields = err as Error & { code?: unknown; errno?: unknown; syscall?: unknown; path?: unknown };
    assert.equal(fields.code, code);
    assert.equal(fields.errno, -(osConstants.errno as Record<string, number>)[code]);
    assert.equal(fields.syscall, syscall);
    assert.equal(fields.path, path);
    assert.match(err.message, new RegExp(`^${code}: .+, ${syscall}${path === undefined ? '$' : ` '${path}'$`}`));
    return true;
  };
}

/** binding.ts types buffers as ArrayBuffer; the addon also takes a SharedArrayBuffer. */
function sharedBuffer(byteLength: number): ArrayBuffer {
  return new SharedArrayBuffer(byteLength) as unknown as ArrayBuffer;
}

const outOfRange = { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' };
const invalidType = { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' };

// ---------------------------------------------------------------------------------------
// Files

test('createFile refuses an existing path with an EEXIST system error and leaves the file alone', async () => {
  await withSegment(({ path }) => {
    assert.throws(() => sut.createFile(path, SIZE, 0o600), systemError('EEXIST', 'open', path));
    assert.equal(sut.stat(path)?.[0], SIZE);
  });
});

test('createFile gives the file exactly the requested mode, whatever the umask', () => {
  const previous = process.umask(0o022);
  try {
    for (const [umask, mode] of [
      [0o022, 0o600],
      [0o022, 0o640],
      [0o022, 0o666],
      [0o077, 0o640],
    ]) {
      process.umask(umask);
      const path = uniquePath();
      const fd = sut.createFile(path, SIZE, mode);
      try {
        assert.equal(sut.fstat(fd)[4] & 0o7777, mode, `mode ${mode.toString(8)} under umask ${umask.toString(8)}`);
        assert.equal(sut.stat(path)?.[4], fsConstants.S_IFREG | mode);
      } finally {
        sut.closeFd(fd);
        sut.unlink(path);
      }
    }
  } finally {
    process.umask(previous);
  }
});

test('fstat and stat report the size, device, inode, owner and mode of a regular file', async () => {
  await withSegment(({ path, fd }) => {
    const [size, dev, ino, uid, mode] = sut.fstat(fd);
    assert.equal(size, 3 * SIZE);
    assert.ok(dev > 0 && ino > 0);
    assert.equal(uid, process.getuid?.());
    assert.equal(mode & fsConstants.S_IFMT, fsConstants.S_IFREG);
    assert.deepEqual(sut.stat(path), [size, dev, ino, uid, mode]);
  }, 3 * SIZE);
});

test('stat returns null and unlink returns false for a path that does not exist', () => {
  const path = uniquePath();
  assert.equal(sut.stat(path), null);
  assert.equal(sut.unlink(path), false);
});

test('openFile of a missing path and fstat of a closed fd throw system errors', () => {
  const path = uniquePath();
  assert.throws(() => sut.openFile(path, true), systemError('ENOENT', 'open', path));
  const fd = sut.eventfdCreate(0, false);
  sut.closeFd(fd);
  assert.throws(() => sut.fstat(fd), systemError('EBADF', 'fstat'));
  assert.throws(() => sut.closeFd(fd), systemError('EBADF', 'close'));
});

test('createFile fails with ENOSPC from posix_fallocate and removes the file when the tmpfs is too small', (t) => {
  const { bsize, blocks } = statfsSync('/dev/shm');
  if (blocks === 0) {
    t.skip('/dev/shm has no size limit');
    return;
  }
  // Twice the whole filesystem: tmpfs refuses it up front, without allocating anything.
  const size = 2 * bsize * blocks;
  const path = uniquePath();
  try {
    assert.throws(() => sut.createFile(path, size, 0o600), systemError('ENOSPC', 'posix_fallocate', path));
    assert.equal(sut.stat(path), null);
  } finally {
    sut.unlink(path);
  }
});

// ---------------------------------------------------------------------------------------
// Mappings

test('map returns an ArrayBuffer of the requested size whose writes show through a second mapping', async () => {
  await withSegment(({ path, buffer }) => {
    assert.ok(buffer instanceof ArrayBuffer);
    assert.equal(buffer.byteLength, 2 * SIZE);
    const fd = sut.openFile(path, true);
    const readFd = sut.openFile(path, false);
    const [other, otherHandle] = sut.map(fd, 2 * SIZE, true);
    const [readOnly, readOnlyHandle] = sut.map(readFd, 2 * SIZE, false);
    try {
      const a = new Uint8Array(buffer);
      const b = new Uint8Array(other);
      assert.ok(a.every((byte) => byte === 0));
      a.set([1, 2, 3], SIZE + 5);
      assert.deepEqual([...b.subarray(SIZE + 5, SIZE + 8)], [1, 2, 3]);
      Atomics.store(new Int32Array(other), 7, -123456);
      assert.equal(Atomics.load(new Int32Array(buffer), 7), -123456);
      assert.equal(new Int32Array(readOnly)[7], -123456);
    } finally {
      sut.unmap(otherHandle, other);
      sut.unmap(readOnlyHandle, readOnly);
      sut.closeFd(fd);
      sut.closeFd(readFd);
    }
  }, 2 * SIZE);
});

test('unmap detaches the buffer so that views read as empty, and a second unmap does nothing', async () => {
  const path = uniquePath();
  const fd = sut.createFile(path, SIZE, 0o600);
  try {
    const [buffer, handle] = sut.map(fd, SIZE, true);
    const view = new Uint8Array(buffer);
    view[0] = 42;
    sut.unmap(handle, buffer);
    assert.equal(buffer.byteLength, 0);
    assert.equal(view.length, 0);
    assert.equal(view[0], undefined);
    sut.unmap(handle, buffer);
    // The bytes stayed in the file.
    const [again, againHandle] = sut.map(fd, SIZE, false);
    assert.equal(new Uint8Array(again)[0], 42);
    sut.unmap(againHandle, again);
  } finally {
    sut.closeFd(fd);
    sut.unlink(path);
  }
});

test('protect makes a page-aligned range read-only and back, refuses an unaligned offset, clips to the mapping and is false once unmapped', () => {
  const page = sut.constants().PAGE_SIZE;
  const path = uniquePath();
  const fd = sut.createFile(path, 3 * page, 0o600);
  try {
    const [buffer, handle] = sut.map(fd, 3 * page, true);
    const view = new Uint8Array(buffer);
    assert.throws(() => sut.protect(handle, page / 2, page, false), RangeError);
    assert.throws(() => sut.protect(handle, -page, page, false), RangeError);
    // Past the end: clipped (nothing beyond the mapping is touched); beyond it: nothing to do.
    assert.equal(sut.protect(handle, page, 100 * page, false), true);
    assert.equal(sut.protect(handle, 8 * page, page, false), true);
    // The first page stays writable; the rest reads (a write there would be SIGSEGV: the
    // read-only mapping tests check that in child processes).
    view[0] = 7;
    assert.equal(view[page], 0);
    assert.equal(sut.protect(handle, page, 2 * page, true), true);
    view[page] = 9;
    view[2 * page] = 10;
    assert.deepEqual([view[0], view[page], view[2 * page]], [7, 9, 10]);
    sut.unmap(handle, buffer);
    assert.equal(sut.protect(handle, 0, page, false), false);
  } finally {
    sut.closeFd(fd);
    sut.unlink(path);
  }
});

test('unmap refuses a buffer that is not the mapping of the handle, and a handle of another kind', async () => {
  await withSegment(({ buffer, handle, i32 }) => {
    assert.throws(() => sut.unmap(handle, new ArrayBuffer(SIZE)), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' });
    const waiter = sut.waiterCreate(buffer, 0, () => {});
    try {
      assert.throws(() => sut.unmap(waiter as unknown as MappingHandle, buffer), invalidType);
      assert.throws(() => sut.unmap({} as MappingHandle, buffer), invalidType);
    } finally {
      sut.waiterClose(waiter);
    }
    // Still mapped.
    i32[0] = 5;
    assert.equal(i32[0], 5);
  });
});

// ---------------------------------------------------------------------------------------
// OFD locks

test('an OFD lock taken through one fd is seen from a second fd of the same file until it is released', async () => {
  await withSegment(({ path, fd }) => {
    const other = sut.openFile(path, true);
    try {
      assert.equal(sut.lockTry(fd, 0), true);
      assert.equal(sut.lockTry(fd, 0), true, 'the holder may take it again');
      assert.equal(sut.lockTry(other, 0), false);
      assert.equal(sut.lockHeld(other, 0), true);
      assert.equal(sut.lockHeld(fd, 0), false, 'its own lock does not count');
      sut.lockRelease(fd, 0);
      assert.equal(sut.lockHeld(other, 0), false);
      assert.equal(sut.lockTry(other, 0), true);
      assert.equal(sut.lockHeld(fd, 0), true);
      sut.lockRelease(other, 0);
    } finally {
      sut.closeFd(other);
    }
  });
});

test('closing the fd that holds an OFD lock releases it', async () => {
  await withSegment(({ path, fd }) => {
    const holder = sut.openFile(path, true);
    assert.equal(sut.lockTry(holder, 8), true);
    assert.equal(sut.lockHeld(fd, 8), true);
    sut.closeFd(holder);
    assert.equal(sut.lockHeld(fd, 8), false);
  });
});

test('OFD locks on different bytes do not conflict', async () => {
  await withSegment(({ path, fd }) => {
    const other = sut.openFile(path, true);
    try {
      assert.equal(sut.lockTry(fd, 0), true);
      assert.equal(sut.lockTry(other, 1), true);
      assert.equal(sut.lockHeld(other, 0), true);
      assert.equal(sut.lockHeld(fd, 1), true);
      assert.equal(sut.lockHeld(other, 2), false);
    } finally {
      sut.closeFd(other);
    }
  });
});

// ---------------------------------------------------------------------------------------
// Futex

test('futexWait returns WAIT_NOT_EQUAL at once when the word differs from expected', async () => {
  await withSegment(({ buffer, i32 }) => {
    Atomics.store(i32, 1, 7);
    assert.equal(sut.futexWait(buffer, 4, 0, DEADLINE_MS), WAIT_NOT_EQUAL);
    assert.equal(sut.futexWait(buffer, 4, 8, -1), WAIT_NOT_EQUAL);
  });
});

test('futexWait returns WAIT_TIMED_OUT after a short timeout, on a mapping and on a SharedArrayBuffer', async () => {
  await withSegment(({ buffer, i32 }) => {
    const started = performance.now();
    assert.equal(sut.futexWait(buffer, 0, 0, 30), WAIT_TIMED_OUT);
    assert.ok(performance.now() - started >= 25, 'waited about the timeout');
    // -1 and 0xffffffff are the same 32 bits.
    Atomics.store(i32, 2, -1);
    assert.equal(sut.futexWait(buffer, 8, -1, 1), WAIT_TIMED_OUT);
    assert.equal(sut.futexWait(buffer, 8, 0xffffffff, 1), WAIT_TIMED_OUT);
  });
  const shared = sharedBuffer(16);
  assert.equal(sut.futexWait(shared, 12, 0, 5), WAIT_TIMED_OUT);
  assert.equal(sut.futexWait(shared, 12, 1, 5), WAIT_NOT_EQUAL);
});

test('futexWake returns 0 when nobody waits on the word', async () => {
  await withSegment(({ buffer }) => {
    assert.equal(sut.futexWake(buffer, 0, 1), 0);
    assert.equal(sut.futexWake(buffer, 4, Number.POSITIVE_INFINITY), 0);
  });
});

test('futexWake from the main thread wakes a worker thread parked in futexWait on its own mapping', async () => {
  await withSegment(async ({ path, buffer }) => {
    const worker = new Worker(fixture('native-futex-worker.js'), { workerData: { path, size: SIZE } });
    const inbox = new Inbox<unknown>();
    worker.on('message', inbox.push);
    const exited = new Promise<number>((resolve) => worker.on('exit', resolve));
    let woken = 0;
    let waking: NodeJS.Timeout | undefined;
    try {
      assert.equal(await inbox.next('ready from the worker'), 'ready');
      // A wake sent before the worker is parked is lost: repeat until it reports.
      waking = setInterval(() => {
        woken += sut.futexWake(buffer, 0, 1);
      }, 2);
      assert.equal(await inbox.next('result from the worker'), WAIT_WOKEN);
      assert.ok(woken >= 1);
      assert.equal(await deadline(exited, 'worker exit'), 0);
    } finally {
      clearInterval(waking);
      await worker.terminate();
    }
  });
});

// ---------------------------------------------------------------------------------------
// Waiters

test('a waiter delivers WAIT_WOKEN into the event loop after a child process wakes the word', async () => {
  await withSegment(async ({ path, buffer }) => {
    const results = new Inbox<number>();
    const waiter = sut.waiterCreate(buffer, 0, results.push);
    try {
      sut.waiterArm(waiter, 0, DEADLINE_MS);
      const child = runChild('native-wake-child.js', [path, String(SIZE)]);
      assert.equal(await results.next('waiter callback'), WAIT_WOKEN);
      const result = await child;
      assertExitedCleanly(result);
      assert.equal(result.stdout, 'woken 1\n');
    } finally {
      sut.waiterClose(waiter);
    }
  });
});

test('a waiter delivers WAIT_TIMED_OUT after its timeout while setTimeout timers keep firing', async () => {
  await withSegment(async ({ buffer }) => {
    const results = new Inbox<number>();
    const waiter = sut.waiterCreate(buffer, 0, results.push);
    let ticks = 0;
    const ticker = setInterval(() => {
      ticks += 1;
    }, 10);
    try {
      sut.waiterArm(waiter, 0, 300);
      assert.equal(await results.next('waiter callback'), WAIT_TIMED_OUT);
      assert.ok(ticks >= 5, `the loop ran timers while the waiter was armed (ticks=${ticks})`);
    } finally {
      clearInterval(ticker);
      sut.waiterClose(waiter);
    }
  });
});

test('a waiter delivers WAIT_CANCELLED after waiterCancel, and cancelling an idle waiter does nothing', async () => {
  await withSegment(async ({ buffer }) => {
    const results = new Inbox<number>();
    const waiter = sut.waiterCreate(buffer, 0, results.push);
    try {
      sut.waiterArm(waiter, 0, -1);
      await sleep(20);
      sut.waiterCancel(waiter);
      sut.waiterCancel(waiter);
      assert.equal(await results.next('waiter callback'), WAIT_CANCELLED);
      sut.waiterCancel(waiter);
      await sleep(50);
      assert.deepEqual(results.items, [WAIT_CANCELLED]);
      // Cancelled before the thread took the request, then re-armed.
      sut.waiterArm(waiter, 0, -1);
      sut.waiterCancel(waiter);
      assert.equal(await results.next('second callback'), WAIT_CANCELLED);
      sut.waiterArm(waiter, 0, 1);
      assert.equal(await results.next('third callback'), WAIT_TIMED_OUT);
    } finally {
      sut.waiterClose(waiter);
    }
  });
});

test('a waiter delivers WAIT_NOT_EQUAL when the word already differs', async () => {
  await withSegment(async ({ buffer, i32 }) => {
    const results = new Inbox<number>();
    const waiter = sut.waiterCreate(buffer, 12, results.push);
    try {
      Atomics.store(i32, 3, 1);
      sut.waiterArm(waiter, 0, DEADLINE_MS);
      assert.equal(await results.next('waiter callback'), WAIT_NOT_EQUAL);
    } finally {
      sut.waiterClose(waiter);
    }
  });
});

test('waiterArm throws EBUSY while a wait is pending', async () => {
  await withSegment(async ({ buffer }) => {
    const results = new Inbox<number>();
    const waiter = sut.waiterCreate(buffer, 0, results.push);
    try {
      sut.waiterArm(waiter, 0, -1);
      assert.throws(() => sut.waiterArm(waiter, 0, -1), systemError('EBUSY', 'waiterArm'));
      sut.waiterCancel(waiter);
      assert.equal(await results.next('waiter callback'), WAIT_CANCELLED);
    } finally {
      sut.waiterClose(waiter);
    }
  });
});

test('a waiter can be re-armed from its own callback', async () => {
  await withSegment(async ({ buffer }) => {
    const results = new Inbox<number>();
    const waiter = sut.waiterCreate(buffer, 0, (result) => {
      results.push(result);
      if (results.items.length < 3) sut.waiterArm(waiter, 0, 5);
    });
    try {
      sut.waiterArm(waiter, 0, 5);
      for (let i = 0; i < 3; i++) assert.equal(await results.next(`callback ${i}`), WAIT_TIMED_OUT);
    } finally {
      sut.waiterClose(waiter);
    }
  });
});

test('waiterClose stops a parked waiter without calling back, and is idempotent', async () => {
  await withSegment(async ({ buffer }) => {
    const results = new Inbox<number>();
    const waiter = sut.waiterCreate(buffer, 0, results.push);
    sut.waiterArm(waiter, 0, -1);
    await sleep(10);
    sut.waiterClose(waiter);
    sut.waiterClose(waiter);
    sut.waiterCancel(waiter);
    assert.throws(() => sut.waiterArm(waiter, 0, -1), { code: 'ERR_INVALID_STATE' });
    await sleep(50);
    assert.deepEqual(results.items, []);
  });
});

test('waiterArm throws RangeError once the mapping has been unmapped', async () => {
  const path = uniquePath();
  const fd = sut.createFile(path, SIZE, 0o600);
  try {
    const [buffer, handle] = sut.map(fd, SIZE, true);
    const waiter = sut.waiterCreate(buffer, 0, () => {});
    sut.unmap(handle, buffer);
    assert.throws(() => sut.waiterArm(waiter, 0, -1), outOfRange);
    sut.waiterClose(waiter);
  } finally {
    sut.closeFd(fd);
    sut.unlink(path);
  }
});

test('a waiter on a SharedArrayBuffer is woken by futexWake from its own thread', async () => {
  const shared = sharedBuffer(8);
  const results = new Inbox<number>();
  const waiter = sut.waiterCreate(shared, 4, results.push);
  const waking = setInterval(() => sut.futexWake(shared, 4, 1), 2);
  try {
    sut.waiterArm(waiter, 0, DEADLINE_MS);
    assert.equal(await results.next('waiter callback'), WAIT_WOKEN);
  } finally {
    clearInterval(waking);
    sut.waiterClose(waiter);
  }
});

test('an idle waiter that was never armed does not keep a process alive', async () => {
  const result = await runChild('native-waiter-child.js', ['idle']);
  assertExitedCleanly(result);
  assert.equal(result.stdout, 'created\n');
});

test('an armed waiter keeps a process alive until its callback has run', async () => {
  const result = await runChild('native-waiter-child.js', ['armed']);
  assertExitedCleanly(result);
  assert.equal(result.stdout, `armed\nresult ${WAIT_TIMED_OUT}\n`);
});

test('a waiter whose handle was dropped still calls back when armed, then is collected with its thread', async () => {
  const result = await runChild('native-waiter-child.js', ['dropped'], {}, ['--expose-gc']);
  assertExitedCleanly(result);
  assert.equal(result.stdout, `threads +2\nresult ${WAIT_TIMED_OUT}\nthreads +0\n`);
});

test('an exception thrown by a waiter callback becomes an uncaughtException', async () => {
  const result = await runChild('native-waiter-child.js', ['throw']);
  assertExitedCleanly(result);
  assert.equal(result.stdout, 'uncaught boom from the callback\n');
});

test('process.exit with a waiter parked forever exits cleanly', async () => {
  const result = await runChild('native-waiter-child.js', ['exit-armed']);
  assertExitedCleanly(result);
  assert.equal(result.stdout, 'exiting\n');
});

test('waiters cancel and close reliably with futex_waitv and with the FUTEX_WAIT fallback', async () => {
  for (const env of [{}, { SHMBUS_FUTEX_WAITV: '0' }]) {
    const result = await runChild('native-waiter-child.js', ['cancel-close'], env);
    assertExitedCleanly(result);
    assert.equal(result.stdout, `results ${WAIT_CANCELLED},${WAIT_WOKEN},${WAIT_CANCELLED}\n`, JSON.stringify(env));
  }
});

test('cancel and close of waiters whose mapping was unmapped under them do not hang, in both modes', async () => {
  for (const env of [{}, { SHMBUS_FUTEX_WAITV: '0' }]) {
    const path = uniquePath();
    try {
      const result = await runChild('native-waiter-child.js', ['unmapped', path], env);
      assertExitedCleanly(result);
      assert.equal(result.stdout, `closed\ncancelled ${WAIT_CANCELLED}\nthreads +0\n`, JSON.stringify(env));
    } finally {
      sut.unlink(path);
    }
  }
});

test('terminating a worker that has a parked waiter, a poll and a mapping does not crash', async () => {
  await withSegment(async ({ path }) => {
    const worker = new Worker(fixture('native-teardown-worker.js'), {
      workerData: { path, size: SIZE, scenario: 'busy' },
    });
    const inbox = new Inbox<unknown>();
    worker.on('message', inbox.push);
    assert.equal(await inbox.next('ready from the worker'), 'ready');
    await deadline(worker.terminate(), 'worker termination');
    assert.deepEqual(inbox.items, ['ready']);
  });
});

test('a worker whose waiter is idle ends on its own', async () => {
  await withSegment(async ({ path }) => {
    const worker = new Worker(fixture('native-teardown-worker.js'), {
      workerData: { path, size: SIZE, scenario: 'idle' },
    });
    const inbox = new Inbox<unknown>();
    worker.on('message', inbox.push);
    const exited = new Promise<number>((resolve) => worker.on('exit', resolve));
    try {
      assert.equal(await deadline(exited, 'worker exit'), 0);
      assert.deepEqual(inbox.items, ['ready']);
    } finally {
      await worker.terminate();
    }
  });
});

// ---------------------------------------------------------------------------------------
// eventfd and uv_poll

test('an eventfd adds up writes, hands its counter to one read, and reads 0 when empty', () => {
  const fd = sut.eventfdCreate(0, false);
  try {
    assert.equal(sut.eventfdRead(fd), 0);
    sut.eventfdWrite(fd, 3);
    sut.eventfdWrite(fd, 4);
    assert.equal(sut.eventfdRead(fd), 7);
    assert.equal(sut.eventfdRead(fd), 0);
  } finally {
    sut.closeFd(fd);
  }
  const semaphore = sut.eventfdCreate(2, true);
  try {
    assert.deepEqual([sut.eventfdRead(semaphore), sut.eventfdRead(semaphore), sut.eventfdRead(semaphore)], [1, 1, 0]);
  } finally {
    sut.closeFd(semaphore);
  }
});

test('pollStart calls back on the loop when the eventfd is written, and pollStop is idempotent', async () => {
  const fd = sut.eventfdCreate(0, false);
  const reads = new Inbox<number>();
  const poll = sut.pollStart(fd, () => reads.push(sut.eventfdRead(fd)));
  try {
    setTimeout(() => sut.eventfdWrite(fd, 5), 10);
    assert.equal(await reads.next('poll callback'), 5);
    sut.eventfdWrite(fd, 1);
    assert.equal(await reads.next('second poll callback'), 1);
  } finally {
    sut.pollStop(poll);
    sut.pollStop(poll);
    sut.closeFd(fd);
  }
  assert.deepEqual(reads.items, [5, 1]);
});

test('a poll can stop itself from its own callback', async () => {
  const fd = sut.eventfdCreate(0, false);
  const calls = new Inbox<number>();
  const poll = sut.pollStart(fd, () => {
    calls.push(sut.eventfdRead(fd));
    sut.pollStop(poll);
  });
  try {
    sut.eventfdWrite(fd, 2);
    assert.equal(await calls.next('poll callback'), 2);
    sut.eventfdWrite(fd, 3);
    await sleep(50);
    assert.deepEqual(calls.items, [2]);
  } finally {
    sut.pollStop(poll);
    sut.closeFd(fd);
  }
});

test('pollStart of a regular file throws the error of uv_poll_init', async () => {
  await withSegment(({ fd }) => {
    assert.throws(() => sut.pollStart(fd, () => {}), systemError('EPERM', 'uv_poll_init'));
  });
});

// ---------------------------------------------------------------------------------------
// Arguments

test('byteOffsets that are unaligned or outside the buffer throw RangeError and never reach the kernel', async () => {
  await withSegment(({ buffer }) => {
    for (const offset of [2, -4, SIZE, SIZE - 2, SIZE + 4, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => sut.futexWait(buffer, offset, 0, 0), outOfRange, `futexWait at ${offset}`);
      assert.throws(() => sut.futexWake(buffer, offset, 1), outOfRange, `futexWake at ${offset}`);
      assert.throws(() => sut.waiterCreate(buffer, offset, () => {}), outOfRange, `waiterCreate at ${offset}`);
    }
    assert.equal(sut.futexWake(buffer, SIZE - 4, 1), 0);
  });
  assert.throws(() => sut.futexWake(new ArrayBuffer(2), 0, 1), outOfRange);
});

test('arguments of the wrong type throw TypeError and out-of-range numbers throw RangeError', async () => {
  await withSegment(({ buffer, fd }) => {
    assert.throws(() => sut.futexWait('buffer' as never, 0, 0, 0), invalidType);
    assert.throws(() => sut.futexWake(new Int32Array(buffer) as never, 0, 1), invalidType);
    assert.throws(() => sut.futexWait(buffer, 0, 0, Number.NaN), outOfRange);
    assert.throws(() => sut.futexWait(buffer, 0, 2 ** 32, 0), outOfRange);
    assert.throws(() => sut.futexWake(buffer, 0, -1), outOfRange);
    assert.throws(() => sut.waiterCreate(buffer, 0, 'callback' as never), invalidType);
    assert.throws(() => sut.waiterArm({} as never, 0, 0), invalidType);
    assert.throws(() => sut.createFile(42 as never, SIZE, 0o600), invalidType);
    assert.throws(() => sut.createFile(`${uniquePath()}\0x`, SIZE, 0o600), { code: 'ERR_INVALID_ARG_VALUE' });
    assert.throws(() => sut.createFile(uniquePath(), -1, 0o600), outOfRange);
    assert.throws(() => sut.createFile(uniquePath(), SIZE, 0o10000), outOfRange);
    assert.throws(() => sut.map(fd, 0, true), outOfRange);
    assert.throws(() => sut.map(fd, SIZE, 'yes' as never), invalidType);
    assert.throws(() => sut.closeFd(-1), outOfRange);
    assert.throws(() => sut.closeFd('3' as never), invalidType);
    assert.throws(() => sut.lockTry(fd, -1), outOfRange);
    assert.throws(() => sut.eventfdWrite(fd, 0.5), outOfRange);
    assert.throws(() => sut.pollStart(fd, undefined as never), invalidType);
  });
});

test('constants() reports the WAIT_* values of binding.ts, plus WAIT_ERROR and the page size', () => {
  const page = Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }).trim());
  assert.deepEqual(sut.constants(), {
    WAIT_WOKEN,
    WAIT_NOT_EQUAL,
    WAIT_TIMED_OUT,
    WAIT_CANCELLED,
    WAIT_ERROR: 4,
    PAGE_SIZE: page,
  });
});

test('noop does nothing and returns undefined', () => {
  assert.equal(sut.noop(), undefined);
});

// ---------------------------------------------------------------------------------------
// io_uring futex waiter (Linux >= 6.7; where the kernel or sandbox lacks it, uringCreate
// throws a system error and shmbus uses the waiter thread: these tests then check that).

function uringAvailable(buffer: ArrayBuffer): boolean {
  try {
    sut.uringClose(sut.uringCreate(buffer, 0)[0]);
    return true;
  } catch (err) {
    assert.equal(typeof (err as { code?: unknown }).code, 'string', 'unavailability is a system error');
    return false;
  }
}

/** A polled io_uring waiter on word 0 whose completions land in `results`; closed afterwards. */
async function withUring(
  buffer: ArrayBuffer,
  fn: (handle: UringHandle, results: Inbox<number>) => Promise<void>,
): Promise<void> {
  const [handle, fd] = sut.uringCreate(buffer, 0);
  const results = new Inbox<number>();
  const poll = sut.pollStart(fd, () => {
    const result = sut.uringReap(handle);
    if (result >= 0) results.push(result);
  });
  try {
    await fn(handle, results);
  } finally {
    sut.pollStop(poll);
    sut.uringClose(handle);
  }
}

test('an io_uring waiter makes its ring fd readable when a child process wakes the word', async (t) => {
  await withSegment(async ({ path, buffer }) => {
    if (!uringAvailable(buffer)) return t.skip('io_uring FUTEX_WAIT is not available here');
    await withUring(buffer, async (handle, results) => {
      sut.uringArm(handle, 0);
      assert.equal(sut.uringReap(handle), -1, 'nothing completed before the wake');
      const child = runChild('native-wake-child.js', [path, String(SIZE)]);
      assert.equal(await results.next('uring completion'), WAIT_WOKEN);
      assertExitedCleanly(await child);
    });
  });
});

test('an io_uring waiter reports WAIT_NOT_EQUAL at once and WAIT_CANCELLED after uringCancel', async (t) => {
  await withSegment(async ({ buffer, i32 }) => {
    if (!uringAvailable(buffer)) return t.skip('io_uring FUTEX_WAIT is not available here');
    let closed: UringHandle | undefined;
    await withUring(buffer, async (handle, results) => {
      closed = handle;
      i32[0] = 7;
      sut.uringArm(handle, 8);
      assert.equal(await results.next('not-equal completion'), WAIT_NOT_EQUAL);
      sut.uringArm(handle, 7);
      await sleep(20);
      assert.equal(results.items.length, 1, 'still waiting');
      sut.uringCancel(handle);
      assert.equal(await results.next('cancel completion'), WAIT_CANCELLED);
    });
    const handle = closed as UringHandle;
    sut.uringClose(handle);
    assert.throws(() => sut.uringArm(handle, 0), { code: 'ERR_INVALID_STATE' });
  });
});
