/**
 * Hang detector for the fuzz runner: a worker thread watches a heartbeat in a
 * SharedArrayBuffer that the case loop updates at every case and operation. If it stops
 * moving for `hangMs` (a synchronous loop that never ends, or an await that never settles),
 * the worker prints a `kind: 'hang'` finding naming the target, case and operation, and
 * kills the process with SIGKILL: the parent sees the line and a non-zero exit.
 *
 * ```ts
 * const dog = startWatchdog({ hangMs: 30_000, seed: 42 });
 * dog.target('segment-channel');
 * dog.beat(17, 'recvSync');     // cheap: two stores and an encodeInto
 * dog.stop();
 * ```
 * One watchdog per process; beat() is called from the main thread only.
 */
import { Worker } from 'node:worker_threads';

export interface WatchdogOptions {
  hangMs: number;
  seed: number;
}

/** Heartbeat words (Int32): [case index, op name length, target name length]. */
const CASE_WORD = 0;
const OP_LENGTH_WORD = 1;
const TARGET_LENGTH_WORD = 2;
/** Byte offsets in the same buffer. */
export const BEAT_TIME_OFFSET = 16;
export const OP_OFFSET = 32;
export const OP_MAX = 96;
export const TARGET_OFFSET = OP_OFFSET + OP_MAX;
export const TARGET_MAX = 64;
export const HEARTBEAT_LENGTH = TARGET_OFFSET + TARGET_MAX;
export { CASE_WORD, OP_LENGTH_WORD, TARGET_LENGTH_WORD };

const encoder = new TextEncoder();

export class Watchdog {
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;
  private readonly op: Uint8Array;
  private readonly name: Uint8Array;

  constructor(
    private readonly worker: Worker,
    sab: SharedArrayBuffer,
  ) {
    this.i32 = new Int32Array(sab, 0, 4);
    this.f64 = new Float64Array(sab, BEAT_TIME_OFFSET, 1);
    this.op = new Uint8Array(sab, OP_OFFSET, OP_MAX);
    this.name = new Uint8Array(sab, TARGET_OFFSET, TARGET_MAX);
  }

  /** Names the target now running (and restarts the clock). */
  target(name: string): void {
    const { written } = encoder.encodeInto(name, this.name);
    Atomics.store(this.i32, TARGET_LENGTH_WORD, written);
    this.beat(0, '');
  }

  /** Progress: case `index` is at operation `op`. */
  beat(index: number, op: string): void {
    this.f64[0] = Date.now();
    Atomics.store(this.i32, CASE_WORD, index);
    const { written } = op === '' ? { written: 0 } : encoder.encodeInto(op, this.op);
    Atomics.store(this.i32, OP_LENGTH_WORD, written);
  }

  /** Pauses detection (between targets, during a long setup). */
  idle(): void {
    this.f64[0] = 0;
  }

  stop(): void {
    this.idle();
    void this.worker.terminate();
  }
}

export function startWatchdog(options: WatchdogOptions): Watchdog {
  const sab = new SharedArrayBuffer(HEARTBEAT_LENGTH);
  const worker = new Worker(new URL('./watchdog-worker.js', import.meta.url), {
    workerData: { sab, hangMs: options.hangMs, seed: options.seed },
  });
  worker.unref();
  return new Watchdog(worker, sab);
}
