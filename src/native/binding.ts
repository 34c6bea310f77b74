/**
 * The ONE module that loads the native addon (native/shmbus.c: a prebuilt binary shipped in the
 * npm package, else built by node-gyp on `npm install`; see load()) and declares its typed
 * contract. Nothing else imports the .node binary.
 *
 * The addon is a thin syscall layer: files in /dev/shm, mmap, futex, a futex waiter thread
 * that resolves into the event loop, eventfd + uv_poll, OFD byte-range locks, unix-domain
 * sockets that pass fds (SCM_RIGHTS) and report the peer's credentials (SO_PEERCRED). No
 * ring or protocol logic lives in C.
 *
 * Every function is synchronous and may be called from any thread that loaded the addon
 * (main thread or worker); the addon is context-aware. Errors thrown by the addon look
 * like Node's system errors: `code` ('ENOENT', ...), `errno` (negative, as libuv),
 * `syscall` and, where a path is involved, `path`. The TypeScript layer wraps them in
 * ShmError subclasses and keeps the original as `cause`.
 */
import { closeSync, existsSync, openSync, readdirSync, readSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ErrorCode, ShmSystemError } from '../errors.js';
import { packageRequire, packageRoot } from './package-root.js';

/** Opaque handle of one mapping (an N-API external). */
export interface MappingHandle {
  readonly __mapping: unique symbol;
}

/** Opaque handle of one futex waiter thread (an N-API external). */
export interface WaiterHandle {
  readonly __waiter: unique symbol;
}

/** Opaque handle of one io_uring futex waiter (an N-API external). */
export interface UringHandle {
  readonly __uring: unique symbol;
}

/** Opaque handle of one uv_poll watcher (an N-API external). */
export interface PollHandle {
  readonly __poll: unique symbol;
}

/** Results of futexWait and of a waiter's callback. */
export const WAIT_WOKEN = 0;
/** The word did not hold `expected` when the wait started (EAGAIN). */
export const WAIT_NOT_EQUAL = 1;
export const WAIT_TIMED_OUT = 2;
/** Only for waiters: waiterCancel() ended the wait. */
export const WAIT_CANCELLED = 3;
/** Only for waiters: FUTEX_WAIT itself failed (e.g. EFAULT on an unmapped word). */
export const WAIT_ERROR = 4;

/** A mapping from map(), or a SharedArrayBuffer (the futex calls accept both; SAB allocates a temporary view). */
export type WaitableBuffer = ArrayBuffer | SharedArrayBuffer;

export interface NativeBinding {
  /**
   * open(path, O_CREAT|O_EXCL|O_RDWR|O_CLOEXEC, mode), fchmod(mode) (so umask does not
   * widen or narrow it), ftruncate(size), posix_fallocate(0, size) so that a full tmpfs
   * fails here with ENOSPC instead of SIGBUS later. On any failure after open the file
   * is closed and unlinked before throwing. Returns the fd. Blocks (filesystem).
   */
  createFile(path: string, size: number, mode: number): number;
  /** open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC). Returns the fd. */
  openFile(path: string, writable: boolean): number;
  /** fstat(fd): [size, dev, ino, uid, mode]. */
  fstat(fd: number): [size: number, dev: number, ino: number, uid: number, mode: number];
  /** stat(path): [size, dev, ino, uid, mode], or null when the path does not exist. */
  stat(path: string): [size: number, dev: number, ino: number, uid: number, mode: number] | null;
  /** close(fd). */
  closeFd(fd: number): void;
  /** unlink(path): true if removed, false if it did not exist. */
  unlink(path: string): boolean;

  /**
   * mmap(NULL, size, PROT_READ|(writable?PROT_WRITE:0), MAP_SHARED, fd, 0) returned as an
   * external ArrayBuffer of exactly `size` bytes, plus a handle for unmap(). The caller
   * must have checked (fstat) that the file is at least `size` bytes long. Writing through a
   * read-only mapping kills the process with SIGSEGV.
   */
  map(fd: number, size: number, writable: boolean): [buffer: ArrayBuffer, handle: MappingHandle];
  /**
   * Detach `buffer` (every view of it then reads as length 0) and munmap. Idempotent.
   * If never called, the mapping is unmapped when the ArrayBuffer is garbage collected.
   */
  unmap(handle: MappingHandle, buffer: ArrayBuffer): void;
  /**
   * mprotect [offset, offset + length) of a live mapping (clipped to it) to read-only
   * (`writable` false) or read-write. `offset` must be a multiple of the page size. A write
   * into a read-only range kills the process with SIGSEGV. False if already unmapped.
   */
  protect(handle: MappingHandle, offset: number, length: number, writable: boolean): boolean;

