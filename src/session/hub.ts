/**
 * Hub: one host and up to 62 peers in one segment, each peer with a descriptor ring each way,
 * all sharing a pool of slots in size classes. The host sends to one peer and receives from
 * any peer (it parks once for all of them); payloads are written once into a slot.
 *
 * ```ts
 * import { Hub } from 'shmbus';
 * const host = Hub.create('plugins', { maxPeers: 8 });          // classes: 1 KiB .. 4 MiB by default
 * const peer = Hub.join('plugins');                               // another process: its peer id
 * const buf = await peer.alloc(10_000);                           // smallest class that fits (16 KiB)
 * buf.fill(1); await peer.send(buf);                              // zero-copy to the host
 * const m = await host.recv();                                    // from any peer: m.peerId, m.data
 * m.release();
 * await host.send(m.peerId, reply);
 * ```
 * A slot is handed over to its destination when sent, so when a peer dies (its liveness lock
 * goes) the host frees exactly the slots that peer held or had allocated, bumping nothing of
 * its own; the generations make any descriptor still naming them stale. Layout:
 * src/layout/hub.ts. One thread per Hub / HubPeer object.
 */
import { checkEndOptions, deadlineOf, type EndOptions, type WaitOptions } from '../channel/channel.js';
import { generationOf, SLOT_ALLOCATED, SLOT_IN_FLIGHT, Slab, SlabStatus, slotOf } from '../core/slab.js';
import { areaReaders, areaWriters, type RingReader, type RingWriter } from '../core/spsc-ring.js';
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
import { DATA_WAIT_OFFSET, SEQ_OFFSET, SLEEPING_OFFSET, SPACE_WAIT_OFFSET } from '../layout/channel.js';
import {
  DEFAULT_CLASSES,
  ENTRY_CLAIMED,
  ENTRY_FREE,
  ENTRY_GENERATION_OFFSET,
  ENTRY_PEER_ID_OFFSET,
  ENTRY_PID_OFFSET,
  ENTRY_SENDING_SLOT_OFFSET,
  ENTRY_SLOT_WAIT_OFFSET,
  ENTRY_STATE_OFFSET,
  HOST_CLOSED_OFFSET,
  HOST_OWNER,
  HOST_PID_OFFSET,
  HOST_SLOT_WAIT_OFFSET,
  HOST_WAIT_OFFSET,
  HUB_MAX_PEERS,
  HUB_PARAMS_LENGTH,
  HUB_PROTOCOL_VERSION,
  type HubGeometry,
  hubGeometry,
  JOIN_SEQ_OFFSET,
  MAX_CLASSES,
  PEER_ROLE_BASE,
  peerAreas,
  readHubParams,
  type SizeClass,
  writeHubParams,
} from '../layout/hub.js';
import { BLOCK_LENGTH, HEADER_LENGTH, Kind, OWNER_ROLE } from '../layout/segment.js';
import { INLINE_SLOT, minRingCapacity } from '../layout/session.js';
import { Segment, type SegmentOptions } from '../segment/segment.js';
import { WaitBlock, type WaitSpec, waitAsync } from '../segment/wake.js';
import { checkU32, slotsNamedFrom, takeDescriptor, writeDescriptor } from './descriptor.js';

export interface HubCreateOptions extends SegmentOptions, EndOptions {
  /** Peers at once (default 8, at most 62). */
  maxPeers?: number;
  /** Descriptor ring bytes per direction per peer (default 64 KiB). */
  ringCapacity?: number;
  /** Payloads up to this size travel inside the descriptor (default 256). */
  inlineMax?: number;
  /** Size classes, smallest first (default 1 KiB x 1024, 16 KiB x 256, 256 KiB x 32, 4 MiB x 8). */
  classes?: readonly SizeClass[];
}

export interface HubSendOptions extends WaitOptions {
  channel?: number;
  flags?: number;
}

/** A received message; `data` is valid until release(). */
export class HubMessage {
  private view: Uint8Array | null;
  /** @internal Made by recv()/tryRecv(), never by callers. */
  constructor(
    private readonly end: Endpoint,
    /** The sending peer (on the host), or -1 (the host, on a peer). */
    readonly peerId: number,
    readonly channel: number,
    readonly flags: number,
    view: Uint8Array,
    /** class << 16 | slot, or -1 for an inline message. */
    readonly slot: number,
    readonly generation: number,
  ) {
    this.view = view;
  }
  get data(): Uint8Array {
    if (this.view === null) throw new ShmStateError(ErrorCode.CLOSED, 'this message was released');
    return this.view;
  }
  get length(): number {
    return this.view?.length ?? 0;
  }
  release(): void {
    if (this.view === null) return;
    this.view = null;
    if (this.slot >= 0) this.end.releaseSlot(this.slot, this.generation);
  }
}

