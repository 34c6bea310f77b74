/**
 * Session: a two-peer segment for large messages without copies. The sender writes its
 * payload straight into a shared slot and only a small descriptor crosses the ring; the
 * receiver reads the payload in place and releases the slot.
 *
 * ```ts
 * import { Session } from 'shmbus';
 * const a = Session.create('render', { slotSize: 64 * 1024, slotCount: 64 });   // peer A
 * const buf = a.alloc(len);            // a writable view inside the shared slab (waits for a slot)
 * buf.set(pixels);
 * await a.send(buf, { channel: 1 });   // zero-copy: only a descriptor crosses
 * await a.send(smallBytes);            // <= inlineMax: travels inside the descriptor
 *
 * const b = Session.open('render');    // peer B, another process: configuration from the header
 * const msg = await b.recv();          // msg.data: a view into the slab, no copy
 * msg.release();                       // the slot goes back to the free list
 * ```
 * Both directions are independent (each peer sends and receives). Slots carry generations: a
 * descriptor that does not match its slot's generation and state (stale, double free, out of
 * range) is rejected with SHM_ERR_CORRUPT and never acted on. Backpressure waits (spin, then
 * park) for a free slot or ring room, up to a timeout; the try* variants never wait. A peer
 * that dies is seen through its liveness lock: waits end with SHM_ERR_PEER_DEAD, and the
 * survivor reclaims the slots the dead peer held. Layout: src/layout/session.ts.
 *
 * One thread per peer object. alloc()/send()/recv() wait on the event loop.
 */
import { checkEndOptions, deadlineOf, type EndOptions, type WaitOptions } from '../channel/channel.js';
import { generationOf, SLOT_ALLOCATED, SLOT_IN_FLIGHT, Slab, SlabStatus, slotOf } from '../core/slab.js';
import { areaReaders, areaWriters, RingCorruptError, type RingReader, type RingWriter } from '../core/spsc-ring.js';
import { STOP_AT, stopAt } from '../core/test-hooks.js';
import { diagnostics } from '../diagnostics.js';
import {
  ErrorCode,
  ShmArgumentError,
  ShmFrameError,
  ShmSegmentError,
  ShmStateError,
  ShmTimeoutError,
} from '../errors.js';
import {
  DATA_WAIT_OFFSET,
  HEAD_POSITION_OFFSET,
  SEQ_OFFSET,
  SLEEPING_OFFSET,
  SPACE_WAIT_OFFSET,
} from '../layout/channel.js';
import type { AreaGeometry } from '../layout/daemon.js';
import { Kind, OWNER_ROLE } from '../layout/segment.js';
import {
  INLINE_SLOT,
  minRingCapacity,
  PEER_A_BLOCK_OFFSET,
  PEER_B_BLOCK_OFFSET,
  PEER_B_ROLE,
  PEER_CLOSED_OFFSET,
  PEER_OPENS_OFFSET,
  PEER_PID_OFFSET,
  PEER_REOPEN_HEAD_OFFSET,
  PEER_SENDING_SLOT_OFFSET,
  readSessionParams,
  SESSION_PARAMS_LENGTH,
  SESSION_PROTOCOL_MAJOR,
  type SessionGeometry,
  SLOT_WAIT_A_OFFSET,
  SLOT_WAIT_B_OFFSET,
  sessionGeometry,
  writeSessionParams,
} from '../layout/session.js';
import { Segment, type SegmentOptions } from '../segment/segment.js';
import { WaitBlock, type WaitSpec, waitAsync } from '../segment/wake.js';
import { checkU32, slotsNamedFrom, takeDescriptor, writeDescriptor } from './descriptor.js';

export interface SessionCreateOptions extends SegmentOptions, EndOptions {
  /** Descriptor ring bytes in each direction, a power of two (default 64 KiB). */
  ringCapacity?: number;
  /** Bytes per slot, a multiple of 8 (default 64 KiB). */
  slotSize?: number;
  /** Slots shared by both peers (default 64, at most 65535). */
  slotCount?: number;
  /** Payloads up to this many bytes travel inside the descriptor and use no slot (default 256). */
  inlineMax?: number;
  /** How long A's waits treat a B that never opened as alive (default 10000 ms). */
  startupMs?: number;
}

export interface SessionOpenOptions extends SegmentOptions, EndOptions {}

export interface SendOptions extends WaitOptions {
  /** Application channel id (u32), e.g. for an RPC layer on top (default 0). */
  channel?: number;
  /** Application flags (u32, default 0). */
  flags?: number;
}

