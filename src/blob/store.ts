/**
 * Blob store: append-only chunks in shared memory, 24-byte handles, acknowledgements, TTL
 * (layout/blob.ts). Data written once never moves; any process that attaches can read it by
 * handle, as a copy (resolve) or in place under a lease (view).
 *
 * ```ts
 * const store = BlobStore.create('frames', { chunkSize: 32 << 20, maxChunks: 64 });
 * const h = store.append(bytes);              // BlobHandle; h.toBytes() is 24 bytes
 * const other = BlobStore.attach('frames');   // another process
 * other.resolve(h);                            // a copy, or null (expired, freed, invalid)
 * other.ack(h);                                // once every recipient acked, the chunk can go
 * store.startCleanup(1000);                    // frees acknowledged and expired chunks
 * ```
 * Appends from any number of processes are safe: an appender reserves its bytes with a
 * compare-and-swap of the chunk's `used` word, copies, then counts the entry. A chunk that
 * cannot take an entry is sealed and the write head moves to the next chunk (a prefetched
 * one when there is one). Cleanup frees a sealed chunk when every entry is acknowledged by
 * all its recipients and no append is in progress, after the decay period; or when its
 * oldest entry is older than the TTL, acknowledged or not (consumers that crashed never ack);
 * never while a view holds a lease on it (until the lease timeout).
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, renameSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { STOP_AT, stopAt } from '../core/test-hooks.js';
import { diagnostics } from '../diagnostics.js';
import { ErrorCode, ShmArgumentError, ShmError, ShmFrameError, ShmSegmentError, ShmStateError } from '../errors.js';
import {
  ACKED_OFFSET,
  APPENDS_OFFSET,
  ackIndex,
  ackWords,
  BLOB_PROTOCOL_VERSION,
  CHUNK_CAPACITY_OFFSET,
  CHUNK_DATA_OFFSET_OFFSET,
  CHUNK_GENERATION_OFFSET,
  CHUNK_INDEX_OFFSET,
  CHUNK_PARAMS_LENGTH,
  CHUNK_PROTOCOL_OFFSET,
  CHUNK_SIZE_OFFSET,
  ChunkState,
  chunkDataOffset,
  chunkFileLength,
  controlLength,
  DECAY_OFFSET,
  EMPTY_SINCE_OFFSET,
  ENTRIES_OFFSET,
  ENTRY_CHECK_OFFSET,
  ENTRY_CREATED_OFFSET,
  ENTRY_CREATOR_PID_OFFSET,
  ENTRY_CREATOR_START_OFFSET,
  ENTRY_GENERATION_OFFSET,
  ENTRY_HEADER_LENGTH,
  ENTRY_LENGTH_OFFSET,
  ENTRY_RECIPIENTS_OFFSET,
  ENTRY_STATE_OFFSET,
  EXPIRED_OFFSET,
  entryCheck,
  entrySize,
  FIRST_WRITE_OFFSET,
  FREED_OFFSET,
  FULL_OFFSET,
  fullMask,
  LAST_LEASE_OFFSET,
  LAST_WRITE_OFFSET,
  LEASE_TIMEOUT_OFFSET,
  LEASES_OFFSET,
  MAX_CHUNK_SIZE,
  MAX_CHUNKS,
  MAX_CHUNKS_OFFSET,
  MAX_RECIPIENTS,
  MAX_STORE_NAME_LENGTH,
  MIN_CHUNK_SIZE,
  NEXT_GENERATION_OFFSET,
  PREFETCH_OFFSET,
  PREFETCHING_OFFSET,
  PROTOCOL_OFFSET,
  SEALED_OFFSET,
  SMALL_RECIPIENTS,
  STORE_CLOSED_OFFSET,
  STORE_PARAMS_LENGTH,
  TABLE_ENTRY_LENGTH,
  TABLE_OFFSET,
  TABLE_OFFSET_OFFSET,
  TTL_OFFSET,
  USED_OFFSET,
  WRITE_HEAD_OFFSET,
  WRITERS_OFFSET,
} from '../layout/blob.js';
import { Kind } from '../layout/segment.js';
import { FILE_PREFIX, pendingPrefix, segmentDir, segmentPath, validateName } from '../segment/names.js';
import { processStartTime, selfStartTime } from '../segment/process-identity.js';
import { pageSize, removeIfOwnerDead, Segment } from '../segment/segment.js';
import { BlobHandle } from './handle.js';

export interface BlobStoreOptions {
  /** Data bytes per chunk: a multiple of 8 in 128..2^30 (default 32 MiB). An append never spans chunks. */
  chunkSize?: number;
  /** Most chunk files alive at once, 1..4096 (default 64); beyond it append() fails with SHM_ERR_FULL. */
  maxChunks?: number;
  /** Age after which handles resolve to null and chunks are freed unacknowledged (default 30 s; < 2^31). */
  ttlMs?: number;
  /** How long a fully acknowledged chunk stays before cleanup frees it (default 5 s). */
  decayMs?: number;
  /** Fill fraction of the active chunk, in (0, 1], at which the next chunk is created ahead (default 0.8). */
  prefetchAt?: number;
  /** Longest time a view's lease keeps its chunk from being freed (default 30 s). */
  leaseTimeoutMs?: number;
  /** Directory of the files (default $SHMBUS_DIR, else /dev/shm). */
  dir?: string;
  /** File mode (default 0o600: owner only). */
  mode?: number;
}

export interface BlobAttachOptions {
  dir?: string;
  /**
   * How long attach() waits for a control segment whose version word is still 0 (default 0:
   * the file gets its name only once complete, so a 0 there is corruption, not a creation in
   * progress).
   */
  readyTimeoutMs?: number;
  /**
   * Map chunk data read-only (default false): for readers that only resolve, view and
   * acknowledge. A stray write into a view then kills this process (SIGSEGV) instead of
   * corrupting what the writer and other readers see; append() is refused.
   */
  readOnly?: boolean;
}

export interface BlobAppendOptions {
  /** How many recipients must acknowledge the entry (ack indexes 0..recipients-1), 1..1024 (default 1). */
  recipients?: number;
}

export interface BlobStoreStats {
  /** Chunk files alive (created and not yet freed). */
  chunks: number;
  /** Table index of the active chunk, -1 before the first append. */
  active: number;
  /** Appends completed, by every process (each publishes its count every 64 appends, and at stats() and close()). */
  appends: number;
  /** Chunks freed, by acknowledgement or TTL. */
  freed: number;
  /** Of those, freed because of the TTL. */
  expired: number;
  /** Appends refused with SHM_ERR_FULL. */
  full: number;
}

/** A zero-copy view of one blob; the chunk is not freed while it is held (up to the lease timeout). */
export class BlobView {
  private released = false;
  constructor(
    /** The bytes, in place in the shared chunk. Do not use after release(). */
    readonly data: Uint8Array,
    private readonly onRelease: () => void,
  ) {}