/** What the host and a peer share: the slabs, allocation and the descriptor codec. */
abstract class Endpoint {
  protected readonly slabs: Slab[];
  /** Slots this side allocated and has not sent: key class << 16 | slot -> generation. */
  protected readonly allocated = new Map<number, number>();
  protected closedByUs = false;
  /** Int32 index of this side's sending record (a peer's entry, layout/hub.ts), or -1 (the host has none). */
  protected sendingIndex = -1;

  constructor(
    protected readonly seg: Segment,
    protected readonly h: HubGeometry,
    protected readonly policy: Required<EndOptions>,
    readonly owner: number,
  ) {
    this.slabs = h.classes.map((c) => new Slab(seg.views.i32, c.slabOffset >> 2, c.slotCount));
  }

  get name(): string {
    return this.seg.name;
  }

  protected assertOpen(): void {
    if (this.closedByUs) throw new ShmStateError(ErrorCode.CLOSED, `hub ${JSON.stringify(this.name)}: closed`);
  }

  /** Wakes whoever may wait for a free slot (the host and every peer that parks for one). */
  protected abstract wakeSlotWaiters(): void;

  /** Free slots per class now (a scan: for inspection). */
  freeSlots(): number[] {
    return this.slabs.map((s) => s.freeCount);
  }