  /** fcntl(F_OFD_SETLK, F_WRLCK) on the single byte at `offset`: true if taken, false if another open file description holds it. */
  lockTry(fd: number, offset: number): boolean;
  /** fcntl(F_OFD_SETLK, F_UNLCK) on the single byte at `offset`. */
  lockRelease(fd: number, offset: number): void;
  /** fcntl(F_OFD_GETLK, F_WRLCK) on the byte: true if another open file description holds a lock on it. */
  lockHeld(fd: number, offset: number): boolean;

  /**
   * FUTEX_WAIT (shared, not private) on the Int32 at buffer[byteOffset] while it equals
   * `expected`, for at most timeoutMs (negative = forever). Blocks the calling thread.
   * Returns WAIT_WOKEN (also for EINTR and spurious wake-ups), WAIT_NOT_EQUAL or WAIT_TIMED_OUT.
   */
  futexWait(buffer: WaitableBuffer, byteOffset: number, expected: number, timeoutMs: number): number;
  /** FUTEX_WAKE (shared) up to `count` waiters on buffer[byteOffset]. Returns how many were woken. */
  futexWake(buffer: WaitableBuffer, byteOffset: number, count: number): number;

  /**
   * A helper thread that parks on the futex word buffer[byteOffset] when armed and reports
   * into this thread's event loop: `callback(result)` runs on the loop with WAIT_WOKEN,
   * WAIT_NOT_EQUAL, WAIT_TIMED_OUT, WAIT_CANCELLED or WAIT_ERROR, once per waiterArm(). While
   * armed the waiter keeps the event loop alive; while disarmed it does not. The thread waits
   * with futex_waitv on the shared word plus a private kick word (Linux >= 5.16), so cancel and
   * close never lose a wake-up; elsewhere it falls back to FUTEX_WAIT and repeated wakes
   * (SHMBUS_FUTEX_WAITV=0 forces the fallback).
   */
  waiterCreate(buffer: WaitableBuffer, byteOffset: number, callback: (result: number) => void): WaiterHandle;
  /** Arm: the thread calls FUTEX_WAIT(word, expected, timeoutMs). Throws EBUSY if already armed. */
  waiterArm(waiter: WaiterHandle, expected: number, timeoutMs: number): void;
  /** End a pending wait early; its callback receives WAIT_CANCELLED. No-op if not armed. */
  waiterCancel(waiter: WaiterHandle): void;
  /** Stop and join the thread; a pending wait gets no callback. Idempotent. */
  waiterClose(waiter: WaiterHandle): void;

  /**
   * An io_uring (4 entries) for FUTEX_WAIT on the Int32 at buffer[byteOffset] (shared, not
   * private): returns [handle, ringFd]; ringFd turns readable when a wait completes (watch it
   * with pollStart). Throws a system error where io_uring or IORING_OP_FUTEX_WAIT (Linux 6.7)
   * is unavailable (ENOSYS, EPERM under seccomp, ...). Holds the buffer until uringClose.
   */
  uringCreate(buffer: WaitableBuffer, byteOffset: number): [handle: UringHandle, ringFd: number];
  /** Submits FUTEX_WAIT(word, expected); one at a time. */
  uringArm(uring: UringHandle, expected: number): void;
  /** Asks the kernel to end the pending wait: it completes with WAIT_CANCELLED. */
  uringCancel(uring: UringHandle): void;
  /** Pops completions: the WAIT_* result of a finished wait (WAIT_WOKEN, WAIT_NOT_EQUAL, WAIT_CANCELLED, WAIT_ERROR), or -1. */
  uringReap(uring: UringHandle): number;
  /** Closes the ring (a pending wait is cancelled) and unmaps it. Call pollStop on its fd first. Idempotent. */
  uringClose(uring: UringHandle): void;

  /** eventfd(initial, EFD_CLOEXEC|EFD_NONBLOCK|(semaphore?EFD_SEMAPHORE:0)). */
  eventfdCreate(initial: number, semaphore: boolean): number;
  /** read(2) an eventfd: its counter (as a number), or 0 when EAGAIN. */
  eventfdRead(fd: number): number;
  /** write(2) `value` to an eventfd. */
  eventfdWrite(fd: number, value: number): void;
  /**
   * Watch fd for readability with uv_poll on this thread's loop; callback runs on the loop.
   * Keeps the loop alive until pollStop. uv_poll_init makes the fd non-blocking; libuv allows
   * one poll per fd per loop; call pollStop before closeFd.
   */
  pollStart(fd: number, callback: () => void): PollHandle;
  /** Stop and close the watcher. Idempotent. */
  pollStop(poll: PollHandle): void;
  /**
   * uv_ref / uv_unref the watcher: an unref'd watcher still fires but does not keep the
   * event loop alive on its own. For watchers kept started across many waits. No syscall.
   */
  pollRef(poll: PollHandle, ref: boolean): void;

