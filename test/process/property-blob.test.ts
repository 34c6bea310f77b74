/**
 * Property-based test of the blob store (blob/store.ts) against a reference model, in this
 * process (the store needs the addon, hence test/process/). fast-check generates a store
 * (chunkSize 128..520, maxChunks 1..4, prefetchAt 0.25..1, ttlMs one hour, decayMs 0) and up to
 * 50 operations: appends of random sizes (empty, small, up to and past what a chunk takes) for
 * 1, 2, 32 or 33 recipients, acks (valid, repeated, recipient out of range), views and their
 * release (sometimes twice), cleanup, resolve of any handle ever issued, and forged handles
 * (fromBytes of a handle's 24 bytes with one field changed).
 *
 * The model knows every entry (its bytes, recipients, acknowledgements and chunk generation),
 * which chunk is active (the last append's), the bytes used in it, and the views held. A chunk
 * is FREEABLE when it is not the active one, every entry in it is acknowledged by every
 * recipient and no view of it is held. After every step:
 * - resolve/view of every handle give exactly its bytes, or null only once its chunk was
 *   freed; a chunk is freed only by cleanup() or append() and only if freeable then, and
 *   cleanup() frees every freeable chunk (decayMs 0) and returns how many it freed;
 * - a held view's bytes never change;
 * - ack(h, r) is true exactly once per (handle, recipient) while the entry lives, and
 *   isAcknowledged(h) says whether all of them acked;
 * - append lands where the model says: in the active chunk right after the last entry while it
 *   fits, else at offset 0 of a chunk no handle named before; it fails with SHM_ERR_FULL exactly
 *   when it needs a new chunk, none is prefetched and maxChunks are alive, and then leaves the
 *   store as it was (stats().appends, files); SHM_ERR_TOO_LARGE exactly when
 *   entrySize(length, recipients) > chunkSize; SHM_ERR_INVALID_ARGUMENT for no bytes;
 * - a forged handle resolves to null or to the bytes of the issued entry it still names, and
 *   never throws;
 * - the files of the store in its directory are exactly the control file and chunkFiles(), at
 *   most maxChunks chunk files, and chunkFiles() lists every live chunk of the model.
 * At the end, once every entry is acknowledged and every view released, cleanup() leaves only
 * the active chunk and an append of the largest payload succeeds (with maxChunks 1 too: the
 * done active chunk is reused); close() removes every file.
 *
 * Replay a failure with the seed printed in its message: SHMBUS_SEED=<seed> node --test ...
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { BlobHandle, BlobStore, type BlobView, ErrorCode, ShmError } from '../../src/index.js';
import { fillFrame } from '../helpers/prng.js';
import { assertProperty, firstDifference } from '../helpers/property-run.js';

const dir = mkdtempSync('/dev/shm/shmbus-property-blob-');
after(() => rmSync(dir, { recursive: true, force: true }));

const TTL_MS = 3_600_000;
/** Byte offsets of the handle's fields (layout/blob.ts). */
const FIELD_OFFSETS = { chunk: 0, offset: 4, size: 8, generation: 12, timestamp: 16 } as const;
type Field = keyof typeof FIELD_OFFSETS;

type BlobOp =
  | { op: 'append'; length: number; recipients: number }
  | { op: 'ack'; pick: number; recipient: number }
  /** Acknowledges the handle for every recipient. */
  | { op: 'ackAll'; pick: number }
  | { op: 'isAcknowledged'; pick: number }
  | { op: 'resolve'; pick: number }
  | { op: 'view'; pick: number }
  /** Releases held view number `pick` (wrapping), twice if `twice`. */
  | { op: 'release'; pick: number; twice: boolean }
  | { op: 'cleanup' }
  /** Resolves every handle issued so far. */
  | { op: 'resolveAll' }
  /**
   * A handle's 24 bytes with `field` changed by `delta` (or set to `value`), and the size set to
   * `size` if not null (small sizes match header words: an offset moved onto an entry's header
   * must still fail the entry's check word); resolve, view, ack and isAcknowledged it.
   */
  | { op: 'forged'; pick: number; field: Field; delta: number; value: number | null; size: number | null };