  /**
   * A writable view of `length` bytes in a slot of the smallest class that fits, falling back
   * to larger classes; null when every class that fits is exhausted. SHM_ERR_TOO_LARGE above
   * the largest class. Never waits.
   */
  tryAlloc(length: number): Uint8Array | null {
    this.assertOpen();
    if (!Number.isInteger(length) || length < 0)
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `length must be an integer >= 0, got ${length}`);
    const classes = this.h.classes;
    if (length > classes[classes.length - 1].slotSize)
      throw new ShmFrameError(
        ErrorCode.TOO_LARGE,
        `${length} bytes are more than the largest size class (${classes[classes.length - 1].slotSize})`,
        { details: { length, largest: classes[classes.length - 1].slotSize } },
      );
    for (let c = 0; c < classes.length; c++) {
      if (classes[c].slotSize < length) continue;
      const ref = this.slabs[c].alloc(this.owner);
      if (ref < 0) continue;
      const slot = slotOf(ref);
      this.allocated.set((c << 16) | slot, generationOf(ref));
      if (STOP_AT !== null) stopAt('hub.holding-slot');
      const at = classes[c].slotsOffset + slot * classes[c].slotSize;
      return this.seg.views.u8.subarray(at, at + length);
    }
    return null;
  }

  protected abstract slotWait(): WaitBlock;
  protected abstract readonly checkPeer: () => boolean;

  /** tryAlloc() that waits (spin, then park) for a slot. SHM_ERR_TIMEOUT, _PEER_DEAD. */
  async alloc(length: number, options?: WaitOptions): Promise<Uint8Array> {
    const now = this.tryAlloc(length);
    if (now !== null) return now;
    let got: Uint8Array | null = null;
    const spec: WaitSpec = {
      attempt: () => {
        got = this.tryAlloc(length);
        return got !== null;
      },
      check: this.checkPeer,
      deadline: deadlineOf(options),
      timeout: () => this.timeout('waiting for a free slot', options?.timeoutMs),
    };
    await waitAsync(this.slotWait(), this.policy, spec, () => this.assertOpen());
    return got as unknown as Uint8Array;
  }

  /** The key (class << 16 | slot) of a view this side allocated and has not sent, or -1. */
  protected ownSlot(view: Uint8Array): number {
    if (view.buffer !== this.seg.views.buffer) return -1;
    const classes = this.h.classes;
    for (let c = 0; c < classes.length; c++) {
      const offset = view.byteOffset - classes[c].slotsOffset;
      if (offset < 0 || offset >= classes[c].slotCount * classes[c].slotSize) continue;
      if (offset % classes[c].slotSize !== 0) return -1;
      const key = (c << 16) | (offset / classes[c].slotSize);
      return this.allocated.has(key) ? key : -1;
    }
    return -1;
  }

  /** Gives an allocated, unsent slot back. */
  free(view: Uint8Array): void {
    this.assertOpen();
    const key = this.ownSlot(view);
    if (key < 0) throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, 'this view is not a slot this side allocated');
    const slab = this.slabs[key >>> 16];
    slab.free(key & 0xffff, this.allocated.get(key) as number);
    this.allocated.delete(key);
    if (slab.refilled) this.wakeSlotWaiters(); // see Slab.refilled: other frees wake no one
  }

  /** Called by HubMessage.release(). */
  releaseSlot(key: number, generation: number): void {
    if (this.closedByUs) return;
    const slab = this.slabs[key >>> 16];
    const status = slab.free(key & 0xffff, generation);
    if (status !== SlabStatus.OK)
      throw new ShmFrameError(
        ErrorCode.CORRUPT,
        `release of class ${key >>> 16} slot ${key & 0xffff} refused (status ${status})`,
      );
    if (slab.refilled) this.wakeSlotWaiters();
  }

  /** Sends on `writer` to `destination` (an owner id); false when no ring room or no slot now. */
  protected sendOn(
    writer: RingWriter,
    destination: number,
    data: Uint8Array,
    options: HubSendOptions | undefined,
  ): boolean {
    const channel = checkU32(options?.channel, 'channel');
    const flags = checkU32(options?.flags, 'flags');
    let key = this.ownSlot(data);
    let view = data;
    if (key < 0 && data.length <= this.h.inlineMax)
      return this.writeDescriptor(writer, channel, flags, INLINE_SLOT, 0, data, data.length);
    if (key < 0) {
      const slotView = this.tryAlloc(data.length);
      if (slotView === null) return false;
      slotView.set(data);
      view = slotView;
      key = this.ownSlot(slotView);
    }
    const c = key >>> 16;
    const slot = key & 0xffff;
    const generation = this.allocated.get(key) as number;
    // A peer's sending record first (layout/hub.ts): if it dies before the descriptor is
    // published, the host frees the slot it was handed (Hub.reclaimOrphan()). Plain stores:
    // read only once this peer is gone.
    const i32 = this.seg.views.i32;
    const record = this.sendingIndex;
    if (record >= 0) {
      i32[record + 1] = generation;
      i32[record + 2] = writer.tail;
      i32[record] = key + 1;
    }
    // Handed over before the descriptor is published: the receiver finds it in flight, owned by it.
    if (this.slabs[c].handOver(slot, generation, destination) !== SlabStatus.OK) {
      if (record >= 0) i32[record] = 0;
      throw new ShmFrameError(
        ErrorCode.CORRUPT,
        `class ${c} slot ${slot} cannot be sent (not allocated with generation ${generation})`,
      );
    }
    if (STOP_AT !== null) stopAt('hub.in-flight');
    if (!this.writeDescriptor(writer, channel, flags, key, generation, null, view.length)) {
      // No ring room: the slot is ours again, still allocated and unsent.
      this.slabs[c].retake(slot, generation, this.owner);
      if (record >= 0) i32[record] = 0;
      if (view !== data) {
        this.slabs[c].free(slot, generation);
        this.allocated.delete(key);
      }
      return false;
    }
    if (record >= 0) i32[record] = 0;
    this.allocated.delete(key);
    return true;
  }

  private writeDescriptor(
    writer: RingWriter,
    channel: number,
    flags: number,
    slot: number,
    generation: number,
    inline: Uint8Array | null,
    length: number,
  ): boolean {
    return writeDescriptor(writer, this.seg.views, { channel, flags, slot, generation, length }, inline);
  }

  /** Reads one descriptor from `reader` (already polled, `n` bytes) into a message; throws SHM_ERR_CORRUPT for a stale or bad one. */
  protected message(reader: RingReader, n: number, from: number): HubMessage {
    const d = takeDescriptor(reader, this.seg.views, n);
    const { channel, flags, generation, length } = d;
    if (d.inline !== null) return new HubMessage(this, from, channel, flags, d.inline, -1, 0);
    const key = d.slot;
    const c = key >>> 16;
    const slot = key & 0xffff;
    const cls = this.h.classes[c];
    if (cls === undefined || slot >= cls.slotCount || length > cls.slotSize)
      throw new ShmFrameError(
        ErrorCode.CORRUPT,
        `descriptor for class ${c} slot ${slot} / ${length} bytes is out of range`,
      );
    const word = this.slabs[c].stateWord(slot);
    if (word >>> 8 !== (generation & 0xffffff) || (word & 3) !== SLOT_IN_FLIGHT || ((word >>> 2) & 63) !== this.owner)
      throw new ShmFrameError(
        ErrorCode.CORRUPT,
        `stale descriptor: class ${c} slot ${slot} generation ${generation} from ${from < 0 ? 'the host' : `peer ${from}`}, the slot is at generation ${word >>> 8} state ${word & 3} owner ${(word >>> 2) & 63}`,
        {
          details: {
            class: c,
            slot,
            generation,
            from,
            slotGeneration: word >>> 8,
            state: word & 3,
            owner: (word >>> 2) & 63,
          },
        },
      );
    const start = cls.slotsOffset + slot * cls.slotSize;
    return new HubMessage(
      this,
      from,
      channel,
      flags,
      this.seg.views.u8.subarray(start, start + length),
      key,
      generation,
    );
  }

  protected timeout(what: string, ms: number | undefined): ShmTimeoutError {
    return new ShmTimeoutError(ErrorCode.TIMEOUT, `hub ${JSON.stringify(this.name)}: ${what} timed out after ${ms} ms`);
  }
}