  /** Gives the lease back. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.onRelease();
  }
}

/** One chunk file mapped by this process. */
interface ChunkMapping {
  readonly seg: Segment;
  readonly index: number;
  /** Changes when this process recycles the chunk (recycle()). */
  generation: number;
  readonly i32: Int32Array;
  readonly u8: Uint8Array;
  /** Views this process holds on it. */
  leases: number;
  /** Replaced or freed: unmapped once `leases` is 0. */
  retired: boolean;
}

const DEFAULTS = {
  chunkSize: 32 << 20,
  maxChunks: 64,
  ttlMs: 30_000,
  decayMs: 5_000,
  prefetchAt: 0.8,
  leaseTimeoutMs: 30_000,
};
const MAX_MS = 0x7fff_ffff;
/**
 * Freed chunks kept (recycled, under a new generation) as prefetched ones, at most: enough for
 * a producer whose consumers acknowledge a little behind it never to create files again.
 */
const SPARE_CHUNKS = 2;
/** A prefetch flag older than this belongs to a process that died mid-creation. */
const PREFETCH_STALE_MS = 10_000;

/** Low 32 bits of Date.now(); 0 means "never", so a 0 becomes 1 (1 ms late, once in 49 days). */
function stamp(): number {
  return Date.now() >>> 0 || 1;
}

/** Milliseconds since `t` (a stamp()), 0 for a stamp in the future; valid up to 2^31 ms. */
function ageOf(t: number): number {
  const age = ((Date.now() >>> 0) - t) | 0;
  return Math.max(age, 0);
}

function chunkName(name: string, generation: number): string {
  return `${name}.b${generation}`;
}

function chunkFilePattern(name: string): RegExp {
  return new RegExp(`^${(FILE_PREFIX + name).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.b[0-9]+(~.*)?$`);
}

function checkStoreName(name: unknown): string {
  validateName(name);
  if ((name as string).length > MAX_STORE_NAME_LENGTH)
    throw new ShmArgumentError(
      ErrorCode.INVALID_NAME,
      `a blob store name is at most ${MAX_STORE_NAME_LENGTH} characters (its chunk files add a suffix), got ${(name as string).length}`,
      { details: { name } },
    );
  return name as string;
}

function checkRange(key: string, value: unknown, min: number, max: number, integer = true): number {
  if (typeof value !== 'number' || !(value >= min && value <= max) || (integer && !Number.isInteger(value)))
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `${key} must be ${integer ? 'an integer' : 'a number'} in ${min}..${max}, got ${String(value)}`,
      { details: { [key]: value } },
    );
  return value;
}

/** Creators alive in this process: their files go when it exits (an 'exit' hook). */
const creators = new Set<BlobStore>();
let exitHook = false;

export class BlobStore {
  /** Data bytes per chunk. */
  readonly capacity: number;
  readonly maxChunks: number;
  readonly ttlMs: number;
  readonly decayMs: number;
  readonly prefetchAt: number;
  readonly leaseTimeoutMs: number;
  /** Largest payload one append (with up to 32 recipients) takes. */
  readonly maxAppend: number;
  private readonly i32: Int32Array;
  /** Directory of the store's files. */
  readonly dir: string;
  private readonly mode: number | undefined;
  private readonly mapped: (ChunkMapping | undefined)[];
  /** Old mappings still leased here. */
  private readonly retiredLeased = new Set<ChunkMapping>();
  private readonly prefetchBytes: number;
  /** FREEING with this process's pid: the state word of an entry this process is freeing. */
  private readonly freeingWord = ChunkState.FREEING | (process.pid << 3);
  /** Where each chunk file's data area starts (a page boundary) and how long the file is. */
  private readonly dataOffset: number;
  private readonly fileLength: number;
  private timer: NodeJS.Timeout | null = null;
  private unpublishedAppends = 0;
  private closedByUs = false;

  private constructor(
    readonly name: string,
    private readonly control: Segment,
    /** True for the process that created the store (its close() removes the files). */
    readonly isCreator: boolean,
    dir: string,
    mode: number | undefined,
    /** Attached with readOnly: chunk data mapped read-only, append() refused. */
    readonly readOnly = false,
  ) {
    const dv = control.views.dv;
    this.i32 = control.views.i32;
    this.capacity = dv.getUint32(CHUNK_SIZE_OFFSET, true);
    this.maxChunks = dv.getUint32(MAX_CHUNKS_OFFSET, true);
    this.ttlMs = dv.getUint32(TTL_OFFSET, true);
    this.decayMs = dv.getUint32(DECAY_OFFSET, true);
    this.prefetchAt = dv.getUint32(PREFETCH_OFFSET, true) / 1000;
    this.leaseTimeoutMs = dv.getUint32(LEASE_TIMEOUT_OFFSET, true);
    this.maxAppend = this.capacity - ENTRY_HEADER_LENGTH;
    this.dataOffset = chunkDataOffset(this.capacity, pageSize());
    this.fileLength = chunkFileLength(this.capacity, pageSize());
    this.prefetchBytes = Math.ceil(this.capacity * this.prefetchAt);
    this.dir = dir;
    this.mode = mode;
    this.mapped = new Array(this.maxChunks).fill(undefined);
  }

  /** Bytes an entry of `length` payload bytes takes in a chunk. */
  static entrySize(length: number, recipients = 1): number {
    return entrySize(length, recipients);
  }

