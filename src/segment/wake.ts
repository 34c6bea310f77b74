/**
 * Parking and waking across processes on a futex word of a mapping (an "eventcount"):
 *
 * ```
 *  parker                                   waker
 *  s = load(seq)                            publish data          (Atomics.store)
 *  store(sleeping, 1)                       if load(sleeping) != 0
 *  if condition now true: store(sleeping,0)   and exchange(sleeping, 0) != 0:
 *  else FUTEX_WAIT(seq, s, slice)               add(seq, 1); FUTEX_WAKE(seq)
 * ```
 * All four shared accesses are sequentially consistent Atomics, so either the parker's
 * re-check sees the data or the waker sees the flag; and a wake that lands between the
 * re-check and FUTEX_WAIT changes `seq`, which makes FUTEX_WAIT return at once. No wake-up
 * is lost, and the waker makes no syscall while nobody sleeps.
 *
 * V8's Atomics.wait/notify are process-local, hence the addon's futex calls; event-loop
 * waits use an io_uring FUTEX_WAIT polled by the loop where the kernel has it (Linux >= 6.7),
 * else the addon's waiter thread (it parks on the same word and reports into the loop).
 */
import { ErrorCode, ShmStateError } from '../errors.js';
import {
  native,
  type PollHandle,
  type UringHandle,
  WAIT_CANCELLED,
  WAIT_NOT_EQUAL,
  WAIT_TIMED_OUT,
  WAIT_WOKEN,
  type WaiterHandle,
} from '../native/binding.js';

/** Parks and wakes on one wait block (`sleeping` word, then `seq` word 4 bytes later). */
export class WaitBlock {
  private readonly sleepingIndex: number;
  private readonly seqIndex: number;
  private readonly seqByteOffset: number;
  private waiter: WaiterHandle | null = null;
  /** undefined until the first park(); null when io_uring is not available. */
  private uring: [UringHandle, number] | null | undefined = undefined;
  private settle: ((result: number) => void) | null = null;
  /**
   * When >= 0, an eventfd that replaces the futex for this block (fan-out rings, whose
   * wake-up fd is handed over a unix socket): wake() writes it, park() polls it on the loop.
   * The sleeping flag and seq protocol are unchanged, so a waker still makes no system call
   * while nobody sleeps. Only park() (event loop) supports it; parkSync() keeps the futex.
   */
  eventFd = -1;

  constructor(
    private readonly buffer: ArrayBuffer,
    private readonly i32: Int32Array,
    sleepingByteOffset: number,
    seqByteOffset: number,
  ) {
    this.sleepingIndex = sleepingByteOffset >> 2;
    this.seqIndex = seqByteOffset >> 2;
    this.seqByteOffset = seqByteOffset;
  }

  /** Waker side: wakes the parker if (and only if) it announced it sleeps. Call after publishing. */
  wake(): void {
    const i32 = this.i32;
    if (Atomics.load(i32, this.sleepingIndex) === 0) return;
    // SYNC POINT: pairs with Atomics.store(sleeping, 1) in prepare(); clearing the flag makes
    // later publications skip the syscall until the parker sleeps again.
    if (Atomics.exchange(i32, this.sleepingIndex, 0) === 0) return;
    Atomics.add(i32, this.seqIndex, 1);
    this.signal();
  }

  private signal(): void {
    if (this.eventFd >= 0) native().eventfdWrite(this.eventFd, 1);
    else native().futexWake(this.buffer, this.seqByteOffset, 0x7fffffff);
  }

  /** Waker side: wakes unconditionally (close, so that a parked peer re-checks state). */
  wakeAlways(): void {
    Atomics.store(this.i32, this.sleepingIndex, 0);
    Atomics.add(this.i32, this.seqIndex, 1);
    this.signal();
  }

  /** Parker side, step 1: returns the seq to wait on and announces sleep. Re-check after this. */
  prepare(): number {
    const seq = Atomics.load(this.i32, this.seqIndex);
    // SYNC POINT: pairs with Atomics.load(sleeping) in wake(); stored before the re-check.
    Atomics.store(this.i32, this.sleepingIndex, 1);
    return seq;
  }

  /** Parker side: withdraws the announcement (the re-check found work, or the wait ended). */
  cancel(): void {
    Atomics.store(this.i32, this.sleepingIndex, 0);
  }