function wait(buffer: ArrayBuffer, i32: Int32Array, at: number): WaitBlock {
  return new WaitBlock(buffer, i32, at + SLEEPING_OFFSET, at + SEQ_OFFSET);
}

/** The host's view of one joined peer. */
class PeerLink {
  readonly writer: RingWriter;
  readonly reader: RingReader;
  readonly slotWait: WaitBlock;
  dead = false;
  constructor(
    readonly index: number,
    readonly generation: number,
    readonly pid: number,
    seg: Segment,
    h: HubGeometry,
  ) {
    const v = seg.views;
    const { base, up, down } = peerAreas(h, index);
    [this.reader] = areaReaders(v, up);
    [this.writer] = areaWriters(v, down);
    const buffer = v.buffer as ArrayBuffer;
    const peerData = wait(buffer, v.i32, down.blocksBase + DATA_WAIT_OFFSET);
    const peerSpace = wait(buffer, v.i32, up.blocksBase + SPACE_WAIT_OFFSET);
    this.slotWait = wait(buffer, v.i32, base + ENTRY_SLOT_WAIT_OFFSET);
    this.writer.onPublish = () => peerData.wake();
    // The peer's send() parks on its slot wait for ring room as well as for slots.
    this.reader.onPublish = () => {
      peerSpace.wake();
      this.slotWait.wake();
    };
  }
}

export class Hub extends Endpoint {
  private readonly hostWait: WaitBlock;
  private readonly hostSlotWait: WaitBlock;
  private readonly links: (PeerLink | null)[];
  private rr = 0;
  private lastSweep = 0;

  private constructor(seg: Segment, h: HubGeometry, policy: Required<EndOptions>) {
    super(seg, h, policy, HOST_OWNER);
    const v = seg.views;
    this.hostWait = wait(v.buffer as ArrayBuffer, v.i32, HOST_WAIT_OFFSET);
    this.hostSlotWait = wait(v.buffer as ArrayBuffer, v.i32, HOST_SLOT_WAIT_OFFSET);
    this.links = new Array(h.maxPeers).fill(null);
  }

