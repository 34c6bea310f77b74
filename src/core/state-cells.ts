/**
 * Lock-free published state in four cells (iceoryx2's UnrestrictedAtomic, widened): one
 * writer, any number of readers in any process, no reader ever blocks the writer, a torn
 * snapshot is never returned, and a writer that dies mid-write never wedges a reader.
 * Layout and the argument for why the copy is intact: src/layout/daemon.ts.
 *
 * ```ts
 * const sab = new SharedArrayBuffer(CELLS_OFFSET + 4 * cellLength);
 * const w = new StateWriter(viewsOf(sab), geometry);
 * w.write(bytes);                         // version 1
 * const r = new StateReader(viewsOf(sab), geometry);
 * const n = r.read(buf);                  // true length (may exceed buf.length); r.version === 1
 * ```
 * Runs over a plain SharedArrayBuffer (unit tests, worker threads) and over a mapping.
 * write() allocates nothing, read() one view; read() retries while the writer laps it and returns -1
 * after `maxAttempts` (a writer publishing faster than a reader can copy).
 */
import { ErrorCode, ShmFrameError, ShmSegmentError } from '../errors.js';
import {
  CELL_DATA_OFFSET,
  CELL_LENGTH_FIELD_OFFSET,
  CELL_VERSION_OFFSET,
  STATE_CELLS,
  STATE_MAX_LAG,
  STATE_SEQ_OFFSET,
} from '../layout/daemon.js';
import type { SegmentViews } from './spsc-ring.js';
import { STOP_AT, stopAt } from './test-hooks.js';

export interface StateGeometry {
  dataSize: number;
  cellLength: number;
  stateOffset: number;
}

const CELL_MASK = STATE_CELLS - 1;

/** The single writer. */
export class StateWriter {
  private readonly u8: Uint8Array;
  private readonly i32: Int32Array;
  private readonly seqIndex = STATE_SEQ_OFFSET >> 2;

  constructor(
    views: SegmentViews,
    private readonly g: StateGeometry,
  ) {
    this.u8 = views.u8;
    this.i32 = views.i32;
  }

  /** The version of the last published write (0: nothing published yet). */
  get version(): number {
    return Atomics.load(this.i32, this.seqIndex) >>> 0;
  }

  /** Publishes `bytes` as the new state and returns its version. Throws SHM_ERR_TOO_LARGE above dataSize. */
  write(bytes: Uint8Array): number {
    if (bytes.length > this.g.dataSize)
      throw new ShmFrameError(
        ErrorCode.TOO_LARGE,
        `state of ${bytes.length} bytes is larger than dataSize=${this.g.dataSize}`,
        { details: { length: bytes.length, dataSize: this.g.dataSize } },
      );
    const i32 = this.i32;
    // 0 means "nothing published": the u32 sequence skips it when it wraps (which only makes
    // the readers' lag check more conservative).
    const next = (Atomics.load(i32, this.seqIndex) + 1) >>> 0 || 1;
    const cell = this.g.stateOffset + (next & CELL_MASK) * this.g.cellLength;
    // SYNC POINT: a read-modify-write before the cell's data stores: they cannot become
    // visible before the previous publication (pairs with the readers' validating CAS).
    Atomics.exchange(i32, (cell + CELL_LENGTH_FIELD_OFFSET) >> 2, bytes.length);
    i32[(cell + CELL_VERSION_OFFSET) >> 2] = next | 0;
    if (STOP_AT !== null) stopAt('state.mid-write');
    this.u8.set(bytes, cell + CELL_DATA_OFFSET);
    // SYNC POINT: pairs with Atomics.load(stateSeq) in StateReader.read(); the cell is complete.
    Atomics.store(i32, this.seqIndex, next | 0);
    return next;
  }
}

/** A reader (any number, any process). */
export class StateReader {
  private readonly u8: Uint8Array;
  private readonly i32: Int32Array;
  private readonly seqIndex = STATE_SEQ_OFFSET >> 2;
  /** Version of the snapshot returned by the last successful read(). */
  version = 0;
  /** Reads that had to retry because the writer lapped them (for metrics). */
  retries = 0;

  constructor(
    views: SegmentViews,
    private readonly g: StateGeometry,
  ) {
    this.u8 = views.u8;
    this.i32 = views.i32;
  }

  /** The latest published version (one atomic load). */
  latest(): number {
    return Atomics.load(this.i32, this.seqIndex) >>> 0;
  }

  /**
   * Copies the latest complete state into `dst` (at most dst.length bytes) and returns its
   * true length (0 before the first write), or -1 if the writer lapped every attempt.
   * Sets `version`.
   */
  read(dst: Uint8Array, maxAttempts = 1000): number {
    const i32 = this.i32;
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      // SYNC POINT: pairs with Atomics.store(stateSeq) in StateWriter.write().
      const s1 = Atomics.load(i32, this.seqIndex) >>> 0;
      if (s1 === 0) {
        this.version = 0;
        return 0;
      }
      const cell = this.g.stateOffset + (s1 & CELL_MASK) * this.g.cellLength;
      const length = i32[(cell + CELL_LENGTH_FIELD_OFFSET) >> 2] >>> 0;
      const version = i32[(cell + CELL_VERSION_OFFSET) >> 2] >>> 0;
      if (length <= this.g.dataSize && version === s1) {
        const n = Math.min(length, dst.length);
        if (n > 0) dst.set(this.u8.subarray(cell + CELL_DATA_OFFSET, cell + CELL_DATA_OFFSET + n));
        // SYNC POINT: a CAS that writes back what it read: its release orders the copy above
        // before the validation (a plain load could be satisfied before the copy on ARM).
        const s2 = Atomics.compareExchange(i32, this.seqIndex, s1 | 0, s1 | 0) >>> 0;
        if ((s2 - s1) >>> 0 <= STATE_MAX_LAG) {
          this.version = s1;
          return length;
        }
      } else if (Atomics.load(i32, this.seqIndex) >>> 0 === s1) {
        // Published and unchanged, yet the cell does not carry its version: not a race.
        throw new ShmSegmentError(
          ErrorCode.CORRUPT,
          `state cell ${s1 & CELL_MASK} holds length ${length} / version ${version} for published version ${s1} (dataSize ${this.g.dataSize})`,
          { details: { version: s1, length, cellVersion: version } },
        );
      }
      this.retries++;
    }
    return -1;
  }
}
