/**
 * Daemon: one process publishes shared state that any number of clients read lock-free, and
 * serves the commands and requests its clients send (src/rpc/client.ts).
 *
 * ```ts
 * import { Daemon } from 'shmbus';
 * const d = Daemon.create('pricing', { dataSize: 1 << 20, maxClients: 16 });
 * d.writeData(bytes);                                          // publish a new state version
 * const server = d.serve(async (clientId, cmd) => reply);     // reply: Uint8Array | string | void
 * await server.stop();
 * d.close();                                                   // clients learn at once; the file goes
 * ```
 * Each client has its own command rings (critical / high / low) and response ring in the
 * daemon's segment, so producers never contend; the daemon takes commands in strict priority
 * order across clients (round robin among clients within a class), FIFO per client. Replies
 * go to the requesting client's ring with its request id. Clients that die are noticed by
 * their liveness lock; their committed commands are still served, then their slot is
 * reclaimed. Layout: src/layout/daemon.ts, docs/LAYOUT.md.
 *
 * One thread owns a Daemon. writeData() never blocks and allocates nothing; serve() runs on
 * the event loop (parks there when idle) and lets the loop turn every 256 commands.
 */
import { checkEndOptions, type EndOptions } from '../channel/channel.js';
import { areaReaders, areaWriters, RingCorruptError, type RingReader, type RingWriter } from '../core/spsc-ring.js';
import { StateWriter } from '../core/state-cells.js';
import { STOP_AT, stopAt } from '../core/test-hooks.js';
import { ErrorCode, ShmArgumentError, ShmStateError } from '../errors.js';
import { DATA_WAIT_OFFSET, SEQ_OFFSET, SLEEPING_OFFSET, SPACE_WAIT_OFFSET } from '../layout/channel.js';
import {
  CLAIM_SEQ_OFFSET,
  CLIENT_ROLE_BASE,
  CMD_CLASS_SHARES,
  CMD_WAIT_OFFSET,
  capacityFor,
  DAEMON_CLOSED_OFFSET,
  DAEMON_PARAMS_LENGTH,
  DAEMON_PID_OFFSET,
  type DaemonGeometry,
  daemonGeometry,
  FRAME_HEADER_LENGTH,
  RECLAIM_REQUEST_OFFSET,
  SLOT_CLAIMED,
  SLOT_CLIENT_ID_OFFSET,
  SLOT_FREE,
  SLOT_GENERATION_OFFSET,
  SLOT_PID_OFFSET,
  SLOT_STATE_OFFSET,
  SLOT_STATE_WAIT_OFFSET,
  STATUS_ERROR,
  STATUS_OK,
  slotAreas,
  writeDaemonParams,
} from '../layout/daemon.js';
import { Kind } from '../layout/segment.js';
import { Segment, type SegmentOptions } from '../segment/segment.js';
import { WaitBlock, type WaitSpec, waitAsync } from '../segment/wake.js';

export interface DaemonCreateOptions extends SegmentOptions, EndOptions {
  /** Largest state in bytes (default 64 KiB). Four cells of it are reserved. */
  dataSize?: number;
  /** Commands of cmdMaxBytes a client may have queued in each priority class (default 64): sizes the command rings. */
  cmdSlots?: number;
  /** Largest command payload (default 4096). */
  cmdMaxBytes?: number;
  /** Clients at once (default 16); the next Client.connect gets SHM_ERR_REFUSED. */
  maxClients?: number;
  /** Response ring bytes per client, a power of two (default 1 MiB); a reply may use half. */
  respCapacity?: number;
}

/** What a handler returns: the reply payload (strings are UTF-8), or nothing. */
export type Reply = Uint8Array | string | null | undefined | undefined;
export type Handler = (clientId: number, cmd: Uint8Array) => Reply | Promise<Reply>;

export interface ServeHandle {
  /** Stops after the command in progress; resolves when the loop has ended. */
  stop(): Promise<void>;
  /** Resolves when the loop ends (stop() or close()); rejects if it failed. */
  readonly done: Promise<void>;
}

export interface DaemonClientInfo {
  slot: number;
  clientId: number;
  pid: number;
  commands: number;
  replies: number;
  /** Replies waiting in the daemon's memory because the client's response ring was full. */
  backlog: number;
}