  /**
   * Parker side, step 2 (blocking): FUTEX_WAIT on seq for at most `timeoutMs`. Returns a
   * WAIT_* code. With an eventFd the waker does not touch the futex, so the wait is cut to
   * 1 ms slices (the caller re-checks between them).
   */
  parkSync(seq: number, timeoutMs: number): number {
    const ms = this.eventFd >= 0 ? Math.min(timeoutMs, 1) : timeoutMs;
    return native().futexWait(this.buffer, this.seqByteOffset, seq, ms);
  }

  /**
   * Parker side, step 2 (event loop): resolves with a WAIT_* code; never blocks the loop.
   * Uses an io_uring FUTEX_WAIT whose ring fd the loop polls (one wake-up, Linux >= 6.7),
   * else the addon's waiter thread (a futex wake, then a hop into the loop).
   * SHMBUS_WAITER=thread forces the waiter thread.
   */
  park(seq: number, timeoutMs: number): Promise<number> {
    if (this.settle !== null) throw new ShmStateError(ErrorCode.PENDING, 'another wait is already pending on this end');
    if (this.eventFd >= 0) return this.parkEventFd(this.eventFd, seq, timeoutMs);
    if (this.uring === undefined) this.uring = openUring(this.buffer, this.seqByteOffset);
    return this.uring !== null ? this.parkUring(this.uring, seq, timeoutMs) : this.parkThread(seq, timeoutMs);
  }

  /**
   * The loop's watcher on the uring / eventfd fd. It stays started across parks (no epoll_ctl
   * per park, which cost more than the wake-up itself under a busy stream) and is ref'd only
   * while a park is pending, so an idle end does not keep the process alive.
   */
  private fdPoll: PollHandle | null = null;

  private watch(fd: number, onReadable: () => void): void {
    const n = native();
    if (this.fdPoll === null) this.fdPoll = n.pollStart(fd, onReadable);
    else n.pollRef(this.fdPoll, true);
  }

  private unwatch(): void {
    if (this.fdPoll !== null) native().pollRef(this.fdPoll, false);
  }

  private parkUring(uring: [UringHandle, number], seq: number, timeoutMs: number): Promise<number> {
    const n = native();
    const [handle, fd] = uring;
    n.uringArm(handle, seq);
    this.watch(fd, () => {
      const result = n.uringReap(handle);
      if (result >= 0) this.settle?.(result);
    });
    return new Promise<number>((resolve) => {
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        n.uringCancel(handle);
      }, timeoutMs);
      this.settle = (result: number) => {
        clearTimeout(timer);
        this.unwatch();
        this.settle = null;
        resolve(timedOut && result === WAIT_CANCELLED ? WAIT_TIMED_OUT : result);
      };
    });
  }

  /**
   * Waits for the eventfd to turn readable (or `seq` to have moved already). A count left
   * from an earlier wake-up ends the wait at once: the caller re-checks and parks again.
   */
  private parkEventFd(fd: number, seq: number, timeoutMs: number): Promise<number> {
    const n = native();
    if (Atomics.load(this.i32, this.seqIndex) !== seq) return Promise.resolve(WAIT_NOT_EQUAL);
    this.watch(fd, () => {
      // Level-triggered: drain the counter whether or not a park is pending.
      n.eventfdRead(fd);
      this.settle?.(WAIT_WOKEN);
    });
    return new Promise<number>((resolve) => {
      const timer = setTimeout(() => this.settle?.(WAIT_TIMED_OUT), timeoutMs);
      this.settle = (result: number) => {
        clearTimeout(timer);
        this.unwatch();
        this.settle = null;
        resolve(result);
      };
    });
  }

  private parkThread(seq: number, timeoutMs: number): Promise<number> {
    const n = native();
    if (this.waiter === null)
      this.waiter = n.waiterCreate(this.buffer, this.seqByteOffset, (result) => {
        const settle = this.settle;
        this.settle = null;
        settle?.(result);
      });
    const promise = new Promise<number>((resolve) => {
      this.settle = resolve;
    });
    n.waiterArm(this.waiter, seq, timeoutMs);
    return promise;
  }

  /** Ends a pending park() early (it resolves with WAIT_CANCELLED). */
  interrupt(): void {
    if (this.settle === null) return;
    if (this.eventFd >= 0) this.settle(WAIT_CANCELLED);
    else if (this.uring) native().uringCancel(this.uring[0]);
    else if (this.waiter !== null) native().waiterCancel(this.waiter);
  }

  /** Stops the waiter; a pending park() resolves with WAIT_CANCELLED. Idempotent. */
  close(): void {
    const settle = this.settle;
    this.settle = null;
    settle?.(WAIT_CANCELLED);
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter !== null) native().waiterClose(waiter);
    // The watcher goes before the fd it watches (the ring fd, or the caller's eventfd).
    if (this.fdPoll !== null) native().pollStop(this.fdPoll);
    this.fdPoll = null;
    const uring = this.uring;
    this.uring = null;
    if (uring) native().uringClose(uring[0]);
  }
}