  /** Creates hub `name` (the host). SHM_ERR_EXISTS while a live host holds it. */
  static create(name: string, options: HubCreateOptions = {}): Hub {
    const policy = checkEndOptions(options);
    const bad = (m: string) => new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, m);
    const maxPeers = options.maxPeers ?? 8;
    const inlineMax = options.inlineMax ?? 256;
    const classes = options.classes ?? DEFAULT_CLASSES;
    if (!Number.isInteger(maxPeers) || maxPeers < 1 || maxPeers > HUB_MAX_PEERS)
      throw bad(`maxPeers must be an integer in 1..${HUB_MAX_PEERS}, got ${maxPeers}`);
    if (!Number.isInteger(inlineMax) || inlineMax < 0 || inlineMax > 65536)
      throw bad(`inlineMax must be 0..65536, got ${inlineMax}`);
    const ringCapacity = options.ringCapacity ?? Math.max(64 * 1024, minRingCapacity(inlineMax));
    if (
      !Number.isInteger(ringCapacity) ||
      (ringCapacity & (ringCapacity - 1)) !== 0 ||
      ringCapacity < minRingCapacity(inlineMax)
    )
      throw bad(`ringCapacity must be a power of two of at least ${minRingCapacity(inlineMax)}, got ${ringCapacity}`);
    if (!Array.isArray(classes) || classes.length < 1 || classes.length > MAX_CLASSES)
      throw bad(`classes must list 1..${MAX_CLASSES} size classes`);
    for (let i = 0; i < classes.length; i++) {
      const c = classes[i];
      if (
        !Number.isInteger(c?.slotSize) ||
        c.slotSize < 64 ||
        c.slotSize % 8 !== 0 ||
        !Number.isInteger(c.slotCount) ||
        c.slotCount < 1 ||
        c.slotCount > 0xffff
      )
        throw bad(`class ${i}: slotSize must be a multiple of 8 >= 64 and slotCount 1..65535`);
      if (i > 0 && c.slotSize <= classes[i - 1].slotSize)
        throw bad('classes must be listed smallest first, sizes increasing');
    }
    const h = hubGeometry({ maxPeers, ringCapacity, inlineMax, classes });
    const seg = Segment.create(
      name,
      Kind.HUB,
      h.segmentLength,
      HUB_PARAMS_LENGTH,
      (views) => {
        writeHubParams(views.dv, h);
        views.dv.setUint32(HOST_PID_OFFSET, process.pid, true);
        for (const c of h.classes) new Slab(views.i32, c.slabOffset >> 2, c.slotCount).format();
      },
      options,
    );
    return new Hub(seg, h, policy);
  }

  protected slotWait(): WaitBlock {
    return this.hostSlotWait;
  }

  protected wakeSlotWaiters(): void {
    this.hostSlotWait.wake();
    for (const l of this.links) l?.slotWait.wake();
  }

  private entryIndex(i: number, field: number): number {
    return (this.h.peersOffset + i * this.h.peerLength + field) >> 2;
  }

  /** Picks up joined peers, reclaims dead ones (their slots, then their entry). */
  private seenJoinSeq = -1;

  private sweep(force = false): void {
    // SYNC POINT: pairs with Atomics.add(joinSeq) in HubPeer.join(), after its CLAIMED store.
    this.seenJoinSeq = Atomics.load(this.seg.views.i32, JOIN_SEQ_OFFSET >> 2);
    const now = Date.now();
    const live = force || now - this.lastSweep >= this.policy.livenessCheckMs;
    if (live) this.lastSweep = now;
    const i32 = this.seg.views.i32;
    for (let i = 0; i < this.h.maxPeers; i++) {
      const state = Atomics.load(i32, this.entryIndex(i, ENTRY_STATE_OFFSET));
      let link = this.links[i];
      if (state !== ENTRY_CLAIMED) {
        this.links[i] = null;
        continue;
      }
      const generation = Atomics.load(i32, this.entryIndex(i, ENTRY_GENERATION_OFFSET)) >>> 0;
      if (link === null || link.generation !== generation) {
        link = new PeerLink(i, generation, Atomics.load(i32, this.entryIndex(i, ENTRY_PID_OFFSET)), this.seg, this.h);
        this.links[i] = link;
      }
      if (!live || this.seg.roleAlive(PEER_ROLE_BASE + i)) continue;
      if (link.reader.ready()) continue; // deliver what it sent first
      this.reclaimPeer(i);
    }
  }

  /** Frees every slot peer `i` held or allocated, then its entry (so a new peer can join). */
  private reclaimPeer(i: number): void {
    const seg = this.seg;
    if (!seg.tryAcquireRole(PEER_ROLE_BASE + i)) return;
    const free = this.slabs.reduce((n, slab) => n + slab.freeCount, 0);
    const pid = Atomics.load(seg.views.i32, this.entryIndex(i, ENTRY_PID_OFFSET));
    try {
      for (const slab of this.slabs)
        for (let slot = 0; slot < slab.slotCount; slot++) {
          const word = slab.stateWord(slot);
          const state = word & 3;
          if ((state === SLOT_ALLOCATED || state === SLOT_IN_FLIGHT) && ((word >>> 2) & 63) === i)
            slab.free(slot, word >>> 8);
        }
      this.reclaimOrphan(i);
      if (STOP_AT !== null) stopAt('hub.mid-reclaim');
      Atomics.store(seg.views.i32, this.entryIndex(i, ENTRY_STATE_OFFSET), ENTRY_FREE);
      this.links[i] = null;
    } finally {
      seg.releaseRole(PEER_ROLE_BASE + i);
    }
    this.wakeSlotWaiters();
    if (diagnostics.peerDied.hasSubscribers)
      diagnostics.peerDied.publish({ primitive: 'hub', name: this.name, peer: i, pid });
    const count = this.slabs.reduce((n, slab) => n + slab.freeCount, 0) - free;
    if (count > 0 && diagnostics.recovered.hasSubscribers)
      diagnostics.recovered.publish({ primitive: 'hub', name: this.name, what: 'slots', count, pid });
  }

  /**
   * The slot dead peer `i` was sending (its entry's sending record): handed over to the host
   * (IN_FLIGHT, owner HOST_OWNER) but, if no descriptor naming it follows the recorded tail
   * in its up ring, never published: nobody would ever release it, so it is freed here. The
   * caller holds the peer's role (no new peer i can send meanwhile).
   */
  private reclaimOrphan(i: number): void {
    const i32 = this.seg.views.i32;
    const at = this.entryIndex(i, ENTRY_SENDING_SLOT_OFFSET);
    const key = i32[at] - 1;
    if (key < 0) return;
    i32[at] = 0;
    const generation = i32[at + 1] >>> 0;
    const slab = this.slabs[key >>> 16];
    const slot = key & 0xffff;
    if (slab === undefined || slot >= slab.slotCount) return;
    const word = slab.stateWord(slot);
    if ((word & 3) !== SLOT_IN_FLIGHT || word >>> 8 !== (generation & 0xffffff) || ((word >>> 2) & 63) !== HOST_OWNER)
      return;
    if (slotsNamedFrom(this.seg.views, peerAreas(this.h, i).up, i32[at + 2]).has(key)) return;
    slab.free(slot, generation);
  }

  /** The peers joined now. */
  peers(): { peerId: number; pid: number }[] {
    this.assertOpen();
    this.sweep();
    return this.links.filter((l): l is PeerLink => l !== null).map((l) => ({ peerId: l.index, pid: l.pid }));
  }

  protected readonly checkPeer = (): boolean => {
    this.assertOpen();
    this.sweep();
    return false;
  };

  private link(peerId: number): PeerLink {
    this.sweep();
    const l = Number.isInteger(peerId) ? this.links[peerId] : undefined;
    if (l === null || l === undefined)
      throw new ShmStateError(ErrorCode.PEER_DEAD, `hub ${JSON.stringify(this.name)}: no peer ${peerId} is joined`, {
        details: { peerId },
      });
    return l;
  }

  /** Sends to peer `peerId` without waiting; false when no ring room or no slot now. */
  trySend(peerId: number, data: Uint8Array, options?: HubSendOptions): boolean {
    this.assertOpen();
    return this.sendOn(this.link(peerId).writer, peerId, data, options);
  }

  /** Sends to peer `peerId`, waiting (spin, then park) for a slot and ring room. */
  async send(peerId: number, data: Uint8Array, options?: HubSendOptions): Promise<void> {
    if (this.trySend(peerId, data, options)) return;
    const spec: WaitSpec = {
      attempt: () => this.trySend(peerId, data, options),
      check: () => {
        this.link(peerId); // throws PEER_DEAD once it is gone
        return false;
      },
      deadline: deadlineOf(options),
      timeout: () => this.timeout(`send to peer ${peerId}`, options?.timeoutMs),
    };
    await waitAsync(this.hostSlotWait, this.policy, spec, () => this.assertOpen());
  }

  /** The next message from any peer (round robin), or null. */
  tryRecv(): HubMessage | null {
    this.assertOpen();
    // Peers that joined since the last sweep (one atomic load; the liveness sweep runs in waits).
    if (Atomics.load(this.seg.views.i32, JOIN_SEQ_OFFSET >> 2) !== this.seenJoinSeq) this.sweep();
    const links = this.links;
    for (let k = 0; k < links.length; k++) {
      const i = (this.rr + k) % links.length;
      const l = links[i];
      if (l === null) continue;
      const n = l.reader.poll();
      if (n < 0) continue;
      this.rr = (i + 1) % links.length;
      return this.message(l.reader, n, i);
    }
    return null;
  }

  /** Resolves with the next message from any peer; parks once for all of them (peers wake the host). */
  async recv(options?: WaitOptions): Promise<HubMessage> {
    const spec: WaitSpec = {
      attempt: () => this.links.some((l) => l?.reader.ready()),
      check: this.checkPeer,
      deadline: deadlineOf(options),
      timeout: () => this.timeout('recv', options?.timeoutMs),
    };
    for (;;) {
      this.sweep();
      const m = this.tryRecv();
      if (m !== null) return m;
      await waitAsync(this.hostWait, this.policy, spec, () => this.assertOpen());
    }
  }

  /** Reclaims dead peers now (also done while waiting). */
  reclaim(): void {
    this.assertOpen();
    this.sweep(true);
  }

  close(): void {
    if (this.closedByUs) return;
    this.closedByUs = true;
    const i32 = this.seg.views.i32;
    Atomics.store(i32, HOST_CLOSED_OFFSET >> 2, 1);
    for (let i = 0; i < this.h.maxPeers; i++) {
      const { down } = peerAreas(this.h, i);
      wait(this.seg.views.buffer as ArrayBuffer, i32, down.blocksBase + DATA_WAIT_OFFSET).wakeAlways();
      wait(
        this.seg.views.buffer as ArrayBuffer,
        i32,
        this.h.peersOffset + i * this.h.peerLength + ENTRY_SLOT_WAIT_OFFSET,
      ).wakeAlways();
    }
    this.hostWait.close();
    this.hostSlotWait.close();
    this.seg.unlinkIfCurrent();
    this.seg.close();
  }
}