interface BlobCase {
  chunkSize: number;
  maxChunks: number;
  prefetchAt: number;
  ops: BlobOp[];
}

function blobOp(chunkSize: number): fc.Arbitrary<BlobOp> {
  const maxAppend = chunkSize - BlobStore.entrySize(0, 1);
  const length = fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 1, max: 40 }) },
    { weight: 4, arbitrary: fc.integer({ min: 1, max: chunkSize }) },
    { weight: 2, arbitrary: fc.integer({ min: maxAppend - 16, max: maxAppend + 8 }) },
    { weight: 1, arbitrary: fc.constant(0) },
  );
  const recipients = fc.oneof({ weight: 6, arbitrary: fc.constant(1) }, fc.constantFrom(2, 32, 33));
  const pick = fc.nat(100);
  const forged = fc.record({
    op: fc.constant('forged' as const),
    pick,
    field: fc.constantFrom<Field>('chunk', 'offset', 'offset', 'size', 'generation', 'timestamp'),
    delta: fc.constantFrom(-8, -1, 1, 4, 8, 16, 24),
    value: fc.oneof(
      { weight: 3, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: fc.constantFrom(0, 1, 2, 0xffffffff, 0x7ffffff8) },
    ),
    size: fc.oneof({ weight: 2, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom(0, 1, 2, 33) }),
  });
  return fc.oneof(
    { weight: 8, arbitrary: fc.record({ op: fc.constant('append' as const), length, recipients }) },
    {
      weight: 3,
      arbitrary: fc.record({ op: fc.constant('ack' as const), pick, recipient: fc.integer({ min: 0, max: 33 }) }),
    },
    { weight: 4, arbitrary: fc.record({ op: fc.constant('ackAll' as const), pick }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('isAcknowledged' as const), pick }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('resolve' as const), pick }) },
    { weight: 3, arbitrary: fc.record({ op: fc.constant('view' as const), pick }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('release' as const), pick, twice: fc.boolean() }) },
    { weight: 3, arbitrary: fc.constant<BlobOp>({ op: 'cleanup' }) },
    { weight: 1, arbitrary: fc.constant<BlobOp>({ op: 'resolveAll' }) },
    { weight: 3, arbitrary: forged },
  );
}

function blobCase(maxChunks: fc.Arbitrary<number>): fc.Arbitrary<BlobCase> {
  return fc
    .record({
      chunkSize: fc.constantFrom(128, 136, 256, 520),
      maxChunks,
      prefetchAt: fc.constantFrom(0.25, 0.5, 0.8, 1),
    })
    .chain((p) =>
      fc.record({
        chunkSize: fc.constant(p.chunkSize),
        maxChunks: fc.constant(p.maxChunks),
        prefetchAt: fc.constant(p.prefetchAt),
        ops: fc.array(blobOp(p.chunkSize), { minLength: 1, maxLength: 50, size: 'max' }),
      }),
    );
}

interface Entry {
  readonly handle: BlobHandle;
  readonly bytes: Uint8Array;
  readonly recipients: number;
  readonly acked: Set<number>;
}

interface Chunk {
  readonly generation: number;
  readonly entries: Entry[];
  /** Data bytes reserved (the next entry's offset). */
  used: number;
  freed: boolean;
}

interface HeldView {
  readonly entry: Entry;
  readonly view: BlobView;
}

function codeOf(err: unknown): string {
  return err instanceof ShmError ? err.code : `not a ShmError: ${String(err)}`;
}

let stores = 0;

/** Replays `c` against a new store and the model; `liveness`: also require the drained store to take a full-size append. */
function runBlob(c: BlobCase, liveness: boolean): void {
  const name = `prop-${process.pid}-${++stores}`;
  const control = `shmbus.${name}`;
  const sut = BlobStore.create(name, {
    dir,
    chunkSize: c.chunkSize,
    maxChunks: c.maxChunks,
    ttlMs: TTL_MS,
    decayMs: 0,
    prefetchAt: c.prefetchAt,
  });
  try {
    new BlobRun(sut, c, control, liveness).run(c.ops);
  } finally {
    sut.close();
  }
  const left = readdirSync(dir).filter((f) => f === control || f.startsWith(`${control}.`));
  assert.deepEqual(left, [], `close() left files of ${name}`);
}