/** An io_uring futex waiter on buffer[byteOffset], or null where the kernel or sandbox has none. */
function openUring(buffer: ArrayBuffer, byteOffset: number): [UringHandle, number] | null {
  if (process.env.SHMBUS_WAITER === 'thread') return null;
  try {
    return native().uringCreate(buffer, byteOffset);
  } catch {
    return null;
  }
}

/** How an end waits (see Channel's EndOptions). */
export interface WaitPolicy {
  wait: 'spin' | 'adaptive' | 'park';
  spinIterations: number;
  livenessCheckMs: number;
}

/**
 * One wait, spin then park:
 * - `attempt()` is the condition (it may also do the work, e.g. try to write); true ends the wait;
 * - `check()` runs before each park and every `livenessCheckMs` while spinning: it throws to
 *   abort (peer dead, closed) or returns true to end the wait without the condition (peer closed);
 * - `beforePark()` runs before each park (e.g. publish what is pending, so the peer can act);
 * - past `deadline` (ms since the epoch) the wait throws `timeout()`.
 */
export interface WaitSpec {
  attempt: () => boolean;
  check: () => boolean;
  deadline: number;
  timeout: () => Error;
  beforePark?: () => void;
}

/** Spins per the policy until `attempt()` or `check()` is true, or the spin budget / `until` ends. */
function spinPhase(policy: WaitPolicy, spec: WaitSpec, until: number): boolean {
  if (policy.wait === 'park') return false;
  if (policy.wait === 'adaptive') {
    for (let i = 0; i < policy.spinIterations; i++) if (spec.attempt()) return true;
    return false;
  }
  let nextCheck = Date.now() + policy.livenessCheckMs;
  for (let i = 1; ; i++) {
    if (spec.attempt()) return true;
    if ((i & 1023) === 0) {
      const now = Date.now();
      if (now >= until) return false;
      if (now >= nextCheck) {
        if (spec.check()) return true;
        nextCheck = now + policy.livenessCheckMs;
      }
    }
  }
}

/**
 * The park phase shared by waitSync and waitAsync: yields [seq, timeoutMs] for each park,
 * returns when the condition holds or check() ends the wait, throws on timeout.
 */
function* parkSteps(block: WaitBlock, policy: WaitPolicy, spec: WaitSpec): Generator<[number, number], void, void> {
  for (;;) {
    if (spec.check()) return;
    const seq = block.prepare();
    if (spec.attempt()) {
      block.cancel();
      return;
    }
    const slice = Math.min(policy.livenessCheckMs, spec.deadline - Date.now());
    if (slice <= 0) {
      block.cancel();
      throw spec.timeout();
    }
    spec.beforePark?.();
    yield [seq, Math.ceil(slice)];
    block.cancel();
    if (spec.attempt()) return;
  }
}

/** Blocks this thread: spin, then FUTEX_WAIT in slices of livenessCheckMs. */
export function waitSync(block: WaitBlock, policy: WaitPolicy, spec: WaitSpec): void {
  if (spinPhase(policy, spec, spec.deadline)) return;
  for (const [seq, ms] of parkSteps(block, policy, spec)) block.parkSync(seq, ms);
}

/**
 * On the event loop: spins at most ~1 ms (never longer, whatever the policy), then parks
 * with WaitBlock.park() (io_uring, or the waiter thread). `stillOpen()` runs after every park
 * (it throws once the end closed).
 */
export async function waitAsync(
  block: WaitBlock,
  policy: WaitPolicy,
  spec: WaitSpec,
  stillOpen: () => void,
): Promise<void> {
  if (spinPhase(policy, spec, Math.min(spec.deadline, Date.now() + 1))) return;
  for (const [seq, ms] of parkSteps(block, policy, spec)) {
    await block.park(seq, ms);
    stillOpen();
  }
}