export interface DaemonStats {
  dataVersion: number;
  clients: number;
  commands: number;
  replies: number;
  /** Handler calls that threw (the requester got SHM_ERR_REMOTE). */
  handlerErrors: number;
  /** Replies dropped: the client left, or its backlog overflowed. */
  droppedReplies: number;
  /** Malformed command frames skipped, and client rings found corrupt. */
  badFrames: number;
  /** Clients whose command ring held a record that cannot be valid: no longer read. */
  corruptClients: number;
  lastCorruption: string | null;
  reclaimed: number;
}

const encoder = new TextEncoder();
const YIELD_EVERY = 256;
const BACKLOG_MAX = 4096;
const EMPTY = new Uint8Array(0);

function isThenable(x: unknown): x is PromiseLike<Reply> {
  return typeof (x as { then?: unknown } | null)?.then === 'function';
}

/** The daemon's view of one claimed client slot. */
class Peer {
  readonly readers: RingReader[];
  readonly writer: RingWriter;
  readonly stateWait: WaitBlock;
  readonly respDataWait: WaitBlock;
  readonly cmdSpaceWait: WaitBlock;
  readonly backlog: Uint8Array[] = [];
  /** Largest reply payload + header the response ring takes. */
  readonly maxReplyFrame: number;
  dead = false;
  commands = 0;
  replies = 0;

  constructor(
    readonly slot: number,
    readonly clientId: number,
    readonly generation: number,
    readonly pid: number,
    seg: Segment,
    d: DaemonGeometry,
  ) {
    const v = seg.views;
    const buffer = v.buffer as ArrayBuffer;
    const { base, cmd, resp } = slotAreas(d, slot);
    this.readers = areaReaders(v, cmd);
    [this.writer] = areaWriters(v, resp);
    this.maxReplyFrame = resp.g.maxFrame;
    const block = (at: number) => new WaitBlock(buffer, v.i32, at + SLEEPING_OFFSET, at + SEQ_OFFSET);
    this.stateWait = block(base + SLOT_STATE_WAIT_OFFSET);
    this.respDataWait = block(resp.blocksBase + DATA_WAIT_OFFSET);
    this.cmdSpaceWait = block(cmd.blocksBase + SPACE_WAIT_OFFSET);
    // SYNC POINT: the head/tail stores precede these loads of the client's sleeping flags
    // (WaitBlock.wake), pairing with WaitBlock.prepare() in the client.
    for (const r of this.readers) r.onPublish = () => this.cmdSpaceWait.wake();
    this.writer.onPublish = () => this.respDataWait.wake();
  }

  /** Its rings held a record that cannot be valid: never read again (the client is at fault, not the daemon). */
  corrupt = false;

  anyCommand(): boolean {
    if (this.corrupt) return false;
    for (const r of this.readers) if (r.ready()) return true;
    return false;
  }
}

export class Daemon {
  private readonly d: DaemonGeometry;
  private readonly state: StateWriter;
  private readonly cmdWait: WaitBlock;
  private readonly peers: (Peer | null)[];
  private readonly policy: Required<EndOptions>;
  private rr = 0;
  /** The last client ring found corrupt (for stats and diagnosis). */
  private corruptError: Error | null = null;
  /** Slots (and the generation) whose rings were corrupt when first seen: not served. */
  private readonly unusable = new Map<number, number>();
  private closedByUs = false;
  private serving: { stop: boolean; wake: () => void } | null = null;
  private lastSweep = 0;
  private readonly counters = {
    commands: 0,
    replies: 0,
    handlerErrors: 0,
    droppedReplies: 0,
    badFrames: 0,
    reclaimed: 0,
  };

  private constructor(
    private readonly seg: Segment,
    d: DaemonGeometry,
    policy: Required<EndOptions>,
  ) {
    this.d = d;
    this.policy = policy;
    const v = seg.views;
    this.state = new StateWriter(v, d);
    this.cmdWait = new WaitBlock(
      v.buffer as ArrayBuffer,
      v.i32,
      CMD_WAIT_OFFSET + SLEEPING_OFFSET,
      CMD_WAIT_OFFSET + SEQ_OFFSET,
    );
    this.peers = new Array(d.maxClients).fill(null);
  }