class BlobRun {
  private readonly entries: Entry[] = [];
  private readonly chunks = new Map<number, Chunk>();
  private active: Chunk | null = null;
  private views: HeldView[] = [];
  private seq = 0;
  private appends = 0;
  private full = 0;
  private freed = 0;
  private step = -1;

  constructor(
    private readonly sut: BlobStore,
    private readonly c: BlobCase,
    private readonly control: string,
    private readonly liveness: boolean,
  ) {}

  private where(): string {
    return `step ${this.step}`;
  }

  run(ops: readonly BlobOp[]): void {
    for (const op of ops) {
      this.step++;
      const freedBefore = this.sut.stats().freed;
      const newlyFreed = this.apply(op);
      this.checkInvariants(op, newlyFreed, freedBefore);
    }
    this.step = ops.length;
    this.finish();
  }

  private chunkOf(e: Entry): Chunk {
    return this.chunks.get(e.handle.generation) as Chunk;
  }

  private isFreeable(chunk: Chunk): boolean {
    return (
      chunk !== this.active &&
      chunk.entries.every((e) => e.acked.size === e.recipients) &&
      !this.views.some((v) => this.chunkOf(v.entry) === chunk)
    );
  }

  private pick(n: number): Entry | undefined {
    return this.entries.length === 0 ? undefined : this.entries[n % this.entries.length];
  }

  /** Applies `op`; returns how many chunks cleanup() said it freed (null for other ops). */
  private apply(op: BlobOp): number | null {
    switch (op.op) {
      case 'append':
        this.append(op.length, op.recipients);
        return null;
      case 'ack': {
        const e = this.pick(op.pick);
        if (e !== undefined) this.ack(e, op.recipient);
        return null;
      }
      case 'ackAll': {
        const e = this.pick(op.pick);
        if (e !== undefined) for (let r = 0; r < e.recipients; r++) this.ack(e, r);
        return null;
      }
      case 'isAcknowledged': {
        const e = this.pick(op.pick);
        if (e === undefined) return null;
        const want = !this.chunkOf(e).freed && e.acked.size === e.recipients;
        assert.equal(this.sut.isAcknowledged(e.handle), want, `${this.where()}: isAcknowledged`);
        return null;
      }
      case 'resolve': {
        const e = this.pick(op.pick);
        if (e !== undefined) this.checkResolve(e, e.handle, 'resolve');
        return null;
      }
      case 'resolveAll':
        for (const e of this.entries) this.checkResolve(e, e.handle, 'resolveAll');
        return null;
      case 'view': {
        const e = this.pick(op.pick);
        if (e === undefined) return null;
        const view = this.sut.view(e.handle);
        if (this.chunkOf(e).freed) assert.equal(view, null, `${this.where()}: a view of a freed chunk`);
        else {
          assert.ok(view !== null, `${this.where()}: no view of a live entry`);
          assert.equal(firstDifference(view.data, e.bytes), -1, `${this.where()}: a view shows other bytes`);
          this.views.push({ entry: e, view });
        }
        return null;
      }
      case 'release': {
        if (this.views.length === 0) return null;
        const [held] = this.views.splice(op.pick % this.views.length, 1);
        held.view.release();
        if (op.twice) held.view.release();
        return null;
      }
      case 'cleanup':
        return this.sut.cleanup();
      case 'forged': {
        const e = this.pick(op.pick);
        if (e !== undefined) this.forged(e, op);
        return null;
      }
    }
  }