  /**
   * socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC) connected to the listener at `path`, then made
   * O_NONBLOCK; returns the fd (the caller closes it with closeFd). A unix connect completes at
   * once, except while the listener's backlog is full: then it blocks the calling thread until
   * the listener accepts (so never connect to a listener whose accept runs on this same thread
   * with a full backlog). Throws system errors with `path`: ENOENT (no such file, or ''),
   * ECONNREFUSED (a socket file nobody listens on, e.g. left by a crashed listener, and also a
   * path that is not a socket at all), EACCES, ENAMETOOLONG (more than 107 bytes: sun_path
   * holds 108 with its NUL). Filesystem paths only: no abstract names (a NUL byte is refused
   * with ERR_INVALID_ARG_VALUE).
   */
  unixConnect(path: string): number;
  /**
   * One sendmsg(fd, MSG_NOSIGNAL|MSG_DONTWAIT) of `data`, with one SCM_RIGHTS message holding
   * `fds` (at most 16; none when empty, and then `data` may be empty too). The kernel attaches
   * the fds to the first byte sent; the sender may close its copies as soon as this returns.
   * Returns the bytes sent, which may be fewer than data.length: the fds went with them, so
   * the caller sends the rest without fds. Never blocks, even on a blocking fd. Every failure
   * throws a system error with syscall 'sendmsg', expected ones included (the caller decides):
   * EAGAIN (the peer's receive queue is full: nothing and no fd was sent), EPIPE (the peer
   * closed; no SIGPIPE), EBADF (a bad fd, in `fd` or in `fds`), ENOTSOCK. `fd` may be the fd of
   * a net.Socket (`socket._handle.fd`) as long as nothing else writes to it meanwhile.
   */
  sendFds(fd: number, data: Uint8Array, fds: number[]): number;
  /**
   * One recvmsg(fd, MSG_DONTWAIT|MSG_CMSG_CLOEXEC) into `buffer` (at least 1 byte): returns
   * [bytes, fds] where bytes is the count read, 0 at EOF, or -1 when nothing can be read now
   * (EAGAIN: wait for readability, e.g. pollStart, and call again). fds are the received
   * descriptors in the order sent, close-on-exec, at most `maxFds` (0..253) of them; they are
   * the caller's to close. Descriptors beyond maxFds are closed here, never leaked, and so is
   * a pidfd (SCM_PIDFD). They arrive with the read that returns the first byte of the message
   * that carried them; one read never returns the bytes of two messages that carried fds.
   * If the kernel truncated the control data (MSG_CTRUNC: it could not install every fd, e.g.
   * the process is at its RLIMIT_NOFILE), the fds that did arrive are closed and this throws a
   * system error with code 'EMSGSIZE', syscall 'recvmsg' and a message saying so; the bytes of
   * that read are consumed but not reported, so the stream is out of step: close it. Other errors (ECONNRESET,
   * EBADF, ENOTSOCK, ...) throw. Never blocks. Allocates the result.
   */
  recvFds(fd: number, buffer: Uint8Array, maxFds: number): [bytes: number, fds: number[]];
  /**
   * getsockopt(fd, SO_PEERCRED) of a connected unix socket: [pid, uid, gid] of the peer as of
   * connect() (for the accepting end: of the process that connected; for the connecting end: of
   * the process that called listen()). Stale by nature: the pid may have exited or been reused
   * since; compare the uid, and use the pid for messages. ENOTSOCK for an fd that is not a socket.
   */
  peerCredentials(fd: number): [pid: number, uid: number, gid: number];

  /** Does nothing: the baseline cost of crossing into C (benchmarks). */
  noop(): void;
  /** The layout constants compiled into the addon, for the test that compares them with src/layout. */
  constants(): Record<string, number>;
}

/** The addon's file name under build/ (binding.gyp's target_name). */
const ADDON_FILE = 'shmbus.node';

/**
 * The C library this node process runs on: the ELF interpreter named in the node binary's
 * program headers (PT_INTERP, within its first page) is ld-musl-* or ld-linux-*. A binary
 * without one (statically linked) falls back to process.report, which only glibc builds fill.
 * Any thread; reads 4 KiB of the node binary synchronously (about 1 ms; process.report takes
 * 10-40 ms). Called by the loader only when it reaches prebuilds/, and for its error message.
 */