const DEBUG = process.env.SHMBUS_DEBUG === '1';
/** Tries (1 ms apart) at B's role before open() calls it taken (A holds it briefly while it reclaims). */
const OPEN_ATTEMPTS = 20;
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const POISON = 0xde;

/** A received message. `data` is valid until release(); reading it after release throws. */
export class SessionMessage {
  private view: Uint8Array | null;
  constructor(
    private readonly owner: Session,
    readonly channel: number,
    readonly flags: number,
    view: Uint8Array,
    /** Slot index, or -1 for an inline message (a copy; release() only marks it). */
    readonly slot: number,
    readonly generation: number,
  ) {
    this.view = view;
  }

  get data(): Uint8Array {
    if (this.view === null)
      throw new ShmStateError(ErrorCode.CLOSED, 'this message was released: its data may already be reused');
    return this.view;
  }

  get length(): number {
    return this.view?.length ?? 0;
  }

  get released(): boolean {
    return this.view === null;
  }

  /** Returns the slot to the free list (SHM_ERR_CORRUPT if it was not in flight with this generation: a double release). */
  release(): void {
    if (this.view === null) return;
    const view = this.view;
    this.view = null;
    if (this.slot >= 0) this.owner.releaseSlot(this.slot, this.generation, view);
  }
}

export class Session {
  readonly isA: boolean;
  private readonly g: SessionGeometry;
  private readonly slab: Slab;
  private readonly writer: RingWriter;
  private readonly reader: RingReader;
  private readonly dataWait: WaitBlock;
  private readonly spaceWait: WaitBlock;
  private readonly mySlotWait: WaitBlock;
  private readonly peerSlotWait: WaitBlock;
  private readonly peerDataWait: WaitBlock;
  private readonly policy: Required<EndOptions>;
  private readonly myOwner: number;
  private readonly peerOwner: number;
  private readonly peerRole: number;
  private readonly peerBlock: number;
  /** Int32 index of this peer's sending record (slot + 1, generation, tail: layout/session.ts). */
  private readonly sendingIndex: number;
  /** Slots this peer allocated and has not sent: generation + 1 per slot (0: not ours). */
  private readonly allocGen: Int32Array;
  /** The last view handed out per slot (reused when the same length is asked again). */
  private readonly views: (Uint8Array | undefined)[];
  private closedByUs = false;
  private livenessCheckedAt = 0;
  /** The dead peer's pid last reported to diagnostics (once per dead peer). */
  private reportedDeadPid = 0;
  private readonly createdAt = Date.now();
  private readonly startupMs: number;

  private constructor(
    private readonly seg: Segment,
    g: SessionGeometry,
    isA: boolean,
    policy: Required<EndOptions>,
    startupMs: number,
  ) {
    this.g = g;
    this.isA = isA;
    this.policy = policy;
    this.startupMs = startupMs;
    const v = seg.views;
    const buffer = v.buffer as ArrayBuffer;
    this.slab = new Slab(v.i32, g.slabOffset >> 2, g.slotCount);
    const out = isA ? g.ab : g.ba;
    const inn = isA ? g.ba : g.ab;
    [this.writer] = areaWriters(v, out);
    [this.reader] = areaReaders(v, inn);
    const block = (at: number) => new WaitBlock(buffer, v.i32, at + SLEEPING_OFFSET, at + SEQ_OFFSET);
    this.dataWait = block(inn.blocksBase + DATA_WAIT_OFFSET);
    this.spaceWait = block(out.blocksBase + SPACE_WAIT_OFFSET);
    this.peerDataWait = block(out.blocksBase + DATA_WAIT_OFFSET);
    const peerSpaceWait = block(inn.blocksBase + SPACE_WAIT_OFFSET);
    this.mySlotWait = block(isA ? SLOT_WAIT_A_OFFSET : SLOT_WAIT_B_OFFSET);
    this.peerSlotWait = block(isA ? SLOT_WAIT_B_OFFSET : SLOT_WAIT_A_OFFSET);
    // SYNC POINT: the tail/head stores precede these loads of the peer's sleeping flags.
    this.writer.onPublish = () => this.peerDataWait.wake();
    this.reader.onPublish = () => peerSpaceWait.wake();
    this.allocGen = new Int32Array(g.slotCount);
    this.views = new Array(g.slotCount);
    this.myOwner = isA ? 0 : 1;
    this.peerOwner = isA ? 1 : 0;
    this.peerRole = isA ? PEER_B_ROLE : OWNER_ROLE;
    this.peerBlock = isA ? PEER_B_BLOCK_OFFSET : PEER_A_BLOCK_OFFSET;
    this.sendingIndex = ((isA ? PEER_A_BLOCK_OFFSET : PEER_B_BLOCK_OFFSET) + PEER_SENDING_SLOT_OFFSET) >> 2;
  }