  private checkResolve(e: Entry, handle: BlobHandle, what: string): void {
    let got: Uint8Array | null;
    try {
      got = this.sut.resolve(handle);
    } catch (err) {
      assert.fail(`${this.where()}: ${what} threw ${String(err)}`);
    }
    if (this.chunkOf(e).freed) assert.equal(got, null, `${this.where()}: ${what} of an entry of a freed chunk`);
    else {
      assert.ok(got !== null, `${this.where()}: ${what} gave null for a live entry (chunk ${e.handle.generation})`);
      assert.equal(firstDifference(got, e.bytes), -1, `${this.where()}: ${what} gave other bytes`);
    }
  }

  /** ack() of entry `e` for `recipient`, through `handle` (its own, or a forged one that names it). */
  private ack(e: Entry, recipient: number, handle = e.handle): void {
    const at = `${this.where()}: ack(recipient ${recipient} of ${e.recipients})`;
    if (this.chunkOf(e).freed) {
      assert.equal(this.sut.ack(handle, recipient), false, `${at} of an entry of a freed chunk`);
      return;
    }
    if (recipient >= e.recipients) {
      assert.throws(
        () => this.sut.ack(handle, recipient),
        (err: unknown) => codeOf(err) === ErrorCode.INVALID_ARGUMENT,
        `${at}: no SHM_ERR_INVALID_ARGUMENT`,
      );
      return;
    }
    const first = !e.acked.has(recipient);
    assert.equal(this.sut.ack(handle, recipient), first, `${at}: ${first ? 'first' : 'repeated'} ack`);
    e.acked.add(recipient);
  }

  private append(length: number, recipients: number): void {
    const bytes = new Uint8Array(length);
    fillFrame(bytes, this.seq++);
    const size = BlobStore.entrySize(length, recipients);
    const at = `${this.where()}: append(${length} B, ${recipients} recipients; entry ${size} B)`;
    const filesBefore = this.storeFiles();
    const expectError = (code: string) => {
      assert.throws(
        () => this.sut.append(bytes, { recipients }),
        (err: unknown) => codeOf(err) === code,
        `${at}: no ${code}`,
      );
      assert.equal(this.sut.stats().appends, this.appends, `${at}: a refused append was counted`);
      assert.deepEqual(this.storeFiles(), filesBefore, `${at}: a refused append changed the files`);
    };
    if (length === 0 || size > this.c.chunkSize) {
      expectError(length === 0 ? ErrorCode.INVALID_ARGUMENT : ErrorCode.TOO_LARGE);
      return;
    }
    const active = this.active;
    const needsNew = active === null || active.used + size > this.c.chunkSize;
    const live = [...this.chunks.values()].filter((k) => !k.freed).length;
    const prefetched = this.sut.chunkFiles().length - live;
    // With every chunk in use, a done active chunk (all acknowledged, no view held) is freed or
    // recycled by the append itself (decayMs is 0 here): only otherwise is it SHM_ERR_FULL.
    const activeDone =
      active?.entries.every((e) => e.acked.size === e.recipients) === true &&
      !this.views.some((v) => this.chunkOf(v.entry) === active);
    if (needsNew && prefetched === 0 && live === this.c.maxChunks && !activeDone) {
      expectError(ErrorCode.FULL);
      this.full++;
      return;
    }
    let handle: BlobHandle;
    try {
      handle = this.sut.append(bytes, { recipients });
    } catch (err) {
      assert.fail(
        `${at}: threw ${codeOf(err)} (needs a new chunk: ${needsNew}, ${prefetched} prefetched, ${live} live of ${this.c.maxChunks})`,
      );
    }
    this.appends++;
    assert.equal(handle.size, length, `${at}: handle size`);
    let chunk: Chunk;
    if (!needsNew && active !== null) {
      assert.equal(handle.generation, active.generation, `${at}: an entry that fits went to another chunk`);
      assert.equal(handle.offset, active.used, `${at}: not right after the last entry`);
      chunk = active;
    } else {
      assert.ok(!this.chunks.has(handle.generation), `${at}: a new chunk reuses generation ${handle.generation}`);
      assert.equal(handle.offset, 0, `${at}: the first entry of a chunk is not at offset 0`);
      chunk = { generation: handle.generation, entries: [], used: 0, freed: false };
      this.chunks.set(chunk.generation, chunk);
      this.active = chunk;
    }
    assert.equal(this.sut.stats().active, handle.chunk, `${at}: stats().active is not the handle's chunk`);
    const entry: Entry = { handle, bytes, recipients, acked: new Set() };
    chunk.entries.push(entry);
    chunk.used += size;
    this.entries.push(entry);
    // The handle travels as 24 bytes.
    const again = BlobHandle.fromBytes(handle.toBytes());
    assert.deepEqual({ ...again }, { ...handle }, `${at}: the handle does not survive toBytes/fromBytes`);
  }