export function libcFlavor(): 'glibc' | 'musl' {
  const head = Buffer.alloc(4096);
  let fd: number | undefined;
  try {
    fd = openSync(process.execPath, 'r');
    readSync(fd, head, 0, head.length, 0);
  } catch {
    // unreadable binary: leave the page zeroed and ask process.report below
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  const text = head.toString('latin1');
  if (text.includes('/ld-musl-')) return 'musl';
  if (text.includes('/ld-linux')) return 'glibc';
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  const header = report?.header;
  return header?.glibcVersionRuntime !== undefined ? 'glibc' : 'musl';
}

/**
 * The prebuilt binaries in `dir` that fit this process, best first, named as prebuildify names
 * them and node-gyp-build picks them: `<name>[.abi<N>|.napi][.glibc|.musl].node`. A libc tag
 * must match; an abi tag must equal process.versions.modules; untagged files fit anything.
 */
function prebuildsFor(dir: string, libc: string): string[] {
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.node'));
  } catch {
    return [];
  }
  const fits = (file: string): number => {
    let specificity = 0;
    for (const tag of file.split('.').slice(1, -1)) {
      if (tag === 'glibc' || tag === 'musl') {
        if (tag !== libc) return -1;
        specificity++;
      } else if (/^abi\d+$/.test(tag)) {
        if (tag !== `abi${process.versions.modules}`) return -1;
        specificity++;
      }
    }
    return specificity;
  };
  return files
    .map((file) => ({ file, specificity: fits(file) }))
    .filter((c) => c.specificity >= 0)
    .sort((a, b) => b.specificity - a.specificity)
    .map((c) => join(dir, c.file));
}

/**
 * Finds and loads the addon, node-gyp-build's order: SHMBUS_ADDON if set (and only it), else a
 * source build (build/Release, then build/Debug: `npm run build` or the install-time fallback,
 * so a fresh compile always wins over a shipped binary), else the prebuilt binary for this
 * platform, arch and libc (prebuilds/linux-x64/shmbus.glibc.node, made by `npm run prebuild`).
 * Throws SHM_ERR_NATIVE_UNAVAILABLE naming the platform and every file tried.
 */
function load(): NativeBinding {
  const root = packageRoot();
  const requireFromPackage = packageRequire();
  const tried: string[] = [];
  let firstError: unknown;
  const attempt = (file: string): NativeBinding | undefined => {
    if (!existsSync(file)) {
      tried.push(`${file} (absent)`);
      return undefined;
    }
    try {
      return requireFromPackage(file) as NativeBinding;
    } catch (err) {
      firstError ??= err;
      tried.push(`${file} (${(err as Error)?.message ?? String(err)})`);
      return undefined;
    }
  };

  // SHMBUS_ADDON: an alternative build (scripts/test-sanitizers.sh points it at a sanitized one).
  const override = process.env.SHMBUS_ADDON;
  const builds = override
    ? [resolve(override)]
    : [join(root, 'build', 'Release', ADDON_FILE), join(root, 'build', 'Debug', ADDON_FILE)];
  for (const file of builds) {
    const binding = attempt(file);
    if (binding !== undefined) return binding;
  }
  const libc = libcFlavor();
  if (!override) {
    const dir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
    const prebuilds = prebuildsFor(dir, libc);
    if (prebuilds.length === 0) tried.push(`${dir}/*.node for ${libc} (none)`);
    for (const file of prebuilds) {
      const binding = attempt(file);
      if (binding !== undefined) return binding;
    }
  }
  const tuple =
    `os=${process.platform} arch=${process.arch} libc=${libc} ` +
    `node=${process.versions.node} napi=${process.versions.napi}`;
  const message =
    `shmbus: the native addon could not be loaded for ${tuple}. ` +
    `Tried: ${tried.join('; ')}. ` +
    (override
      ? 'SHMBUS_ADDON names the only file tried; unset it to use the installed addon.'
      : 'The package ships prebuilt binaries for some platforms (see its README); elsewhere `npm install` ' +
        'builds the addon from source (node-gyp: python3, make and a C compiler), or run `npm rebuild shmbus`.');
  throw new ShmSystemError(ErrorCode.NATIVE_UNAVAILABLE, message, { cause: firstError });
}

let cached: NativeBinding | undefined;

/** The addon, loaded on first use (so the SharedArrayBuffer-only core works without it). */
export function native(): NativeBinding {
  cached ??= load();
  return cached;
}