export class HubPeer extends Endpoint {
  private readonly writer: RingWriter;
  private readonly reader: RingReader;
  private readonly dataWait: WaitBlock;
  private readonly mySlotWait: WaitBlock;
  private readonly hostSlotWait: WaitBlock;
  private livenessCheckedAt = 0;

  private constructor(
    seg: Segment,
    h: HubGeometry,
    policy: Required<EndOptions>,
    readonly peerId: number,
  ) {
    super(seg, h, policy, peerId);
    this.sendingIndex = (h.peersOffset + peerId * h.peerLength + ENTRY_SENDING_SLOT_OFFSET) >> 2;
    const v = seg.views;
    const buffer = v.buffer as ArrayBuffer;
    const { base, up, down } = peerAreas(h, peerId);
    [this.writer] = areaWriters(v, up);
    [this.reader] = areaReaders(v, down);
    const hostWait = wait(buffer, v.i32, HOST_WAIT_OFFSET);
    const hostSpace = wait(buffer, v.i32, down.blocksBase + SPACE_WAIT_OFFSET);
    this.dataWait = wait(buffer, v.i32, down.blocksBase + DATA_WAIT_OFFSET);
    this.mySlotWait = wait(buffer, v.i32, base + ENTRY_SLOT_WAIT_OFFSET);
    this.hostSlotWait = wait(buffer, v.i32, HOST_SLOT_WAIT_OFFSET);
    this.writer.onPublish = () => hostWait.wake();
    // The host's send() parks on its slot wait for ring room as well as for slots.
    this.reader.onPublish = () => {
      hostSpace.wake();
      this.hostSlotWait.wake();
    };
    this.entrySlotWaits = Array.from({ length: h.maxPeers }, (_, i) =>
      wait(buffer, v.i32, h.peersOffset + i * h.peerLength + ENTRY_SLOT_WAIT_OFFSET),
    );
  }