  /**
   * Creates daemon `name`. Fails with SHM_ERR_EXISTS while another daemon of that name is
   * alive; replaces the segment of a dead one.
   */
  static create(name: string, options: DaemonCreateOptions = {}): Daemon {
    const policy = checkEndOptions(options);
    const dataSize = options.dataSize ?? 64 * 1024;
    const maxClients = options.maxClients ?? 16;
    const cmdSlots = options.cmdSlots ?? 64;
    const cmdMaxBytes = options.cmdMaxBytes ?? 4096;
    const bad = (m: string) => new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, m);
    if (!Number.isInteger(dataSize) || dataSize < 8 || dataSize > 1 << 30)
      throw bad(`dataSize must be an integer in 8..1 GiB, got ${dataSize}`);
    if (!Number.isInteger(maxClients) || maxClients < 1 || maxClients > 1024)
      throw bad(`maxClients must be an integer in 1..1024, got ${maxClients}`);
    if (!Number.isInteger(cmdSlots) || cmdSlots < 1 || cmdSlots > 1 << 20)
      throw bad(`cmdSlots must be an integer in 1..1048576, got ${cmdSlots}`);
    if (!Number.isInteger(cmdMaxBytes) || cmdMaxBytes < 1 || cmdMaxBytes > 1 << 24)
      throw bad(`cmdMaxBytes must be an integer in 1..16 MiB, got ${cmdMaxBytes}`);
    // Command rings: each class ring holds cmdSlots records of the largest command, plus one
    // record's worth for the padding a wrap may leave.
    const record = (cmdMaxBytes + FRAME_HEADER_LENGTH + 8 + 7) & ~7;
    let cmdCapacity = capacityFor(cmdMaxBytes + FRAME_HEADER_LENGTH, CMD_CLASS_SHARES);
    while (Math.floor(cmdCapacity / CMD_CLASS_SHARES.length / 8) * 8 < (cmdSlots + 1) * record) cmdCapacity *= 2;
    const respCapacity = options.respCapacity ?? 1 << 20;
    if (
      !Number.isInteger(respCapacity) ||
      respCapacity < 1024 ||
      respCapacity > 1 << 30 ||
      (respCapacity & (respCapacity - 1)) !== 0
    )
      throw bad(`respCapacity must be a power of two in 1 KiB..1 GiB, got ${respCapacity}`);
    const d = daemonGeometry({ dataSize, maxClients, cmdCapacity, respCapacity, cmdMaxBytes });
    const seg = Segment.create(
      name,
      Kind.DAEMON,
      d.segmentLength,
      DAEMON_PARAMS_LENGTH,
      (views) => {
        writeDaemonParams(views.dv, d);
        views.dv.setUint32(DAEMON_PID_OFFSET, process.pid, true);
      },
      options,
    );
    return new Daemon(seg, d, policy);
  }

  get name(): string {
    return this.seg.name;
  }

  get geometry(): DaemonGeometry {
    return this.d;
  }

  private assertOpen(): void {
    if (this.closedByUs) throw new ShmStateError(ErrorCode.CLOSED, `daemon ${JSON.stringify(this.name)} is closed`);
  }

  // ---------------------------------------------------------------- shared state

  /**
   * Publishes `bytes` (at most dataSize) as the new state and returns its version. Readers
   * see it complete or not at all; parked waitData() calls wake. Never blocks.
   */
  writeData(bytes: Uint8Array): number {
    this.assertOpen();
    const version = this.state.write(bytes);
    this.scanIfClaimed(); // so that a client that just connected is woken too
    for (const peer of this.peers) peer?.stateWait.wake();
    this.sweepIfDue();
    return version;
  }

  get dataVersion(): number {
    return this.state.version;
  }

  // ---------------------------------------------------------------- clients

  private slotIndex(slot: number, field: number): number {
    return (this.d.slotsOffset + slot * this.d.slotLength + field) >> 2;
  }

  private seenClaimSeq = -1;

  /** scan() if a client claimed a slot since the last one (one atomic load). */
  private scanIfClaimed(): void {
    if (Atomics.load(this.seg.views.i32, CLAIM_SEQ_OFFSET >> 2) !== this.seenClaimSeq) this.scan();
  }

  /** Picks up newly claimed slots and forgets freed ones. Cheap: a few atomic loads per slot. */
  private scan(): void {
    const i32 = this.seg.views.i32;
    // SYNC POINT: pairs with Atomics.add(claimSeq) in Client.claim(), after its CLAIMED store.
    this.seenClaimSeq = Atomics.load(i32, CLAIM_SEQ_OFFSET >> 2);
    for (let slot = 0; slot < this.d.maxClients; slot++) {
      // SYNC POINT: pairs with Atomics.store(state, CLAIMED) in Client.connect(); the client
      // reset its rings and wrote its id before it claimed.
      const state = Atomics.load(i32, this.slotIndex(slot, SLOT_STATE_OFFSET));
      const peer = this.peers[slot];
      if (state !== SLOT_CLAIMED) {
        this.peers[slot] = null; // only the daemon frees a slot, so nothing of it is left
        continue;
      }
      const generation = Atomics.load(i32, this.slotIndex(slot, SLOT_GENERATION_OFFSET)) >>> 0;
      if (peer !== null && peer.generation === generation) continue;
      if (this.unusable.get(slot) === generation) continue;
      try {
        this.peers[slot] = new Peer(
          slot,
          Atomics.load(i32, this.slotIndex(slot, SLOT_CLIENT_ID_OFFSET)) >>> 0,
          generation,
          Atomics.load(i32, this.slotIndex(slot, SLOT_PID_OFFSET)) >>> 0,
          this.seg,
          this.d,
        );
        this.unusable.delete(slot);
      } catch (err) {
        // A client whose rings are corrupt from the start (it wrote garbage into its own slot)
        // is not served; the others are, and this slot is looked at again once reclaimed.
        this.peers[slot] = null;
        this.unusable.set(slot, generation);
        this.counters.badFrames++;
        this.corruptError = err instanceof Error ? err : new Error(String(err));
      }
    }
  }

  /** Marks clients whose liveness lock is gone; frees the slots of dead clients with nothing left to serve. */
  private sweep(): void {
    this.lastSweep = Date.now();
    this.scan();
    const seg = this.seg;
    const i32 = seg.views.i32;
    Atomics.store(i32, RECLAIM_REQUEST_OFFSET >> 2, 0);
    for (let slot = 0; slot < this.d.maxClients; slot++) {
      const peer = this.peers[slot];
      if (peer === null) continue;
      if (!peer.dead && seg.roleAlive(CLIENT_ROLE_BASE + slot)) continue;
      peer.dead = true;
      if (peer.anyCommand()) continue; // serve what it committed first
      // Take the slot's lock so no client can claim it while it is being reset.
      if (!seg.tryAcquireRole(CLIENT_ROLE_BASE + slot)) {
        // A new client took it between the probe and now: it will be picked up by scan().
        this.peers[slot] = null;
        continue;
      }
      try {
        this.counters.droppedReplies += peer.backlog.length;
        Atomics.store(i32, this.slotIndex(slot, SLOT_STATE_OFFSET), SLOT_FREE);
        this.peers[slot] = null;
        this.counters.reclaimed++;
      } finally {
        seg.releaseRole(CLIENT_ROLE_BASE + slot);
      }
    }
  }

  private sweepIfDue(): void {
    const requested = Atomics.load(this.seg.views.i32, RECLAIM_REQUEST_OFFSET >> 2) !== 0;
    if (requested || Date.now() - this.lastSweep >= this.policy.livenessCheckMs) this.sweep();
  }

  /** Frees the slots of clients that died (also done by serve() every livenessCheckMs). Returns how many. */
  reclaim(): number {
    this.assertOpen();
    const before = this.counters.reclaimed;
    this.sweep();
    return this.counters.reclaimed - before;
  }

  clients(): DaemonClientInfo[] {
    this.scan();
    const out: DaemonClientInfo[] = [];
    for (const p of this.peers)
      if (p !== null && !p.dead)
        out.push({
          slot: p.slot,
          clientId: p.clientId,
          pid: p.pid,
          commands: p.commands,
          replies: p.replies,
          backlog: p.backlog.length,
        });
    return out;
  }

  stats(): DaemonStats {
    let corruptClients = 0;
    for (const p of this.peers) if (p?.corrupt) corruptClients++;
    corruptClients += this.unusable.size;
    return {
      dataVersion: this.state.version,
      clients: this.clients().length,
      corruptClients,
      lastCorruption: this.corruptError?.message ?? null,
      ...this.counters,
    };
  }

  // ---------------------------------------------------------------- commands

  private anyCommand(): boolean {
    this.scanIfClaimed();
    for (const p of this.peers) if (p?.anyCommand()) return true;
    return false;
  }

  /** The next command by strict priority, round robin among clients within a class; null if none. */
  private nextCommand(): { peer: Peer; reader: RingReader } | null {
    this.scanIfClaimed();
    const peers = this.peers;
    const n = peers.length;
    for (let cls = 0; cls < CMD_CLASS_SHARES.length; cls++) {
      for (let k = 0; k < n; k++) {
        const slot = (this.rr + k) % n;
        const peer = peers[slot];
        if (peer === null || peer.corrupt) continue;
        const reader = peer.readers[cls];
        let length: number;
        try {
          length = reader.poll();
        } catch (err) {
          if (!(err instanceof RingCorruptError)) throw err;
          // One client's broken ring must not stop the daemon for everyone: drop that
          // client's rings (its requests time out) and serve the others.
          peer.corrupt = true;
          this.counters.badFrames++;
          this.corruptError = err;
          continue;
        }
        if (length >= 0) {
          this.rr = (slot + 1) % n;
          return { peer, reader };
        }
      }
    }
    return null;
  }

  private flushBacklog(peer: Peer): void {
    while (peer.backlog.length > 0 && this.writeReply(peer, peer.backlog[0])) peer.backlog.shift();
  }

  /** Writes one encoded reply frame; false if the ring has no room now. */
  private writeReply(peer: Peer, frame: Uint8Array): boolean {
    if (!peer.writer.tryWrite(frame)) return false;
    peer.replies++;
    this.counters.replies++;
    return true;
  }

  private reply(peer: Peer, requestId: number, status: number, payload: Uint8Array): void {
    if (this.closedByUs || this.peers[peer.slot] !== peer || peer.dead) {
      this.counters.droppedReplies++;
      return;
    }
    let body = payload;
    let code = status;
    if (FRAME_HEADER_LENGTH + body.length > peer.maxReplyFrame) {
      body = encoder.encode(`reply of ${payload.length} bytes is larger than the response ring takes (respCapacity)`);
      code = STATUS_ERROR;
    }
    if (peer.backlog.length > 0) this.flushBacklog(peer);
    if (peer.backlog.length === 0) {
      // Straight into the ring: no frame is built on the heap.
      const at = peer.writer.claim(FRAME_HEADER_LENGTH + body.length);
      if (at >= 0) {
        const dv = this.seg.views.dv;
        dv.setUint32(at, requestId, true);
        dv.setUint32(at + 4, code, true);
        if (STOP_AT !== null) stopAt('daemon.mid-reply');
        if (body.length > 0) this.seg.views.u8.set(body, at + FRAME_HEADER_LENGTH);
        peer.writer.commit(FRAME_HEADER_LENGTH + body.length);
        peer.replies++;
        this.counters.replies++;
        return;
      }
    }
    if (peer.backlog.length >= BACKLOG_MAX) {
      this.counters.droppedReplies++;
      return;
    }
    const frame = new Uint8Array(FRAME_HEADER_LENGTH + body.length);
    const dv = new DataView(frame.buffer);
    dv.setUint32(0, requestId, true);
    dv.setUint32(4, code, true);
    frame.set(body, FRAME_HEADER_LENGTH);
    peer.backlog.push(frame);
  }

  /**
   * Runs one command through the handler and answers it. Synchronous when the handler is
   * (no promise, no microtask per command); returns a promise only for a handler that did.
   */
  private handle(handler: Handler, peer: Peer, reader: RingReader): Promise<void> | undefined {
    const at = reader.frameIndex;
    const length = reader.frameLength;
    this.counters.commands++;
    peer.commands++;
    if (length < FRAME_HEADER_LENGTH) {
      this.counters.badFrames++;
      return undefined;
    }
    const requestId = this.seg.views.dv.getUint32(at, true);
    const cmd = this.seg.views.u8.subarray(at + FRAME_HEADER_LENGTH, at + length);
    let r: Reply | Promise<Reply>;
    try {
      r = handler(peer.clientId, cmd);
    } catch (err) {
      this.answer(peer, requestId, err, true);
      return undefined;
    }
    if (!isThenable(r)) {
      this.answer(peer, requestId, r, false);
      return undefined;
    }
    return Promise.resolve(r).then(
      (result) => this.answer(peer, requestId, result, false),
      (err) => this.answer(peer, requestId, err, true),
    );
  }

  private answer(peer: Peer, requestId: number, result: unknown, failed: boolean): void {
    let status = STATUS_OK;
    let payload: Uint8Array;
    if (failed) {
      this.counters.handlerErrors++;
      status = STATUS_ERROR;
      payload = encoder.encode(result instanceof Error ? result.message : String(result));
    } else if (result === undefined || result === null) payload = EMPTY;
    else if (typeof result === 'string') payload = encoder.encode(result);
    else if (result instanceof Uint8Array) payload = result;
    else {
      status = STATUS_ERROR;
      payload = encoder.encode(`the handler returned ${typeof result}, not a Uint8Array, string or nothing`);
    }
    if (requestId !== 0) this.reply(peer, requestId, status, payload);
  }

  /**
   * Serves commands with `handler(clientId, cmd)` until stop() or close(). `cmd` is a view
   * into the client's ring, valid until the handler returns (or its promise settles).
   * Commands are handled one at a time, in order. A handler that throws answers the request
   * with SHM_ERR_REMOTE and the loop goes on. One serve() at a time.
   */
  serve(handler: Handler): ServeHandle {
    this.assertOpen();
    if (typeof handler !== 'function')
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, 'serve() needs a handler function');
    if (this.serving !== null) throw new ShmStateError(ErrorCode.PENDING, 'this daemon is already serving');
    const control = { stop: false, wake: () => this.cmdWait.interrupt() };
    this.serving = control;
    const done = this.loop(handler, control).finally(() => {
      this.serving = null;
    });
    done.catch(() => {});
    return {
      done,
      stop: async () => {
        control.stop = true;
        control.wake();
        await done.catch(() => {});
      },
    };
  }

  private async loop(handler: Handler, control: { stop: boolean }): Promise<void> {
    const spec: WaitSpec = {
      attempt: () => this.anyCommand(),
      check: () => {
        if (control.stop || this.closedByUs) return true;
        this.sweepIfDue();
        for (const p of this.peers) if (p !== null && p.backlog.length > 0) this.flushBacklog(p);
        return false;
      },
      deadline: Number.POSITIVE_INFINITY,
      timeout: () => new Error('unreachable: the serve loop has no deadline'),
    };
    const stillOpen = () => {};
    let streak = 0;
    this.sweep();
    while (!control.stop && !this.closedByUs) {
      const next = this.nextCommand();
      if (next !== null) {
        const pending = this.handle(handler, next.peer, next.reader);
        if (pending !== undefined) await pending;
        if (++streak >= YIELD_EVERY) {
          streak = 0;
          this.sweepIfDue();
          await new Promise(setImmediate);
        }
        continue;
      }
      streak = 0;
      // Publish every head (frees client space) before waiting.
      for (const p of this.peers) if (p !== null) for (const r of p.readers) if (r.unpublished) r.publish();
      // A short synchronous spin first: under a request/response ping-pong the next command
      // is usually microseconds away, and waitAsync's promise costs more than that.
      if (this.policy.wait !== 'park') {
        let found = false;
        for (let i = 0; i < this.policy.spinIterations && !found; i++) found = this.anyCommand();
        if (found) continue;
      }
      this.sweepIfDue();
      if (this.anyCommand()) continue;
      await waitAsync(this.cmdWait, this.policy, spec, stillOpen);
    }
  }

  /**
   * Stops serving, tells clients the daemon is gone (their waits and pending requests end
   * with SHM_ERR_PEER_CLOSED; readData() keeps returning the last state), unlinks the segment.
   * Idempotent.
   */
  close(): void {
    if (this.closedByUs) return;
    this.closedByUs = true;
    this.serving?.wake();
    const i32 = this.seg.views.i32;
    try {
      this.scan();
    } catch {
      // Whatever a client corrupted, close() still unmaps and unlinks.
    }
    // SYNC POINT: pairs with Atomics.load(closed) in the client's liveness check.
    Atomics.store(i32, DAEMON_CLOSED_OFFSET >> 2, 1);
    for (const p of this.peers) {
      if (p === null) continue;
      p.stateWait.wakeAlways();
      p.respDataWait.wakeAlways();
      p.cmdSpaceWait.wakeAlways();
    }
    this.cmdWait.close();
    this.seg.unlinkIfCurrent();
    this.seg.close();
  }
}