  private forged(e: Entry, { field, delta, value, size }: Extract<BlobOp, { op: 'forged' }>): void {
    const bytes = e.handle.toBytes();
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    const offset = FIELD_OFFSETS[field];
    // A timestamp moves by whole double TTLs: clearly expired or clearly not, whatever the clock does meanwhile.
    if (field === 'timestamp')
      dv.setBigUint64(offset, BigInt(value ?? Math.max(0, e.handle.timestamp + delta * 2 * TTL_MS)), true);
    else dv.setUint32(offset, (value ?? dv.getUint32(offset, true) + delta) >>> 0, true);
    if (size !== null) dv.setUint32(FIELD_OFFSETS.size, size, true);
    const h = BlobHandle.fromBytes(bytes);
    const at = `${this.where()}: forged ${JSON.stringify({ ...h })} from ${JSON.stringify({ ...e.handle })}`;
    // The issued entry the forged handle still names (same chunk, offset, size and generation), if any.
    const named = this.entries.find(
      (x) =>
        x.handle.chunk === h.chunk &&
        x.handle.offset === h.offset &&
        x.handle.size === h.size &&
        x.handle.generation === h.generation,
    );
    const alive = named !== undefined && !this.chunkOf(named).freed;
    const expired = Date.now() - h.timestamp > TTL_MS;
    let got: Uint8Array | null = null;
    let view: BlobView | null = null;
    try {
      got = this.sut.resolve(h);
      view = this.sut.view(h);
    } catch (err) {
      assert.fail(`${at}: threw ${String(err)}`);
    }
    try {
      if (!alive || expired) {
        assert.equal(got, null, `${at}: resolved to bytes`);
        assert.equal(view, null, `${at}: gave a view`);
      } else {
        assert.ok(got !== null && view !== null, `${at}: null for the live entry it names`);
        assert.equal(firstDifference(got, named.bytes), -1, `${at}: resolved to other bytes`);
        assert.equal(firstDifference(view.data, named.bytes), -1, `${at}: a view of other bytes`);
      }
    } finally {
      view?.release();
    }
    // ack and isAcknowledged ignore the timestamp: they act on the entry the handle names, or on none.
    if (named === undefined || !alive) {
      assert.equal(this.sut.ack(h, 0), false, `${at}: ack counted`);
      assert.equal(this.sut.isAcknowledged(h), false, `${at}: isAcknowledged`);
    } else this.ack(named, 0, h);
  }

  /** Names of the store's files in the directory, sorted. */
  private storeFiles(): string[] {
    return readdirSync(dir)
      .filter((f) => f === this.control || f.startsWith(`${this.control}.b`))
      .sort();
  }