  /** Every peer entry's slot wait (a freed slot may be what any of them waits for). */
  private readonly entrySlotWaits: WaitBlock[];

  /**
   * Joins hub `name` as a peer: as `peerId` if given (SHM_ERR_BUSY if taken), else the first
   * free entry (SHM_ERR_REFUSED when all maxPeers are taken). SHM_ERR_PEER_DEAD without a live host.
   */
  static join(name: string, options: SegmentOptions & EndOptions & { peerId?: number } = {}): HubPeer {
    const policy = checkEndOptions(options);
    const seg = Segment.open(name, Kind.HUB, options);
    try {
      const where = `hub ${JSON.stringify(name)}`;
      if (seg.header.paramsLength < HUB_PARAMS_LENGTH)
        throw new ShmSegmentError(ErrorCode.CORRUPT, `${where} has paramsLength=${seg.header.paramsLength}`);
      const { protocol, h, problems } = readHubParams(seg.views.dv, Math.min(seg.length, seg.header.segmentLength));
      if (protocol >>> 16 !== HUB_PROTOCOL_VERSION >>> 16)
        throw new ShmSegmentError(ErrorCode.VERSION_MISMATCH, `${where} speaks hub protocol ${protocol >>> 16}`);
      if (h === null)
        throw new ShmSegmentError(ErrorCode.CORRUPT, `${where} has a corrupt header: ${problems.join('; ')}`);
      if (!seg.roleAlive(OWNER_ROLE) || Atomics.load(seg.views.i32, HOST_CLOSED_OFFSET >> 2) !== 0)
        throw new ShmStateError(ErrorCode.PEER_DEAD, `${where} has no live host`);
      const wanted = options.peerId;
      if (wanted !== undefined && !(Number.isInteger(wanted) && wanted >= 0 && wanted < h.maxPeers))
        throw new ShmArgumentError(
          ErrorCode.INVALID_ARGUMENT,
          `peerId must be an integer in 0..${h.maxPeers - 1}, got ${wanted}`,
        );
      const candidates = wanted === undefined ? [...Array(h.maxPeers).keys()] : [wanted];
      const i32 = seg.views.i32;
      for (const i of candidates) {
        if (!seg.tryAcquireRole(PEER_ROLE_BASE + i)) continue;
        const entry = (h.peersOffset + i * h.peerLength) >> 2;
        if (Atomics.load(i32, entry + (ENTRY_STATE_OFFSET >> 2)) !== ENTRY_FREE) {
          seg.releaseRole(PEER_ROLE_BASE + i); // a dead peer's entry the host has not reclaimed yet
          continue;
        }
        const { up, down } = peerAreas(h, i);
        for (const area of [up, down])
          seg.views.u8.fill(0, area.blocksBase + HEADER_OF_AREA, area.blocksBase + HEADER_OF_AREA + 4 * BLOCK_LENGTH);
        Atomics.store(i32, entry + (ENTRY_SENDING_SLOT_OFFSET >> 2), 0);
        Atomics.store(i32, entry + (ENTRY_PEER_ID_OFFSET >> 2), i);
        Atomics.store(i32, entry + (ENTRY_PID_OFFSET >> 2), process.pid);
        Atomics.add(i32, entry + (ENTRY_GENERATION_OFFSET >> 2), 1);
        // SYNC POINT: pairs with Atomics.load(state) in Hub.sweep(); the rings are reset first.
        Atomics.store(i32, entry + (ENTRY_STATE_OFFSET >> 2), ENTRY_CLAIMED);
        Atomics.add(i32, JOIN_SEQ_OFFSET >> 2, 1);
        return new HubPeer(seg, h, policy, i);
      }
      throw wanted === undefined
        ? new ShmStateError(ErrorCode.REFUSED, `${where} already has maxPeers=${h.maxPeers} peers`, {
            details: { reason: 'max-peers' },
          })
        : new ShmSegmentError(ErrorCode.BUSY, `${where}: peer id ${wanted} is taken`, { details: { peerId: wanted } });
    } catch (err) {
      seg.close();
      throw err;
    }
  }