  /**
   * Creates store `name`. Files of a previous store of that name whose creator is dead are
   * removed first; a live creator's store makes this fail with SHM_ERR_EXISTS.
   */
  static create(name: string, options: BlobStoreOptions = {}): BlobStore {
    checkStoreName(name);
    if (options === null || typeof options !== 'object')
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, 'options must be an object');
    const chunkSize = checkRange('chunkSize', options.chunkSize ?? DEFAULTS.chunkSize, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE);
    if (chunkSize % 8 !== 0)
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `chunkSize must be a multiple of 8, got ${chunkSize}`, {
        details: { chunkSize },
      });
    const maxChunks = checkRange('maxChunks', options.maxChunks ?? DEFAULTS.maxChunks, 1, MAX_CHUNKS);
    const ttlMs = checkRange('ttlMs', options.ttlMs ?? DEFAULTS.ttlMs, 1, MAX_MS);
    const decayMs = checkRange('decayMs', options.decayMs ?? DEFAULTS.decayMs, 0, MAX_MS);
    const leaseTimeoutMs = checkRange('leaseTimeoutMs', options.leaseTimeoutMs ?? DEFAULTS.leaseTimeoutMs, 1, MAX_MS);
    const prefetchAt = options.prefetchAt ?? DEFAULTS.prefetchAt;
    if (typeof prefetchAt !== 'number' || !(prefetchAt > 0 && prefetchAt <= 1))
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `prefetchAt must be in (0, 1], got ${String(prefetchAt)}`);
    const dir = segmentDir(options.dir);
    const path = segmentPath(name, dir);
    const owner = removeIfOwnerDead(path);
    if (owner !== null)
      throw new ShmSegmentError(
        ErrorCode.EXISTS,
        `blob store ${JSON.stringify(name)} already exists at ${path} and its creator (pid ${owner}) is alive`,
        { details: { name, path, ownerPid: owner } },
      );
    removeChunkFiles(dir, name);
    const seg = Segment.create(
      name,
      Kind.BLOB,
      controlLength(maxChunks),
      STORE_PARAMS_LENGTH,
      ({ dv, i32 }) => {
        dv.setUint32(PROTOCOL_OFFSET, BLOB_PROTOCOL_VERSION, true);
        dv.setUint32(CHUNK_SIZE_OFFSET, chunkSize, true);
        dv.setUint32(MAX_CHUNKS_OFFSET, maxChunks, true);
        dv.setUint32(TTL_OFFSET, ttlMs, true);
        dv.setUint32(DECAY_OFFSET, decayMs, true);
        dv.setUint32(PREFETCH_OFFSET, Math.max(1, Math.round(prefetchAt * 1000)), true);
        dv.setUint32(LEASE_TIMEOUT_OFFSET, leaseTimeoutMs, true);
        dv.setUint32(TABLE_OFFSET_OFFSET, TABLE_OFFSET, true);
        Atomics.store(i32, WRITE_HEAD_OFFSET >> 2, -1);
        // Generations start at a random point: handles kept from an earlier store of this name
        // (its creator crashed, the name was created again) must not name this store's chunks.
        Atomics.store(i32, NEXT_GENERATION_OFFSET >> 2, randomBytes(4).readInt32LE(0));
      },
      { dir, mode: options.mode },
    );
    const store = new BlobStore(name, seg, true, dir, options.mode);
    creators.add(store);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', () => {
        for (const s of creators) s.close();
      });
    }
    return store;
  }

  /** Attaches to store `name` (its configuration is read from the control segment). */
  static attach(name: string, options: BlobAttachOptions = {}): BlobStore {
    checkStoreName(name);
    const dir = segmentDir(options?.dir);
    const seg = Segment.open(name, Kind.BLOB, { dir, readyTimeoutMs: options?.readyTimeoutMs ?? 0 });
    try {
      const dv = seg.views.dv;
      const protocol = dv.getUint32(PROTOCOL_OFFSET, true);
      if (protocol !== BLOB_PROTOCOL_VERSION)
        throw new ShmSegmentError(
          ErrorCode.VERSION_MISMATCH,
          `blob store ${JSON.stringify(name)} speaks protocol ${protocol}; this shmbus speaks ${BLOB_PROTOCOL_VERSION}`,
          { details: { name, protocol } },
        );
      const chunkSize = dv.getUint32(CHUNK_SIZE_OFFSET, true);
      const maxChunks = dv.getUint32(MAX_CHUNKS_OFFSET, true);
      const problems: string[] = [];
      if (chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE || chunkSize % 8 !== 0)
        problems.push(`chunkSize ${chunkSize}`);
      if (maxChunks < 1 || maxChunks > MAX_CHUNKS) problems.push(`maxChunks ${maxChunks}`);
      else if (controlLength(maxChunks) > seg.length) problems.push(`a ${maxChunks}-chunk table does not fit`);
      if (dv.getUint32(TABLE_OFFSET_OFFSET, true) !== TABLE_OFFSET) problems.push('table offset');
      const prefetch = dv.getUint32(PREFETCH_OFFSET, true);
      if (prefetch < 1 || prefetch > 1000) problems.push(`prefetch ${prefetch}`);
      if (problems.length > 0)
        throw new ShmSegmentError(
          ErrorCode.CORRUPT,
          `blob store ${JSON.stringify(name)} has corrupt parameters: ${problems.join('; ')}`,
          { details: { name, problems } },
        );
      const readOnly = options?.readOnly ?? false;
      if (typeof readOnly !== 'boolean')
        throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `readOnly must be a boolean, got ${typeof readOnly}`);
      return new BlobStore(name, seg, false, dir, undefined, readOnly);
    } catch (err) {
      seg.close();
      throw err;
    }
  }

  /**
   * Removes the files of store `name` after its creator died (SIGKILL, OOM). Returns how many
   * files it removed. SHM_ERR_BUSY if the creator is alive (nothing is touched).
   */
  static cleanupNamespace(name: string, options: BlobAttachOptions = {}): number {
    checkStoreName(name);
    const dir = segmentDir(options?.dir);
    const path = segmentPath(name, dir);
    let removed = 0;
    let existed = false;
    try {
      existed = readdirSync(dir).includes(FILE_PREFIX + name);
    } catch {}
    const owner = removeIfOwnerDead(path);
    if (owner !== null)
      throw new ShmStateError(
        ErrorCode.BUSY,
        `blob store ${JSON.stringify(name)} is in use: its creator (pid ${owner}) is alive`,
        { details: { name, path, ownerPid: owner } },
      );
    if (existed) removed++;
    removed += removeChunkFiles(dir, name);
    return removed;
  }

  // ---------------------------------------------------------------- state

  private assertOpen(): void {
    if (this.closedByUs)
      throw new ShmStateError(ErrorCode.CLOSED, `blob store ${JSON.stringify(this.name)}: closed here`);
  }

  private tableIndex(index: number, offset: number): number {
    return (TABLE_OFFSET + index * TABLE_ENTRY_LENGTH + offset) >> 2;
  }

  /** The entry's ChunkState (a CREATING word also carries its creator's pid above bit 3). */
  private stateOf(index: number): number {
    return Atomics.load(this.i32, this.tableIndex(index, ENTRY_STATE_OFFSET)) & 7;
  }

  private generationAt(index: number): number {
    return Atomics.load(this.i32, this.tableIndex(index, ENTRY_GENERATION_OFFSET)) >>> 0;
  }

  private casState(index: number, from: number, to: number): boolean {
    return Atomics.compareExchange(this.i32, this.tableIndex(index, ENTRY_STATE_OFFSET), from, to) === from;
  }

  private chunkPath(generation: number): string {
    return segmentPath(chunkName(this.name, generation), this.dir);
  }

  /** This process's mapping of chunk `index` at `generation`, or null when that chunk file is gone. */
  private mapChunk(index: number, generation: number): ChunkMapping | null {
    const current = this.mapped[index];
    if (current !== undefined) {
      if (current.generation === generation) return current;
      this.retire(current);
    }
    let seg: Segment;
    try {
      // readyTimeoutMs 0: a chunk gets its name only once complete, so a version word of 0
      // under that name is corruption, not a creation in progress (no waiting for it).
      seg = Segment.open(chunkName(this.name, generation), Kind.BLOB_CHUNK, { dir: this.dir, readyTimeoutMs: 0 });
    } catch (err) {
      if (err instanceof ShmError && err.code === ErrorCode.NOT_FOUND) return null;
      throw err;
    }
    const dv = seg.views.dv;
    if (
      dv.getUint32(CHUNK_PROTOCOL_OFFSET, true) !== BLOB_PROTOCOL_VERSION ||
      dv.getUint32(CHUNK_GENERATION_OFFSET, true) !== generation ||
      dv.getUint32(CHUNK_INDEX_OFFSET, true) !== index ||
      dv.getUint32(CHUNK_CAPACITY_OFFSET, true) !== this.capacity ||
      dv.getUint32(CHUNK_DATA_OFFSET_OFFSET, true) !== this.dataOffset ||
      seg.length < this.fileLength
    ) {
      seg.close();
      throw new ShmSegmentError(
        ErrorCode.CORRUPT,
        `chunk ${index} (generation ${generation}) of blob store ${JSON.stringify(this.name)} does not match its table entry`,
        { details: { name: this.name, index, generation } },
      );
    }
    // Only appenders write the data area: a read-only attacher cannot (a stray write faults here).
    if (this.readOnly) seg.protectReadOnly(this.dataOffset);
    return this.adopt(seg, index, generation);
  }

  private adopt(seg: Segment, index: number, generation: number): ChunkMapping {
    const m: ChunkMapping = {
      seg,
      index,
      generation,
      i32: seg.views.i32,
      u8: seg.views.u8,
      leases: 0,
      retired: false,
    };
    this.mapped[index] = m;
    return m;
  }

  /** Drops this process's mapping (now, or when its last local view is released). */
  private retire(m: ChunkMapping): void {
    if (this.mapped[m.index] === m) this.mapped[m.index] = undefined;
    m.retired = true;
    if (m.leases === 0) m.seg.close();
    else this.retiredLeased.add(m);
  }

  // ---------------------------------------------------------------- appending

  /**
   * Copies `bytes` into the active chunk and returns its handle. SHM_ERR_INVALID_ARGUMENT for
   * no bytes, SHM_ERR_TOO_LARGE for more than a chunk takes, SHM_ERR_FULL when a new chunk is
   * needed and maxChunks are alive (nothing is written), SHM_ERR_NO_SPACE when the directory
   * is full.
   */
  append(bytes: Uint8Array, options?: BlobAppendOptions): BlobHandle {
    this.assertOpen();
    if (this.readOnly)
      throw new ShmStateError(
        ErrorCode.INVALID_ARGUMENT,
        `blob store ${JSON.stringify(this.name)} is attached read-only here: append() is refused`,
      );
    if (!(bytes instanceof Uint8Array))
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `append() takes a Uint8Array, got ${typeof bytes}`);
    const recipients = options?.recipients ?? 1;
    checkRange('recipients', recipients, 1, MAX_RECIPIENTS);
    const length = bytes.length;
    if (length === 0) throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, 'an empty append is refused');
    const size = entrySize(length, recipients);
    if (size > this.capacity)
      throw new ShmFrameError(
        ErrorCode.TOO_LARGE,
        `${length} bytes (${size} with the entry header) do not fit a ${this.capacity}-byte chunk of blob store ${JSON.stringify(this.name)}`,
        { details: { length, chunkSize: this.capacity, maxAppend: this.maxAppend } },
      );
    const i32 = this.i32;
    for (let attempt = 0; attempt < 1000; attempt++) {
      // A plain read: the creator's close is seen at the next append at the latest.
      if (i32[STORE_CLOSED_OFFSET >> 2] !== 0)
        throw new ShmStateError(
          ErrorCode.PEER_CLOSED,
          `blob store ${JSON.stringify(this.name)} was closed by its creator`,
        );
      const head = Atomics.load(i32, WRITE_HEAD_OFFSET >> 2);
      if (head < 0 || head >= this.maxChunks) {
        this.rollForAppend(head, length);
        continue;
      }
      // Fast path: the head chunk as this process last mapped it; the checks after `writers`
      // (sealed, the chunk's own generation) prove it is still that chunk and still open.
      let m = attempt === 0 ? this.mapped[head] : undefined;
      const fast = m !== undefined;
      let generation: number;
      if (m !== undefined) generation = m.generation;
      else {
        generation = this.generationAt(head);
        if (this.stateOf(head) !== ChunkState.ACTIVE) {
          // The head names a chunk that was retired (TTL) and not yet replaced.
          this.rollForAppend(head, length);
          continue;
        }
        const mapped = this.mapChunk(head, generation);
        if (mapped === null) continue;
        m = mapped;
      }
      const c = m.i32;
      // SYNC POINT: pairs with cleanup(), which reads `writers` after it saw the table say
      // SEALED (stored after `sealed`): either we see sealed = 1 or cleanup sees us writing.
      Atomics.add(c, WRITERS_OFFSET >> 2, 1);
      let offset = -1;
      // A recycled chunk reopens under a new generation (recycle()): not the one we looked up.
      if (
        Atomics.load(c, SEALED_OFFSET >> 2) === 0 &&
        Atomics.load(c, CHUNK_GENERATION_OFFSET >> 2) >>> 0 === generation
      ) {
        let used = Atomics.load(c, USED_OFFSET >> 2);
        // (A negative `used` is corruption: such a chunk takes nothing.)
        while (used >= 0 && used + size <= this.capacity) {
          const seen = Atomics.compareExchange(c, USED_OFFSET >> 2, used, used + size);
          if (seen === used) {
            offset = used;
            break;
          }
          used = seen;
        }
      }
      if (offset < 0) {
        Atomics.sub(c, WRITERS_OFFSET >> 2, 1);
        if (!fast) this.rollForAppend(head, length);
        continue;
      }
      if (STOP_AT !== null) stopAt('blob.after-reserve');
      const at = this.dataOffset + offset;
      const dv = m.seg.views.dv;
      dv.setUint32(at + ENTRY_LENGTH_OFFSET, length, true);
      dv.setUint32(at + ENTRY_CHECK_OFFSET, entryCheck(generation, offset, length), true);
      dv.setUint32(at + ENTRY_RECIPIENTS_OFFSET, recipients, true);
      dv.setUint32(at + ENTRY_RECIPIENTS_OFFSET + 4, 0, true);
      // The entry's ACK words (a recycled chunk holds old ones): the bitmap, or `remaining`
      // then the bitmap.
      const ack = ackIndex(offset) >> 2;
      if (recipients <= SMALL_RECIPIENTS) c[ack] = 0;
      else {
        c[ack] = recipients;
        for (let w = 1, words = ackWords(recipients); w < words; w++) c[ack + w] = 0;
      }
      if (STOP_AT !== null) stopAt('blob.mid-copy');
      m.u8.set(bytes, at + ENTRY_HEADER_LENGTH);
      // A plain read: a stale 0 only costs a compare-and-swap that fails.
      // One clock read per append (~50 ns): the handle's timestamp and the chunk's stamps.
      const nowMs = Date.now();
      const now = nowMs >>> 0 || 1;
      if (c[FIRST_WRITE_OFFSET >> 2] === 0) Atomics.compareExchange(c, FIRST_WRITE_OFFSET >> 2, 0, now | 0);
      // The newest entry's time, kept monotonic against a racing appender (the TTL frees a
      // chunk only once its newest entry expired).
      // (A plain first read: usually the same millisecond, no atomic at all; a stale value only
      // costs a compare-and-swap that fails and returns the real one.)
      for (let last = c[LAST_WRITE_OFFSET >> 2]; ((now - last) | 0) > 0 || last === 0; ) {
        const seen = Atomics.compareExchange(c, LAST_WRITE_OFFSET >> 2, last, now | 0);
        if (seen === last) break;
        last = seen;
      }
      if (STOP_AT !== null) stopAt('blob.before-count');
      // SYNC POINT: the entry's bytes above are complete before it counts; the handle travels
      // to readers through some other synchronising channel after this.
      Atomics.add(c, ENTRIES_OFFSET >> 2, 1);
      Atomics.sub(c, WRITERS_OFFSET >> 2, 1);
      // A TTL cleanup may free a chunk under a stalled appender: then this entry is lost with
      // it, so write it again elsewhere rather than hand out a handle that resolves to null.
      const state = this.stateOf(head);
      if (this.generationAt(head) !== generation || (state !== ChunkState.ACTIVE && state !== ChunkState.SEALED))
        continue;
      if (++this.unpublishedAppends === 64) this.publishAppends();
      // Only the append that crosses the threshold (reservations are contiguous) looks.
      if (offset < this.prefetchBytes && offset + size >= this.prefetchBytes) this.prefetch();
      return new BlobHandle(head, offset, length, generation, nowMs);
    }
    throw new ShmStateError(
      ErrorCode.BUSY,
      `append to blob store ${JSON.stringify(this.name)} kept losing races for 1000 attempts`,
    );
  }

  /** Adds this process's completed appends to the shared counter (batched: one atomic per 64). */
  private publishAppends(): void {
    if (this.unpublishedAppends === 0) return;
    Atomics.add(this.i32, APPENDS_OFFSET >> 2, this.unpublishedAppends);
    this.unpublishedAppends = 0;
  }

  private rollForAppend(head: number, length: number): void {
    try {
      this.roll(head, length);
    } catch (err) {
      if (err instanceof ShmError && err.code === ErrorCode.FULL) Atomics.add(this.i32, FULL_OFFSET >> 2, 1);
      throw err;
    }
  }

  /**
   * Moves the write head on from `head` (full, sealed or retired): to a prefetched chunk if
   * there is one, else to a new one. Seals `head` once the head has moved. Losing the race to
   * another roller is fine (the caller retries).
   */
  private roll(head: number, length: number): void {
    let next = this.takeReady();
    if (next < 0) {
      try {
        next = this.createChunk(ChunkState.ACTIVE, length);
      } catch (err) {
        // Every chunk is in use; the head itself may be done with (all its entries acknowledged
        // or expired): then it is freed or recycled here, else this stays SHM_ERR_FULL.
        if (!(err instanceof ShmError && err.code === ErrorCode.FULL) || !this.freeHeadForReuse(head)) throw err;
        next = this.takeReady();
        if (next < 0) next = this.createChunk(ChunkState.ACTIVE, length);
      }
    }
    // The head chunk itself was recycled and taken again: the write head already names it.
    if (next === head) return;
    if (Atomics.compareExchange(this.i32, WRITE_HEAD_OFFSET >> 2, head, next) !== head) {
      // Another process moved the head first: keep ours as the prefetched chunk.
      this.casState(next, ChunkState.ACTIVE, ChunkState.READY);
      return;
    }
    if (head < 0 || head >= this.maxChunks) return;
    const generation = this.generationAt(head);
    const m = this.stateOf(head) === ChunkState.ACTIVE ? this.mapChunk(head, generation) : null;
    // SYNC POINT: `sealed` before the table says SEALED (see append()).
    if (m !== null) Atomics.store(m.i32, SEALED_OFFSET >> 2, 1);
    this.casState(head, ChunkState.ACTIVE, ChunkState.SEALED);
  }

  /**
   * The write head's chunk when no other chunk can be had (maxChunks in use, e.g. maxChunks 1):
   * if it could be freed now (every entry acknowledged and decayMs passed, or expired; no
   * appender inside; no view), seal it and let tryFree() free or recycle it. True if it is gone.
   * Otherwise it stays the active chunk, untouched: it may still take smaller entries.
   */
  private freeHeadForReuse(head: number): boolean {
    if (head < 0 || head >= this.maxChunks) return false;
    const state = this.stateOf(head);
    if (state === ChunkState.ACTIVE) {
      const m = this.mapChunk(head, this.generationAt(head));
      if (m === null) return false;
      const c = m.i32;
      // Sealed only if it can be freed now (so the active chunk is never left sealed waiting):
      // no appender inside, no live lease, every entry acknowledged (then after decayMs) or expired.
      const leased =
        Atomics.load(c, LEASES_OFFSET >> 2) > 0 &&
        ageOf(Atomics.load(c, LAST_LEASE_OFFSET >> 2) >>> 0) < this.leaseTimeoutMs;
      const expired = this.expiredChunk(head, m);
      const acked = Atomics.load(c, ACKED_OFFSET >> 2) >= Atomics.load(c, ENTRIES_OFFSET >> 2);
      if (!acked) Atomics.store(c, EMPTY_SINCE_OFFSET >> 2, 0);
      // An appender inside keeps it, unless the TTL says it is gone (see expiredChunk()).
      if ((Atomics.load(c, WRITERS_OFFSET >> 2) !== 0 && !expired) || leased || !(acked || expired)) return false;
      if (!expired && this.decayMs > 0) {
        if (Atomics.load(c, EMPTY_SINCE_OFFSET >> 2) === 0)
          Atomics.compareExchange(c, EMPTY_SINCE_OFFSET >> 2, 0, stamp() | 0);
        if (ageOf(Atomics.load(c, EMPTY_SINCE_OFFSET >> 2) >>> 0) < this.decayMs) return false;
      }
      // SYNC POINT: `sealed` before the table says SEALED (see append()).
      Atomics.store(c, SEALED_OFFSET >> 2, 1);
      this.casState(head, ChunkState.ACTIVE, ChunkState.SEALED);
    }
    return this.stateOf(head) === ChunkState.SEALED && this.tryFree(head);
  }

  /** A generation no chunk of this store had (0 is skipped: a table entry never used has it). */
  private nextGeneration(): number {
    for (;;) {
      const generation = (Atomics.add(this.i32, NEXT_GENERATION_OFFSET >> 2, 1) + 1) >>> 0;
      if (generation !== 0) return generation;
    }
  }

  /** Takes a prefetched chunk (READY -> ACTIVE); -1 if there is none. */
  private takeReady(): number {
    for (let i = 0; i < this.maxChunks; i++)
      if (this.stateOf(i) === ChunkState.READY && this.casState(i, ChunkState.READY, ChunkState.ACTIVE)) return i;
    return -1;
  }

  private hasReady(): boolean {
    return this.readyCount() > 0;
  }

  private readyCount(): number {
    let n = 0;
    for (let i = 0; i < this.maxChunks; i++) if (this.stateOf(i) === ChunkState.READY) n++;
    return n;
  }

  /** Creates the next chunk ahead of need, once, by one process at a time. Never throws. */
  private prefetch(): void {
    if (this.hasReady()) return;
    const flag = PREFETCHING_OFFSET >> 2;
    const seen = Atomics.load(this.i32, flag);
    if (seen !== 0 && ageOf(seen >>> 0) < PREFETCH_STALE_MS) return;
    if (Atomics.compareExchange(this.i32, flag, seen, stamp() | 0) !== seen) return;
    try {
      // A sealed chunk that can be freed now becomes the prefetched one (recycle()): cheaper
      // than a new file.
      for (let i = 0; i < this.maxChunks && !this.hasReady(); i++)
        if (this.stateOf(i) === ChunkState.SEALED) this.tryFree(i);
      if (!this.hasReady()) this.createChunk(ChunkState.READY, 0);
    } catch {
      // A prefetch that cannot be done now (full, no space) is retried by the append that needs it.
    } finally {
      Atomics.store(this.i32, flag, 0);
    }
  }

  /** Creates a chunk file in a free table entry, in state `state`. SHM_ERR_FULL when none is free. */
  private createChunk(state: number, length: number): number {
    // The claim names its creator in the same atomic step (pid above bit 3), so a cleanup in
    // another process never sees a CREATING entry without knowing whose it is.
    const claim = (process.pid << 3) | ChunkState.CREATING;
    const start = selfStartTime() | 0;
    let index = -1;
    for (let i = 0; i < this.maxChunks; i++)
      if (this.stateOf(i) === ChunkState.FREE && this.casState(i, ChunkState.FREE, claim)) {
        index = i;
        break;
      }
    if (index < 0)
      throw new ShmStateError(
        ErrorCode.FULL,
        `blob store ${JSON.stringify(this.name)} is full: all ${this.maxChunks} chunks are in use (acknowledge and clean up, or raise maxChunks)`,
        { details: { name: this.name, maxChunks: this.maxChunks, length } },
      );
    const i32 = this.i32;
    const generation = this.nextGeneration();
    Atomics.store(i32, this.tableIndex(index, ENTRY_CREATOR_START_OFFSET), start);
    Atomics.store(i32, this.tableIndex(index, ENTRY_CREATOR_PID_OFFSET), process.pid);
    Atomics.store(i32, this.tableIndex(index, ENTRY_CREATED_OFFSET), stamp() | 0);
    Atomics.store(i32, this.tableIndex(index, ENTRY_GENERATION_OFFSET), generation | 0);
    if (STOP_AT !== null) stopAt('blob.chunk-claimed');
    let seg: Segment;
    try {
      seg = Segment.create(
        chunkName(this.name, generation),
        Kind.BLOB_CHUNK,
        this.fileLength,
        CHUNK_PARAMS_LENGTH,
        ({ dv }) => {
          dv.setUint32(CHUNK_PROTOCOL_OFFSET, BLOB_PROTOCOL_VERSION, true);
          dv.setUint32(CHUNK_GENERATION_OFFSET, generation, true);
          dv.setUint32(CHUNK_INDEX_OFFSET, index, true);
          dv.setUint32(CHUNK_CAPACITY_OFFSET, this.capacity, true);
          dv.setUint32(CHUNK_DATA_OFFSET_OFFSET, this.dataOffset, true);
        },
        { dir: this.dir, mode: this.mode },
      );
    } catch (err) {
      this.casState(index, claim, ChunkState.FREE);
      throw err;
    }
    if (STOP_AT !== null) stopAt('blob.chunk-created');
    // SYNC POINT: the file exists (and the generation is stored) before the state says so.
    // A compare-and-swap: if a cleanup wrongly took the entry back, the file is ours to drop.
    if (!this.casState(index, claim, state)) {
      seg.close();
      try {
        unlinkSync(this.chunkPath(generation));
      } catch {}
      return this.createChunk(state, length);
    }
    const old = this.mapped[index];
    if (old !== undefined) this.retire(old);
    this.adopt(seg, index, generation);
    return index;
  }

  // ---------------------------------------------------------------- reading

  /** The mapping and entry position named by `h`, or null if the handle names no live entry. */
  private locate(h: BlobHandle): { m: ChunkMapping; at: number; header: number } | null {
    if (!(h instanceof BlobHandle))
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        'expected a BlobHandle (BlobHandle.fromBytes() makes one)',
      );
    const { chunk, offset, size, generation } = h;
    if (!Number.isInteger(chunk) || chunk < 0 || chunk >= this.maxChunks) return null;
    if (!Number.isInteger(offset) || offset < 0 || offset % 8 !== 0 || size < 1) return null;
    if (!this.live(chunk, generation)) return null;
    const m = this.mapChunk(chunk, generation);
    if (m === null) return null;
    // `used` is shared memory: never trust it beyond the chunk's own size.
    const used = Math.min(Atomics.load(m.i32, USED_OFFSET >> 2) >>> 0, this.capacity);
    if (offset + ENTRY_HEADER_LENGTH > used) return null;
    const at = this.dataOffset + offset;
    const dv = m.seg.views.dv;
    const recipients = dv.getUint32(at + ENTRY_RECIPIENTS_OFFSET, true);
    if (
      dv.getUint32(at + ENTRY_LENGTH_OFFSET, true) !== size ||
      dv.getUint32(at + ENTRY_CHECK_OFFSET, true) !== entryCheck(generation, offset, size) ||
      recipients < 1 ||
      recipients > MAX_RECIPIENTS ||
      offset + entrySize(size, recipients) > used
    )
      return null;
    return { m, at, header: ENTRY_HEADER_LENGTH };
  }

  private live(chunk: number, generation: number): boolean {
    const state = this.stateOf(chunk);
    return (
      this.generationAt(chunk) === generation >>> 0 && (state === ChunkState.ACTIVE || state === ChunkState.SEALED)
    );
  }

  private expired(h: BlobHandle): boolean {
    return Date.now() - h.timestamp > this.ttlMs;
  }

  /** A copy of the blob, or null if it expired, was freed, or `h` names no entry. Never wrong bytes. */
  resolve(h: BlobHandle): Uint8Array | null {
    this.assertOpen();
    if (this.expired(h)) return null;
    const where = this.locate(h);
    if (where === null) return null;
    const start = where.at + where.header;
    const copy = where.m.u8.slice(start, start + h.size);
    // Freed during the copy: the bytes came from a dead chunk, report it gone.
    return this.live(h.chunk, h.generation) ? copy : null;
  }

  /**
   * The blob in place, under a lease: cleanup does not free its chunk until release() (or
   * until leaseTimeoutMs). Null like resolve().
   */
  view(h: BlobHandle): BlobView | null {
    this.assertOpen();
    if (this.expired(h)) return null;
    const where = this.locate(h);
    if (where === null) return null;
    const { m } = where;
    const c = m.i32;
    // SYNC POINT: pairs with cleanup(), which reads `leases` after it took the chunk to
    // FREEING: either it sees our lease or we see the chunk going.
    Atomics.add(c, LEASES_OFFSET >> 2, 1);
    Atomics.store(c, LAST_LEASE_OFFSET >> 2, stamp() | 0);
    if (!this.live(h.chunk, h.generation)) {
      Atomics.sub(c, LEASES_OFFSET >> 2, 1);
      return null;
    }
    m.leases++;
    if (STOP_AT !== null) stopAt('blob.holding-view');
    const start = where.at + where.header;
    return new BlobView(m.u8.subarray(start, start + h.size), () => this.releaseLease(m));
  }

  private releaseLease(m: ChunkMapping): void {
    if (!m.seg.closed) Atomics.sub(m.i32, LEASES_OFFSET >> 2, 1);
    m.leases--;
    if (m.retired && m.leases === 0) {
      this.retiredLeased.delete(m);
      m.seg.close();
    }
  }

  /**
   * Acknowledges the blob for `recipient` (0..recipients-1). True when this call counted;
   * false for a repeated acknowledgement or a handle that names no live entry.
   */
  ack(h: BlobHandle, recipient = 0): boolean {
    this.assertOpen();
    const where = this.locate(h);
    if (where === null) return false;
    const { m, at } = where;
    const recipients = m.seg.views.dv.getUint32(at + ENTRY_RECIPIENTS_OFFSET, true);
    if (!Number.isInteger(recipient) || recipient < 0 || recipient >= recipients)
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        `recipient must be an integer in 0..${recipients - 1} for this blob, got ${recipient}`,
      );
    const ack = ackIndex(at - this.dataOffset) >> 2;
    const bit = 1 << (recipient & 31);
    // The bit makes a repeated acknowledgement count nothing, from any process; the one that
    // completes the entry (the last bit, or `remaining` reaching 0) counts it acknowledged.
    if (recipients <= SMALL_RECIPIENTS) {
      const before = Atomics.or(m.i32, ack, bit);
      if ((before & bit) !== 0) return false;
      if ((before | bit) === fullMask(recipients)) Atomics.add(m.i32, ACKED_OFFSET >> 2, 1);
      return true;
    }
    if ((Atomics.or(m.i32, ack + 1 + (recipient >>> 5), bit) & bit) !== 0) return false;
    if (Atomics.sub(m.i32, ack, 1) === 1) Atomics.add(m.i32, ACKED_OFFSET >> 2, 1);
    return true;
  }

  /** True when every recipient of `h` acknowledged it; false otherwise or when `h` names no live entry. */
  isAcknowledged(h: BlobHandle): boolean {
    this.assertOpen();
    const where = this.locate(h);
    if (where === null) return false;
    const { m, at } = where;
    const recipients = m.seg.views.dv.getUint32(at + ENTRY_RECIPIENTS_OFFSET, true);
    const ack = Atomics.load(m.i32, ackIndex(at - this.dataOffset) >> 2);
    return recipients <= SMALL_RECIPIENTS ? ack === fullMask(recipients) : ack <= 0;
  }

  // ---------------------------------------------------------------- freeing

  /**
   * Frees what can be freed now: sealed chunks whose entries every recipient acknowledged
   * (after decayMs) and chunks whose oldest entry is older than ttlMs (an active one is
   * retired first). Returns how many chunks it freed. Any process may run it.
   */
  cleanup(): number {
    this.assertOpen();
    let freed = 0;
    let failure: unknown = null;
    for (let i = 0; i < this.maxChunks; i++) {
      // One chunk whose file is corrupt must not stop the others from being cleaned.
      try {
        const state = this.stateOf(i);
        if (state === ChunkState.CREATING) this.reclaimCreating(i);
        else if (state === ChunkState.FREEING) this.reclaimFreeing(i);
        else if (state === ChunkState.ACTIVE) this.retireIfExpired(i);
        if (this.stateOf(i) === ChunkState.SEALED && this.tryFree(i)) freed++;
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== null) throw failure; // the others were cleaned; the corrupt one is reported
    return freed;
  }

  private firstWriteAge(m: ChunkMapping): number {
    const first = Atomics.load(m.i32, FIRST_WRITE_OFFSET >> 2) >>> 0;
    return first === 0 ? -1 : ageOf(first);
  }

  /**
   * True when everything in the chunk is older than the TTL: its newest entry; or, when no
   * entry was ever completed but an appender reserved bytes, the chunk itself (an appender
   * killed between its reservation and its completion leaves `writers` above 0 and no entry
   * for ever; without this its chunk could never be freed). A live appender that is that slow
   * finds its chunk gone when it completes and writes its entry again elsewhere (append()).
   */
  private expiredChunk(index: number, m: ChunkMapping): boolean {
    const last = Atomics.load(m.i32, LAST_WRITE_OFFSET >> 2) >>> 0;
    if (last !== 0) return ageOf(last) > this.ttlMs;
    if (Atomics.load(m.i32, WRITERS_OFFSET >> 2) <= 0) return false;
    return ageOf(Atomics.load(this.i32, this.tableIndex(index, ENTRY_CREATED_OFFSET)) >>> 0) > this.ttlMs;
  }

  /** An active chunk whose oldest entry is older than the TTL takes no more entries: the head moves on. */
  private retireIfExpired(index: number): void {
    const generation = this.generationAt(index);
    const m = this.mapChunk(index, generation);
    if (m === null) return;
    const notHead = Atomics.load(this.i32, WRITE_HEAD_OFFSET >> 2) !== index;
    // Active, not the head and never written, for longer than the TTL: a roller died (or
    // stalls) between taking it (READY -> ACTIVE) and moving the head to it. Nothing new can
    // reach it: seal it to be freed. (A stalled roller that moves the head to it later finds
    // it sealed and rolls again; an appender still inside completes its entry in the sealed
    // chunk, which tryFree() keeps while `writers` says so, or until the TTL. `writers` is not
    // asked here: a writer killed inside an earlier generation of a recycled chunk leaves it
    // above 0 for good.)
    const orphan =
      notHead &&
      Atomics.load(m.i32, FIRST_WRITE_OFFSET >> 2) === 0 &&
      ageOf(Atomics.load(this.i32, this.tableIndex(index, ENTRY_CREATED_OFFSET)) >>> 0) > this.ttlMs;
    if (!orphan && this.firstWriteAge(m) <= this.ttlMs) return;
    if (notHead) {
      // Active but no longer the head (a roller between its two steps): seal it.
      Atomics.store(m.i32, SEALED_OFFSET >> 2, 1);
      if (this.casState(index, ChunkState.ACTIVE, ChunkState.SEALED) && orphan)
        this.reportRecovered('a chunk activated and never made the head', 0);
      return;
    }
    try {
      this.roll(index, 0);
    } catch {
      // No chunk to move to (full): the expired chunk stays active until one is freed.
    }
  }

  /**
   * A FREEING entry whose freer died between taking it (SEALED -> FREEING, or a dead creator's
   * CREATING -> FREEING) and releasing it (FREE, or READY when recycled): remove the chunk's
   * file and free the entry. The state word names the freer (FREEING | pid << 3); only a pid
   * with no process at all counts as dead (a reused pid leaves the entry alone, never frees it
   * under a live freer). A freer killed inside recycle() between renaming the file and
   * recording the new generation leaves that file under a name the table does not know: it
   * goes with the store (creator's close, cleanupNamespace, shmbus clean once the store is gone).
   */
  private reclaimFreeing(index: number): void {
    const word = Atomics.load(this.i32, this.tableIndex(index, ENTRY_STATE_OFFSET));
    if ((word & 7) !== ChunkState.FREEING) return;
    const pid = word >>> 3;
    if (pid === 0 || pid === process.pid || processStartTime(pid) >= 0) return;
    if (!this.casState(index, word, this.freeingWord)) return;
    this.removeChunk(index, this.generationAt(index));
    this.reportRecovered('a chunk left freeing', pid);
  }

  /** Removes the file of the chunk being freed (FREEING, ours), drops our mapping, frees the entry. */
  private removeChunk(index: number, generation: number): void {
    try {
      unlinkSync(this.chunkPath(generation));
    } catch {}
    const current = this.mapped[index];
    if (current !== undefined && current.generation === generation) this.retire(current);
    Atomics.store(this.i32, this.tableIndex(index, ENTRY_STATE_OFFSET), ChunkState.FREE);
  }

  private reportRecovered(what: string, pid: number): void {
    if (diagnostics.recovered.hasSubscribers)
      diagnostics.recovered.publish({ primitive: 'blob', name: this.name, what, count: 1, pid });
  }

  /** A CREATING entry whose creator died mid-creation: remove its file, free the entry. */
  private reclaimCreating(index: number): void {
    const word = Atomics.load(this.i32, this.tableIndex(index, ENTRY_STATE_OFFSET));
    if ((word & 7) !== ChunkState.CREATING) return;
    const pid = word >>> 3;
    const now = processStartTime(pid);
    // The start time is written just after the claim: until then a live pid counts as the creator.
    if (now >= 0) {
      const start = Atomics.load(this.i32, this.tableIndex(index, ENTRY_CREATOR_START_OFFSET));
      const claimedBy = Atomics.load(this.i32, this.tableIndex(index, ENTRY_CREATOR_PID_OFFSET));
      if (claimedBy !== pid || start === (now | 0)) return; // alive (or not yet fully named): still creating
    }
    const generation = this.generationAt(index);
    if (!this.casState(index, word, this.freeingWord)) return;
    removeIfOwnerDead(this.chunkPath(generation));
    // A creator killed inside Segment.create() leaves its temporary file (`name~pid.random`).
    const prefix = pendingPrefix(chunkName(this.name, generation));
    try {
      for (const entry of readdirSync(this.dir)) if (entry.startsWith(prefix)) removeIfOwnerDead(join(this.dir, entry));
    } catch {}
    Atomics.store(this.i32, this.tableIndex(index, ENTRY_STATE_OFFSET), ChunkState.FREE);
    this.reportRecovered('a chunk left creating', pid);
  }

  private tryFree(index: number): boolean {
    const generation = this.generationAt(index);
    const m = this.mapChunk(index, generation);
    let ttl = false;
    if (m !== null) {
      const c = m.i32;
      // Every entry expired (resolve() already returns null for all of them).
      ttl = this.expiredChunk(index, m);
      if (!ttl) {
        if (Atomics.load(c, WRITERS_OFFSET >> 2) > 0) return false;
        // Sealed and no appender inside: `entries` is final (an empty chunk counts as acknowledged).
        if (Atomics.load(c, ACKED_OFFSET >> 2) < Atomics.load(c, ENTRIES_OFFSET >> 2)) {
          Atomics.store(c, EMPTY_SINCE_OFFSET >> 2, 0);
          return false;
        }
        let since = Atomics.load(c, EMPTY_SINCE_OFFSET >> 2) >>> 0;
        if (since === 0) {
          since = stamp();
          Atomics.compareExchange(c, EMPTY_SINCE_OFFSET >> 2, 0, since | 0);
          since = Atomics.load(c, EMPTY_SINCE_OFFSET >> 2) >>> 0;
        }
        if (ageOf(since) < this.decayMs) return false;
      }
    }
    if (!this.casState(index, ChunkState.SEALED, this.freeingWord)) return false;
    if (m !== null) {
      const leases = Atomics.load(m.i32, LEASES_OFFSET >> 2);
      const lastLease = Atomics.load(m.i32, LAST_LEASE_OFFSET >> 2) >>> 0;
      if (leases > 0 && ageOf(lastLease) < this.leaseTimeoutMs) {
        Atomics.store(this.i32, this.tableIndex(index, ENTRY_STATE_OFFSET), ChunkState.SEALED);
        return false;
      }
    }
    Atomics.add(this.i32, FREED_OFFSET >> 2, 1);
    if (ttl) Atomics.add(this.i32, EXPIRED_OFFSET >> 2, 1);
    if (m !== null && this.recycle(m)) return true;
    this.removeChunk(index, generation);
    return true;
  }

  /**
   * Turns a chunk being freed (FREEING, ours to change) into a prefetched chunk instead of
   * removing it, when fewer than SPARE_CHUNKS are prefetched, no appender is inside and
   * no view holds it: its file is renamed to a new generation's name (the old name is gone,
   * so the old generation's handles resolve to null everywhere), its counters restart, and
   * its pages stay allocated and mapped, so the appends that fill it next do not pay for
   * creating, zeroing and faulting in a new file. False when it must be removed instead.
   */
  private recycle(m: ChunkMapping): boolean {
    const c = m.i32;
    if (
      this.readyCount() >= SPARE_CHUNKS ||
      Atomics.load(c, WRITERS_OFFSET >> 2) !== 0 ||
      Atomics.load(c, LEASES_OFFSET >> 2) !== 0
    )
      return false;
    const i32 = this.i32;
    const oldGeneration = m.generation;
    const generation = this.nextGeneration();
    try {
      renameSync(this.chunkPath(oldGeneration), this.chunkPath(generation));
    } catch {
      return false;
    }
    // SYNC POINT: the chunk's own generation moves before `sealed` reopens it, so an appender
    // that still held the old generation and finds sealed = 0 sees the new generation and backs
    // off (append() checks it). `writers` and `leases` are never reset: late decrements by
    // appenders or views of the old generation keep them balanced.
    Atomics.store(c, CHUNK_GENERATION_OFFSET >> 2, generation | 0);
    Atomics.store(c, USED_OFFSET >> 2, 0);
    Atomics.store(c, ENTRIES_OFFSET >> 2, 0);
    Atomics.store(c, ACKED_OFFSET >> 2, 0);
    Atomics.store(c, FIRST_WRITE_OFFSET >> 2, 0);
    Atomics.store(c, LAST_WRITE_OFFSET >> 2, 0);
    Atomics.store(c, EMPTY_SINCE_OFFSET >> 2, 0);
    m.generation = generation;
    Atomics.store(i32, this.tableIndex(m.index, ENTRY_CREATOR_PID_OFFSET), process.pid);
    Atomics.store(i32, this.tableIndex(m.index, ENTRY_CREATOR_START_OFFSET), selfStartTime() | 0);
    Atomics.store(i32, this.tableIndex(m.index, ENTRY_CREATED_OFFSET), stamp() | 0);
    Atomics.store(i32, this.tableIndex(m.index, ENTRY_GENERATION_OFFSET), generation | 0);
    Atomics.store(c, SEALED_OFFSET >> 2, 0);
    // SYNC POINT: READY last: a roller that takes it finds the file under its new name.
    Atomics.store(i32, this.tableIndex(m.index, ENTRY_STATE_OFFSET), ChunkState.READY);
    return true;
  }

  /** Runs cleanup() every `intervalMs` (an unref'd timer: it does not keep the process alive). */
  startCleanup(intervalMs: number): void {
    this.assertOpen();
    checkRange('intervalMs', intervalMs, 1, MAX_MS);
    this.stopCleanup();
    this.timer = setInterval(() => {
      try {
        this.cleanup();
      } catch {
        // A failing cleanup (e.g. a chunk file corrupted by another process) is retried next tick.
      }
    }, intervalMs);
    this.timer.unref();
  }

  stopCleanup(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  // ---------------------------------------------------------------- inspection

  /** Paths of the chunk files alive now, per the control table. */
  chunkFiles(): string[] {
    this.assertOpen();
    const out: string[] = [];
    for (let i = 0; i < this.maxChunks; i++) {
      const state = this.stateOf(i);
      if (state === ChunkState.READY || state === ChunkState.ACTIVE || state === ChunkState.SEALED)
        out.push(this.chunkPath(this.generationAt(i)));
    }
    return out;
  }

  stats(): BlobStoreStats {
    this.assertOpen();
    let chunks = 0;
    for (let i = 0; i < this.maxChunks; i++) if (this.stateOf(i) !== ChunkState.FREE) chunks++;
    this.publishAppends();
    const i32 = this.i32;
    return {
      chunks,
      active: Atomics.load(i32, WRITE_HEAD_OFFSET >> 2),
      appends: Atomics.load(i32, APPENDS_OFFSET >> 2) >>> 0,
      freed: Atomics.load(i32, FREED_OFFSET >> 2) >>> 0,
      expired: Atomics.load(i32, EXPIRED_OFFSET >> 2) >>> 0,
      full: Atomics.load(i32, FULL_OFFSET >> 2) >>> 0,
    };
  }

  /**
   * Closes this process's side. The creator's close removes every file of the store (other
   * processes' mappings stay readable until they close; their appends then fail with
   * SHM_ERR_PEER_CLOSED); an attacher's close removes nothing. Idempotent.
   */
  close(): void {
    if (this.closedByUs) return;
    this.closedByUs = true;
    this.stopCleanup();
    this.publishAppends();
    creators.delete(this);
    if (this.isCreator) {
      Atomics.store(this.i32, STORE_CLOSED_OFFSET >> 2, 1);
      for (let i = 0; i < this.maxChunks; i++)
        if (this.stateOf(i) !== ChunkState.FREE)
          try {
            unlinkSync(this.chunkPath(this.generationAt(i)));
          } catch {}
      removeChunkFiles(this.dir, this.name);
      this.control.unlinkIfCurrent();
    }
    for (const m of this.mapped) m?.seg.close();
    for (const m of this.retiredLeased) m.seg.close();
    this.retiredLeased.clear();
    this.mapped.fill(undefined);
    this.control.close();
  }
}

/** Removes every chunk file (and half-created one) of store `name` in `dir`. Returns how many. */
function removeChunkFiles(dir: string, name: string): number {
  const pattern = chunkFilePattern(name);
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const entry of entries)
    if (pattern.test(entry))
      try {
        unlinkSync(join(dir, entry));
        removed++;
      } catch {}
  return removed;
}