  private checkInvariants(op: BlobOp, cleaned: number | null, freedBefore: number): void {
    const at = `${this.where()} (${op.op})`;
    const files = this.storeFiles();
    const chunkFiles = this.sut.chunkFiles();
    assert.deepEqual(
      files,
      [this.control, ...chunkFiles.map((p) => basename(p))].sort(),
      `${at}: the files in the directory are not the control file and chunkFiles()`,
    );
    assert.ok(
      chunkFiles.every((p) => p === join(dir, basename(p))),
      `${at}: a chunk file outside dir`,
    );
    assert.ok(chunkFiles.length <= this.c.maxChunks, `${at}: ${chunkFiles.length} chunk files`);
    const stats = this.sut.stats();
    assert.equal(stats.chunks, chunkFiles.length, `${at}: stats().chunks`);
    assert.equal(stats.appends, this.appends, `${at}: stats().appends`);
    assert.equal(stats.full, this.full, `${at}: stats().full`);
    assert.equal(stats.expired, 0, `${at}: something expired`);

    // Which chunks went: a chunk's file keeps its generation's name until it is freed.
    const onDisk = new Set(files);
    let newlyFreed = 0;
    for (const chunk of this.chunks.values()) {
      if (chunk.freed) continue;
      if (onDisk.has(`${this.control}.b${chunk.generation}`)) {
        if (op.op === 'cleanup')
          assert.ok(!this.isFreeable(chunk), `${at}: cleanup() left freeable chunk ${chunk.generation}`);
        continue;
      }
      assert.ok(
        op.op === 'cleanup' || op.op === 'append',
        `${at}: chunk ${chunk.generation} vanished outside cleanup() and append()`,
      );
      assert.ok(
        this.isFreeable(chunk),
        `${at}: chunk ${chunk.generation} was freed while ${chunk === this.active ? 'active' : this.views.some((v) => this.chunkOf(v.entry) === chunk) ? 'a view was held' : 'an entry was not acknowledged'}`,
      );
      chunk.freed = true;
      newlyFreed++;
    }
    this.freed += newlyFreed;
    if (cleaned !== null) assert.equal(cleaned, newlyFreed, `${at}: cleanup() returned ${cleaned}`);
    assert.equal(stats.freed - freedBefore, newlyFreed, `${at}: stats().freed`);
    assert.equal(stats.freed, this.freed, `${at}: stats().freed in total`);

    for (const held of this.views) {
      const diff = firstDifference(held.view.data, held.entry.bytes);
      assert.equal(diff, -1, `${at}: a held view changed at byte ${diff}`);
    }
  }

  /** Everything acknowledged and released: cleanup keeps only the active chunk, and a full-size append fits. */
  private finish(): void {
    for (const held of this.views) held.view.release();
    this.views = [];
    for (const e of this.entries) for (let r = 0; r < e.recipients; r++) this.ack(e, r);
    let freedBefore = this.sut.stats().freed;
    const cleaned = this.sut.cleanup();
    this.checkInvariants({ op: 'cleanup' }, cleaned, freedBefore);
    const live = [...this.chunks.values()].filter((k) => !k.freed);
    assert.deepEqual(
      live.map((k) => k.generation),
      this.active === null ? [] : [this.active.generation],
      'end: chunks other than the active one outlived a cleanup with everything acknowledged',
    );
    for (const e of this.entries) this.checkResolve(e, e.handle, 'resolve at the end');
    if (!this.liveness) return;
    // Liveness: a store whose entries are all acknowledged takes an append of the largest payload.
    const largest = this.c.chunkSize - BlobStore.entrySize(0, 1);
    const appends = this.appends;
    freedBefore = this.sut.stats().freed;
    this.append(largest, 1);
    this.checkInvariants({ op: 'append', length: largest, recipients: 1 }, null, freedBefore);
    assert.equal(
      this.appends,
      appends + 1,
      `end: a store with every entry acknowledged and cleaned up refused a ${largest}-byte append (${JSON.stringify(this.sut.stats())})`,
    );
    const last = this.entries[this.entries.length - 1];
    this.checkResolve(last, last.handle, 'the last append');
  }
}

test('random appends, acks, views, cleanups, resolves and forged handles keep the blob store equal to the model', () => {
  const cases = blobCase(fc.integer({ min: 1, max: 4 }));
  assertProperty(
    fc.property(cases, (c) => runBlob(c, true)),
    { numRuns: 500 },
  );
});

test('with maxChunks 1, a store whose entries are all acknowledged and cleaned up takes an append of the largest payload', () => {
  assertProperty(
    fc.property(blobCase(fc.constant(1)), (c) => runBlob(c, true)),
    { numRuns: 50 },
  );
});