  protected slotWait(): WaitBlock {
    return this.mySlotWait;
  }

  protected wakeSlotWaiters(): void {
    this.hostSlotWait.wake();
    for (const w of this.entrySlotWaits) w.wake();
  }

  private hostGone(): ShmStateError | null {
    if (Atomics.load(this.seg.views.i32, HOST_CLOSED_OFFSET >> 2) !== 0)
      return new ShmStateError(ErrorCode.PEER_CLOSED, `hub ${JSON.stringify(this.name)}: the host closed`);
    const now = Date.now();
    if (now - this.livenessCheckedAt < this.policy.livenessCheckMs) return null;
    this.livenessCheckedAt = now;
    return this.seg.roleAlive(OWNER_ROLE)
      ? null
      : new ShmStateError(ErrorCode.PEER_DEAD, `hub ${JSON.stringify(this.name)}: the host died`);
  }

  protected readonly checkPeer = (): boolean => {
    this.assertOpen();
    const err = this.hostGone();
    if (err !== null) throw err;
    return false;
  };

  trySend(data: Uint8Array, options?: HubSendOptions): boolean {
    this.assertOpen();
    return this.sendOn(this.writer, HOST_OWNER, data, options);
  }

  async send(data: Uint8Array, options?: HubSendOptions): Promise<void> {
    if (this.trySend(data, options)) return;
    const spec: WaitSpec = {
      attempt: () => this.trySend(data, options),
      check: this.checkPeer,
      deadline: deadlineOf(options),
      timeout: () => this.timeout('send', options?.timeoutMs),
    };
    await waitAsync(this.mySlotWait, this.policy, spec, () => this.assertOpen());
  }

  tryRecv(): HubMessage | null {
    this.assertOpen();
    const n = this.reader.poll();
    return n < 0 ? null : this.message(this.reader, n, -1);
  }

  async recv(options?: WaitOptions): Promise<HubMessage> {
    const spec: WaitSpec = {
      attempt: () => this.reader.ready(),
      check: this.checkPeer,
      deadline: deadlineOf(options),
      timeout: () => this.timeout('recv', options?.timeoutMs),
    };
    for (;;) {
      const m = this.tryRecv();
      if (m !== null) return m;
      await waitAsync(this.dataWait, this.policy, spec, () => this.assertOpen());
    }
  }

  /** Leaves: frees unsent slots; the host reclaims the rest when it sees the lock go. */
  close(): void {
    if (this.closedByUs) return;
    for (const [key, generation] of this.allocated) this.slabs[key >>> 16].free(key & 0xffff, generation);
    this.allocated.clear();
    this.closedByUs = true;
    for (const w of [this.dataWait, this.mySlotWait]) w.close();
    this.seg.close();
  }
}

/** An area's first block sits at blocksBase + HEADER_LENGTH, as a channel's blocks follow its header. */
const HEADER_OF_AREA = HEADER_LENGTH;