  /** Creates session `name` as peer A. SHM_ERR_EXISTS while a live A holds the name. */
  static create(name: string, options: SessionCreateOptions = {}): Session {
    const policy = checkEndOptions(options);
    const slotSize = options.slotSize ?? 64 * 1024;
    const slotCount = options.slotCount ?? 64;
    const inlineMax = options.inlineMax ?? 256;
    const bad = (m: string) => new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, m);
    if (!Number.isInteger(slotSize) || slotSize < 64 || slotSize > 1 << 30 || slotSize % 8 !== 0)
      throw bad(`slotSize must be a multiple of 8 in 64..1 GiB, got ${slotSize}`);
    if (!Number.isInteger(slotCount) || slotCount < 1 || slotCount > 0xffff)
      throw bad(`slotCount must be an integer in 1..65535, got ${slotCount}`);
    if (!Number.isInteger(inlineMax) || inlineMax < 0 || inlineMax > 65536)
      throw bad(`inlineMax must be an integer in 0..65536, got ${inlineMax}`);
    const ringCapacity = options.ringCapacity ?? Math.max(64 * 1024, minRingCapacity(inlineMax));
    if (
      !Number.isInteger(ringCapacity) ||
      ringCapacity < 1024 ||
      ringCapacity > 1 << 30 ||
      (ringCapacity & (ringCapacity - 1)) !== 0
    )
      throw bad(`ringCapacity must be a power of two in 1 KiB..1 GiB, got ${ringCapacity}`);
    if (minRingCapacity(inlineMax) > ringCapacity)
      throw bad(
        `ringCapacity=${ringCapacity} is too small for inlineMax=${inlineMax} (at least ${minRingCapacity(inlineMax)})`,
      );
    const g = sessionGeometry({ ringCapacity, slotSize, slotCount, inlineMax });
    const seg = Segment.create(
      name,
      Kind.SESSION,
      g.segmentLength,
      SESSION_PARAMS_LENGTH,
      (views) => {
        writeSessionParams(views.dv, g);
        views.dv.setUint32(PEER_A_BLOCK_OFFSET + PEER_PID_OFFSET, process.pid, true);
        views.i32[(PEER_A_BLOCK_OFFSET + PEER_OPENS_OFFSET) >> 2] = 1;
        new Slab(views.i32, g.slabOffset >> 2, g.slotCount).format();
      },
      options,
    );
    return new Session(seg, g, true, policy, options.startupMs ?? 10_000);
  }

  /**
   * Opens session `name` as peer B; the configuration comes from the header. Fails with
   * SHM_ERR_NOT_FOUND, SHM_ERR_VERSION_MISMATCH (another major protocol version),
   * SHM_ERR_CORRUPT / _TRUNCATED (a header that does not add up), SHM_ERR_BUSY (a live B).
   * A B that reopens after a crash resumes after the descriptors it consumed.
   */
  static open(name: string, options: SessionOpenOptions = {}): Session {
    const policy = checkEndOptions(options);
    const seg = Segment.open(name, Kind.SESSION, options);
    try {
      const where = `session ${JSON.stringify(name)}`;
      if (seg.header.paramsLength < SESSION_PARAMS_LENGTH)
        throw new ShmSegmentError(ErrorCode.CORRUPT, `${where} has paramsLength=${seg.header.paramsLength}`);
      const { protocol, g, problems } = readSessionParams(seg.views.dv, Math.min(seg.length, seg.header.segmentLength));
      if (protocol >>> 16 !== SESSION_PROTOCOL_MAJOR)
        throw new ShmSegmentError(
          ErrorCode.VERSION_MISMATCH,
          `${where} speaks session protocol ${protocol >>> 16}.${protocol & 0xffff}; this shmbus speaks ${SESSION_PROTOCOL_MAJOR}.x`,
          { details: { name, major: protocol >>> 16, expected: SESSION_PROTOCOL_MAJOR } },
        );
      if (g === null || problems.length > 0)
        throw new ShmSegmentError(ErrorCode.CORRUPT, `${where} has a corrupt header: ${problems.join('; ')}`, {
          details: { name, problems },
        });
      // A holds B's role for a moment while it reclaims after a B that died or closed: only a
      // role still taken after a few tries belongs to a live B.
      for (let attempt = 0; !seg.tryAcquireRole(PEER_B_ROLE); attempt++) {
        if (attempt >= OPEN_ATTEMPTS)
          throw new ShmSegmentError(ErrorCode.BUSY, `${where} already has a live peer B`, { details: { name } });
        Atomics.wait(sleeper, 0, 0, 1);
      }
      const i32 = seg.views.i32;
      seg.views.dv.setUint32(PEER_B_BLOCK_OFFSET + PEER_PID_OFFSET, process.pid, true);
      Atomics.store(i32, (PEER_B_BLOCK_OFFSET + PEER_CLOSED_OFFSET) >> 2, 0);
      const sut = new Session(seg, g, false, policy, 0);
      // A previous B that died or closed: the slots it allocated and never sent are freed, and
      // the one it was sending if it never published the descriptor (this B holds the role:
      // A leaves them alone). Messages A sent that are still in the ring are delivered to this
      // B; the slots of those the previous B consumed and never released are A's to reclaim,
      // up to here:
      const head = Atomics.load(i32, (g.ab.blocksBase + HEAD_POSITION_OFFSET) >> 2);
      Atomics.store(i32, (PEER_B_BLOCK_OFFSET + PEER_REOPEN_HEAD_OFFSET) >> 2, head);
      sut.reclaimUnsent(1);
      sut.reclaimOrphan(PEER_B_BLOCK_OFFSET, g.ba, 1);
      // SYNC POINT: pairs with the load of opens in A's checkPeerReopened(); reopenHead first.
      Atomics.add(i32, (PEER_B_BLOCK_OFFSET + PEER_OPENS_OFFSET) >> 2, 1);
      return sut;
    } catch (err) {
      seg.close();
      throw err;
    }
  }

  get name(): string {
    return this.seg.name;
  }

  get slotSize(): number {
    return this.g.slotSize;
  }

  get slotCount(): number {
    return this.g.slotCount;
  }

  get inlineMax(): number {
    return this.g.inlineMax;
  }

  /** Free slots now (both peers draw from the same slab). */
  get freeSlots(): number {
    return this.slab.freeCount;
  }

  private assertOpen(): void {
    if (this.closedByUs)
      throw new ShmStateError(ErrorCode.CLOSED, `session ${JSON.stringify(this.name)}: this peer is closed`);
  }

  // ---------------------------------------------------------------- liveness

  private peerGone(force: boolean): ShmStateError | null {
    const i32 = this.seg.views.i32;
    const where = `session ${JSON.stringify(this.name)}`;
    const peer = this.isA ? 'B' : 'A';
    if (Atomics.load(i32, (this.peerBlock + PEER_CLOSED_OFFSET) >> 2) !== 0) {
      if (!this.reclaimAfterPeer()) return null; // a new B is opening (it clears `closed`)
      return new ShmStateError(ErrorCode.PEER_CLOSED, `${where}: peer ${peer} closed`, {
        details: { name: this.name },
      });
    }
    this.checkPeerReopened();
    const now = Date.now();
    if (!force && now - this.livenessCheckedAt < this.policy.livenessCheckMs) return null;
    this.livenessCheckedAt = now;
    if (this.seg.roleAlive(this.peerRole)) return null;
    const opens = Atomics.load(i32, (this.peerBlock + PEER_OPENS_OFFSET) >> 2);
    if (opens === 0) {
      // B never opened: alive during the start-up window.
      if (now - this.createdAt < this.startupMs) return null;
      return new ShmStateError(ErrorCode.PEER_DEAD, `${where}: peer B did not open within ${this.startupMs} ms`, {
        details: { name: this.name },
      });
    }
    const free = this.slab.freeCount;
    if (!this.reclaimAfterPeer()) return null; // a new B took the role since the probe
    const pid = this.seg.views.dv.getUint32(this.peerBlock + PEER_PID_OFFSET, true);
    if (pid !== this.reportedDeadPid) {
      this.reportedDeadPid = pid;
      if (diagnostics.peerDied.hasSubscribers)
        diagnostics.peerDied.publish({ primitive: 'session', name: this.name, peer, pid });
      const count = this.slab.freeCount - free;
      if (count > 0 && diagnostics.recovered.hasSubscribers)
        diagnostics.recovered.publish({ primitive: 'session', name: this.name, what: 'slots', count, pid });
    }
    return new ShmStateError(ErrorCode.PEER_DEAD, `${where}: peer ${peer} died`, {
      details: { name: this.name, pid },
    });
  }

  private readonly checkPeer = (): boolean => {
    if (this.closedByUs) this.assertOpen();
    const err = this.peerGone(false);
    if (err !== null) throw err;
    return false;
  };

  /** True while the other peer is running (a lock probe: a system call). */
  peerAlive(): boolean {
    this.assertOpen();
    return this.peerGone(true) === null;
  }

  /** Frees the slots `owner` allocated and never sent (it died or left). */
  private reclaimUnsent(owner: number): number {
    let n = 0;
    for (let slot = 0; slot < this.g.slotCount; slot++) {
      const word = this.slab.stateWord(slot);
      if (
        (word & 3) === SLOT_ALLOCATED &&
        ((word >>> 2) & 63) === owner &&
        this.slab.free(slot, word >>> 8) === SlabStatus.OK
      )
        n++;
    }
    if (n > 0) this.wakeSlotWaiters();
    return n;
  }

  /**
   * The slot a gone peer was sending (its sending record, stored before the slot went
   * IN_FLIGHT, in block `block`): if the slot is still in flight with that generation and
   * owner and no descriptor naming it follows the recorded tail in the peer's outbound ring
   * `area`, its descriptor was never published and nobody will ever release it: freed. The
   * record is cleared. Only while nobody can send on that ring (the peer is gone and its role
   * is held, or it is A, which never comes back).
   */
  private reclaimOrphan(block: number, area: AreaGeometry, owner: number): number {
    const i32 = this.seg.views.i32;
    const at = (block + PEER_SENDING_SLOT_OFFSET) >> 2;
    const slot = i32[at] - 1;
    if (slot < 0) return 0;
    i32[at] = 0;
    const generation = i32[at + 1] >>> 0;
    if (slot >= this.g.slotCount) return 0;
    const word = this.slab.stateWord(slot);
    if ((word & 3) !== SLOT_IN_FLIGHT || word >>> 8 !== (generation & 0xffffff) || ((word >>> 2) & 63) !== owner)
      return 0;
    if (slotsNamedFrom(this.seg.views, area, i32[at + 2]).has(slot)) return 0;
    if (this.slab.free(slot, generation) !== SlabStatus.OK) return 0;
    this.wakeSlotWaiters();
    return 1;
  }

  /**
   * The peer died or closed: frees the slots it allocated and never sent, the one it was
   * sending if it never published the descriptor, and those this side sent it that it
   * consumed and never released (reclaimConsumed). Slots the peer sent us stay ours until we
   * release them. A does this holding B's role, so no new B can open (and allocate or consume)
   * meanwhile; false when it could not take it: a new B has it (not gone), and that B frees
   * what its predecessor left (open()) while A frees what it consumed (checkPeerReopened()).
   */
  private reclaimAfterPeer(): boolean {
    const seg = this.seg;
    if (this.isA && !seg.tryAcquireRole(PEER_B_ROLE)) return false;
    try {
      this.reclaimUnsent(this.peerOwner);
      this.reclaimOrphan(this.peerBlock, this.isA ? this.g.ba : this.g.ab, this.peerOwner);
      this.reclaimConsumed(-1);
    } finally {
      if (this.isA) seg.releaseRole(PEER_B_ROLE);
    }
    return true;
  }

  /**
   * Frees the slots this side sent that the peer consumed (before ring position `from`; -1:
   * the current head) and never released. On A, slots of descriptors still in the ring stay in
   * flight for the next B; on B (A never comes back) every slot B sent is freed.
   */
  private reclaimConsumed(from: number): number {
    const area = this.isA ? this.g.ab : this.g.ba;
    const head = from >= 0 ? from : Atomics.load(this.seg.views.i32, (area.blocksBase + HEAD_POSITION_OFFSET) >> 2);
    // A B may be replaced by a new B, which reads what is left in the ring; a dead or closed
    // A never comes back to this segment, so B takes back everything it sent.
    const keep = this.isA ? slotsNamedFrom(this.seg.views, area, head) : new Set<number>();
    let n = 0;
    for (let slot = 0; slot < this.g.slotCount; slot++) {
      const word = this.slab.stateWord(slot);
      if ((word & 3) !== SLOT_IN_FLIGHT || ((word >>> 2) & 63) !== this.myOwner || keep.has(slot)) continue;
      if (this.slab.free(slot, word >>> 8) === SlabStatus.OK) n++;
    }
    if (n > 0) this.wakeSlotWaiters();
    return n;
  }

  private seenPeerOpens = 0;

  /** A (only): a new B opened since we last looked: reclaim what the previous one consumed. One atomic load. */
  private checkPeerReopened(): void {
    if (!this.isA) return;
    const i32 = this.seg.views.i32;
    const opens = Atomics.load(i32, (PEER_B_BLOCK_OFFSET + PEER_OPENS_OFFSET) >> 2);
    if (opens === this.seenPeerOpens) return;
    const previous = this.seenPeerOpens;
    this.seenPeerOpens = opens;
    // The first B consumed nothing before it opened; a later one replaced a B that did. Only
    // what A sent it: the new B freed its predecessor's own slots when it opened, and the
    // slots of that kind now are the new B's (freeing them here took its allocations away).
    if (previous > 0) this.reclaimConsumed(Atomics.load(i32, (PEER_B_BLOCK_OFFSET + PEER_REOPEN_HEAD_OFFSET) >> 2));
  }

  // ---------------------------------------------------------------- slots

  private slotAt(slot: number): number {
    return this.g.slotsOffset + slot * this.g.slotSize;
  }

  private checkLength(length: number): void {
    if (!Number.isInteger(length) || length < 0)
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `length must be an integer >= 0, got ${length}`);
    if (length > this.g.slotSize)
      throw new ShmFrameError(ErrorCode.TOO_LARGE, `${length} bytes do not fit a slot (slotSize=${this.g.slotSize})`, {
        details: { length, slotSize: this.g.slotSize },
      });
  }

  /** A writable view of `length` bytes in a free slot, or null when none is free. Never waits. */
  tryAlloc(length: number): Uint8Array | null {
    this.assertOpen();
    this.checkLength(length);
    let ref = this.slab.alloc(this.myOwner);
    if (ref < 0) {
      // Slots held by a B that has since been replaced come back here (one atomic load).
      this.checkPeerReopened();
      ref = this.slab.alloc(this.myOwner);
      if (ref < 0) return null;
    }
    const slot = slotOf(ref);
    this.allocGen[slot] = generationOf(ref) + 1;
    if (STOP_AT !== null) stopAt('session.holding-slot');
    const cached = this.views[slot];
    if (cached !== undefined && cached.length === length) return cached;
    const at = this.slotAt(slot);
    const view = this.seg.views.u8.subarray(at, at + length);
    this.views[slot] = view;
    return view;
  }

  /** tryAlloc() that waits (spin, then park) for a slot to be freed. SHM_ERR_TIMEOUT, _PEER_DEAD. */
  async alloc(length: number, options?: WaitOptions): Promise<Uint8Array> {
    const view = this.tryAlloc(length);
    if (view !== null) return view;
    let got: Uint8Array | null = null;
    const deadline = deadlineOf(options);
    const spec: WaitSpec = {
      attempt: () => {
        got = this.tryAlloc(length);
        return got !== null;
      },
      check: this.checkPeer,
      deadline,
      timeout: () => this.timeout('waiting for a free slot', options?.timeoutMs),
    };
    await waitAsync(this.mySlotWait, this.policy, spec, () => this.assertOpen());
    return got as unknown as Uint8Array;
  }

  /** Gives an allocated, unsent slot back (e.g. after an error while filling it). */
  free(view: Uint8Array): void {
    this.assertOpen();
    const slot = this.ownSlot(view);
    if (slot < 0)
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, 'this view is not a slot allocated by this peer');
    const generation = this.allocGen[slot] - 1;
    this.allocGen[slot] = 0;
    this.slab.free(slot, generation);
    if (this.slab.refilled) this.wakeSlotWaiters(); // see Slab.refilled: other frees wake no one
  }

  /** The slot index if `view` starts at a slot this peer allocated and has not sent, else -1. */
  private ownSlot(view: Uint8Array): number {
    const offset = view.byteOffset - this.g.slotsOffset;
    if (offset < 0 || offset % this.g.slotSize !== 0) return -1;
    const slot = offset / this.g.slotSize;
    if (this.allocGen[slot] === 0) return -1;
    // Usually tryAlloc()'s own object (views[] caches it per slot): identity proves it is on
    // this mapping, cheaper than reading view.buffer; a subarray of it takes the second test.
    return this.views[slot] === view || view.buffer === this.seg.views.buffer ? slot : -1;
  }

  private wakeSlotWaiters(): void {
    this.mySlotWait.wake();
    this.peerSlotWait.wake();
  }

  /** Called by SessionMessage.release(). */
  releaseSlot(slot: number, generation: number, view: Uint8Array): void {
    // After close() the mapping is gone; the peer reclaims what this side held.
    if (this.closedByUs) return;
    if (DEBUG) view.fill(POISON);
    const status = this.slab.free(slot, generation);
    if (status !== SlabStatus.OK)
      throw new ShmFrameError(
        ErrorCode.CORRUPT,
        `release of slot ${slot} (generation ${generation}) refused: ${statusName(status)}`,
        {
          details: { slot, generation, status: statusName(status) },
        },
      );
    if (this.slab.refilled) this.wakeSlotWaiters();
  }

  // ---------------------------------------------------------------- sending

  /** Writes the descriptor; false when the ring has no room now. */
  private writeDescriptor(
    channel: number,
    flags: number,
    slot: number,
    generation: number,
    inline: Uint8Array | null,
    length: number,
  ): boolean {
    return writeDescriptor(this.writer, this.seg.views, { channel, flags, slot, generation, length }, inline);
  }

  /**
   * Sends without waiting: a slot view from alloc() goes zero-copy (only the descriptor);
   * other bytes go inline (<= inlineMax) or are copied into a free slot. False when there is
   * no ring room or no free slot now (an allocated view stays allocated).
   */
  trySend(data: Uint8Array, options?: SendOptions): boolean {
    this.assertOpen();
    const channel = checkU32(options?.channel, 'channel');
    const flags = checkU32(options?.flags, 'flags');
    const own = this.ownSlot(data);
    if (own >= 0) return this.sendSlot(own, data.length, channel, flags);
    if (data.length <= this.g.inlineMax) return this.writeDescriptor(channel, flags, INLINE_SLOT, 0, data, data.length);
    this.checkLength(data.length);
    const view = this.tryAlloc(data.length);
    if (view === null) return false;
    view.set(data);
    const slot = this.ownSlot(view);
    if (this.sendSlot(slot, data.length, channel, flags)) return true;
    this.free(view);
    return false;
  }

  private sendSlot(slot: number, length: number, channel: number, flags: number): boolean {
    const generation = this.allocGen[slot] - 1;
    // The sending record first (layout/session.ts): if this process dies between here and the
    // descriptor's publication, whoever reclaims after it frees the slot (reclaimOrphan()).
    // Plain stores: it is read only once this peer is gone.
    const i32 = this.seg.views.i32;
    const record = this.sendingIndex;
    i32[record + 1] = generation;
    i32[record + 2] = this.writer.tail;
    i32[record] = slot + 1;
    // In flight before the descriptor is published: the receiver finds it so.
    const status = this.slab.markInFlight(slot, generation);
    if (status !== SlabStatus.OK) {
      i32[record] = 0;
      throw new ShmFrameError(ErrorCode.CORRUPT, `slot ${slot} cannot be sent: ${statusName(status)}`);
    }
    if (STOP_AT !== null) stopAt('session.in-flight');
    if (!this.writeDescriptor(channel, flags, slot, generation, null, length)) {
      // No ring room: back to ALLOCATED (still ours, still unsent).
      this.slab.revert(slot, generation);
      i32[record] = 0;
      return false;
    }
    i32[record] = 0;
    this.allocGen[slot] = 0;
    return true;
  }

  /** trySend() that waits (spin, then park) for ring room and slots. SHM_ERR_TIMEOUT, _PEER_DEAD, _PEER_CLOSED. */
  async send(data: Uint8Array, options?: SendOptions): Promise<void> {
    if (this.trySend(data, options)) return;
    const deadline = deadlineOf(options);
    const own = this.ownSlot(data);
    // Copy path: first a slot (wait on slot frees), then ring room.
    let payload = data;
    if (own < 0 && data.length > this.g.inlineMax)
      payload = await this.alloc(data.length, options).then((v) => {
        v.set(data);
        return v;
      });
    const spec: WaitSpec = {
      attempt: () => this.trySend(payload, options),
      check: this.checkPeer,
      deadline,
      timeout: () => this.timeout('waiting for room in the descriptor ring', options?.timeoutMs),
    };
    try {
      await waitAsync(this.spaceWait, this.policy, spec, () => this.assertOpen());
    } catch (err) {
      if (payload !== data && this.ownSlot(payload) >= 0) this.free(payload);
      throw err;
    }
  }

  // ---------------------------------------------------------------- receiving

  /** The next message, or null when none is there now. Throws SHM_ERR_CORRUPT for a descriptor that does not match its slot (it is skipped). */
  tryRecv(): SessionMessage | null {
    this.assertOpen();
    let n: number;
    try {
      n = this.reader.poll();
    } catch (err) {
      if (err instanceof RingCorruptError)
        throw new ShmSegmentError(ErrorCode.CORRUPT, `session ${JSON.stringify(this.name)}: ${err.message}`, {
          cause: err,
        });
      throw err;
    }
    if (n < 0) return null;
    const { channel, flags, slot, generation, length, inline } = takeDescriptor(this.reader, this.seg.views, n);
    if (inline !== null) return new SessionMessage(this, channel, flags, inline, -1, 0);
    if (slot >= this.g.slotCount || length > this.g.slotSize)
      throw new ShmFrameError(
        ErrorCode.CORRUPT,
        `descriptor for slot ${slot} / ${length} bytes is out of range (${this.g.slotCount} slots of ${this.g.slotSize})`,
        {
          details: { slot, length },
        },
      );
    const word = this.slab.stateWord(slot);
    if (word >>> 8 !== (generation & 0xffffff) || (word & 3) !== SLOT_IN_FLIGHT)
      throw new ShmFrameError(
        ErrorCode.CORRUPT,
        `stale descriptor: slot ${slot} generation ${generation}, the slot is at generation ${word >>> 8} state ${word & 3}`,
        {
          details: { slot, generation, slotGeneration: word >>> 8, state: word & 3 },
        },
      );
    const from = this.slotAt(slot);
    if (STOP_AT !== null) stopAt('session.holding-message');
    return new SessionMessage(this, channel, flags, this.seg.views.u8.subarray(from, from + length), slot, generation);
  }

  /** Resolves with the next message, waiting (spin, then park) on the event loop. */
  async recv(options?: WaitOptions): Promise<SessionMessage> {
    const m = this.tryRecv();
    if (m !== null) return m;
    let got: SessionMessage | null = null;
    const spec: WaitSpec = {
      attempt: () => this.reader.ready(),
      check: this.checkPeer,
      deadline: deadlineOf(options),
      timeout: () => this.timeout('recv', options?.timeoutMs),
    };
    for (;;) {
      await waitAsync(this.dataWait, this.policy, spec, () => this.assertOpen());
      got = this.tryRecv();
      if (got !== null) return got;
    }
  }

  private timeout(what: string, ms: number | undefined): ShmTimeoutError {
    return new ShmTimeoutError(
      ErrorCode.TIMEOUT,
      `session ${JSON.stringify(this.name)}: ${what} timed out after ${ms} ms`,
      {
        details: { name: this.name, timeoutMs: ms },
      },
    );
  }

  /**
   * Leaves the session: frees this peer's unsent slots, marks it closed (the peer's waits end
   * with SHM_ERR_PEER_CLOSED) and unmaps. Peer A unlinks the segment; B never does. Idempotent.
   */
  close(): void {
    if (this.closedByUs) return;
    for (let slot = 0; slot < this.g.slotCount; slot++)
      if (this.allocGen[slot] !== 0) this.slab.free(slot, this.allocGen[slot] - 1);
    this.allocGen.fill(0);
    this.closedByUs = true;
    const i32 = this.seg.views.i32;
    const myBlock = this.isA ? PEER_A_BLOCK_OFFSET : PEER_B_BLOCK_OFFSET;
    this.reader.release();
    this.reader.publish();
    // SYNC POINT: pairs with the load of closed in the peer's peerGone().
    Atomics.store(i32, (myBlock + PEER_CLOSED_OFFSET) >> 2, 1);
    this.peerDataWait.wakeAlways();
    this.peerSlotWait.wakeAlways();
    for (const w of [this.dataWait, this.spaceWait, this.mySlotWait]) w.close();
    if (this.isA) this.seg.unlinkIfCurrent();
    this.seg.close();
  }
}

function statusName(status: number): string {
  switch (status) {
    case SlabStatus.OUT_OF_RANGE:
      return 'slot out of range';
    case SlabStatus.STALE:
      return 'stale generation';
    case SlabStatus.WRONG_STATE:
      return 'not in flight (double release?)';
    default:
      return 'ok';
  }
}
