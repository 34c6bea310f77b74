/**
 * Client of a Daemon (src/rpc/daemon.ts): reads the daemon's shared state lock-free, sends
 * commands, and makes requests whose reply is always the one to THAT request.
 *
 * ```ts
 * import { Client } from 'shmbus';
 * const c = Client.connect('pricing');
 * c.clientId;                                         // unique among this daemon's clients, never reused
 * const n = c.readData(buf);                          // true length of a consistent snapshot (c.dataVersion)
 * await c.waitData({ sinceVersion: c.dataVersion });  // resolves with the newer version
 * const reply = await c.request(cmd, { timeoutMs: 1000, priority: 'high' });
 * c.send(cmd);                                        // fire and forget: false when the ring is full
 * c.close();
 * ```
 * Each request carries a correlation id; replies travel in this client's own response ring,
 * and a reply whose request timed out is discarded when it arrives. A daemon that dies ends
 * pending and new requests with SHM_ERR_PEER_DEAD (SHM_ERR_PEER_CLOSED if it closed), while
 * readData() keeps returning the last complete state.
 *
 * One thread uses a client. request()/waitData() wait on the event loop (spin, then park);
 * requestSync() blocks the thread (worker threads, scripts).
 */
import { checkEndOptions, deadlineOf, type EndOptions, type Priority } from '../channel/channel.js';
import { areaReaders, areaWriters, type RingReader, type RingWriter } from '../core/spsc-ring.js';
import { StateReader } from '../core/state-cells.js';
import { STOP_AT, stopAt } from '../core/test-hooks.js';
import {
  ErrorCode,
  ShmArgumentError,
  ShmFrameError,
  ShmSegmentError,
  ShmStateError,
  ShmTimeoutError,
} from '../errors.js';
import {
  CONSUMER_BLOCK_OFFSET,
  DATA_WAIT_OFFSET,
  PRODUCER_BLOCK_OFFSET,
  SEQ_OFFSET,
  SLEEPING_OFFSET,
  SPACE_WAIT_OFFSET,
} from '../layout/channel.js';
import {
  CLAIM_SEQ_OFFSET,
  CLIENT_ROLE_BASE,
  CMD_WAIT_OFFSET,
  checkDaemonGeometry,
  DAEMON_CLOSED_OFFSET,
  DAEMON_PARAMS_LENGTH,
  DAEMON_PROTOCOL_VERSION,
  type DaemonGeometry,
  FRAME_HEADER_LENGTH,
  NEXT_CLIENT_ID_OFFSET,
  RECLAIM_REQUEST_OFFSET,
  readDaemonParams,
  SLOT_CLAIMED,
  SLOT_CLIENT_ID_OFFSET,
  SLOT_FREE,
  SLOT_GENERATION_OFFSET,
  SLOT_PID_OFFSET,
  SLOT_STATE_OFFSET,
  SLOT_STATE_WAIT_OFFSET,
  STATUS_OK,
  slotAreas,
} from '../layout/daemon.js';
import { BLOCK_LENGTH, Kind, OWNER_ROLE } from '../layout/segment.js';
import { Segment, type SegmentOptions } from '../segment/segment.js';
import { WaitBlock, type WaitSpec, waitAsync, waitSync } from '../segment/wake.js';

export interface ClientConnectOptions extends SegmentOptions, EndOptions {
  /** When every slot is taken but some by dead clients, wait this long for the daemon to reclaim one (default 1000 ms). */
  connectTimeoutMs?: number;
}

export interface RequestOptions {
  /** Reject with SHM_ERR_TIMEOUT after this many ms (default: wait forever). */
  timeoutMs?: number;
  /** Command class (default 'high'): the daemon serves critical before high before low. */
  priority?: Priority;
}

const PRIORITY_CLASS: Record<Priority, number> = { critical: 0, high: 1, low: 2 };
const decoder = new TextDecoder();

interface Queued {
  cls: number;
  cmd: Uint8Array;
  deadline: number;
  timeoutMs: number | undefined;
  resolve: (reply: Uint8Array) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | null;
}

interface Pending {
  resolve: (reply: Uint8Array) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout | null;
}

export class Client {
  readonly clientId: number;
  readonly slot: number;
  private readonly d: DaemonGeometry;
  private readonly writers: RingWriter[];
  private readonly reader: RingReader;
  private readonly state: StateReader;
  private readonly cmdWait: WaitBlock;
  private readonly spaceWait: WaitBlock;
  private readonly respWait: WaitBlock;
  private readonly stateWait: WaitBlock;
  private readonly policy: Required<EndOptions>;
  private readonly pending = new Map<number, Pending>();
  private nextRequestId = 1;
  private pumping = false;
  private closedByUs = false;
  private scratch: Uint8Array | null = null;
  private livenessCheckedAt = 0;
  private readonly spaceSpec: WaitSpec & { need: number; cls: number; index: number; timeoutMs?: number };
  private readonly respSpec: WaitSpec;
  private readonly stateSpec: WaitSpec & { since: number; timeoutMs?: number };
  private readonly syncSpec: WaitSpec & { timeoutMs?: number };
  private readonly roomSpec: WaitSpec;
  /** Async requests waiting for room in their class's command ring, FIFO per class. */
  private readonly roomQueues: Queued[][] = [[], [], []];
  private roomPumping = false;

  private constructor(
    private readonly seg: Segment,
    d: DaemonGeometry,
    slot: number,
    clientId: number,
    policy: Required<EndOptions>,
  ) {
    this.d = d;
    this.slot = slot;
    this.clientId = clientId;
    this.policy = policy;
    const v = seg.views;
    const buffer = v.buffer as ArrayBuffer;
    const { base, cmd, resp } = slotAreas(d, slot);
    this.writers = areaWriters(v, cmd);
    [this.reader] = areaReaders(v, resp);
    const block = (at: number) => new WaitBlock(buffer, v.i32, at + SLEEPING_OFFSET, at + SEQ_OFFSET);
    this.cmdWait = block(CMD_WAIT_OFFSET);
    this.spaceWait = block(cmd.blocksBase + SPACE_WAIT_OFFSET);
    this.respWait = block(resp.blocksBase + DATA_WAIT_OFFSET);
    this.stateWait = block(base + SLOT_STATE_WAIT_OFFSET);
    // SYNC POINT: the tail store precedes the load of the daemon's sleeping flag (WaitBlock.wake).
    for (const w of this.writers) w.onPublish = () => this.cmdWait.wake();
    this.state = new StateReader(v, d);
    this.spaceSpec = {
      need: 0,
      cls: 1,
      index: -1,
      // Synchronous: queued async commands go first (FIFO per class), then this one; a claim
      // is committed in the same step it is taken.
      attempt: () => {
        if (!this.drainRoomQueues()) return false;
        this.spaceSpec.index = this.writers[this.spaceSpec.cls].claim(this.spaceSpec.need);
        return this.spaceSpec.index >= 0;
      },
      check: () => this.checkDaemon(),
      deadline: 0,
      timeout: () => this.timeout('waiting for room in the command ring', this.spaceSpec.timeoutMs),
    };
    this.roomSpec = {
      attempt: () => this.drainRoomQueues(),
      check: () => this.checkDaemon() || this.roomQueues.every((q) => q.length === 0),
      deadline: Number.POSITIVE_INFINITY,
      timeout: () => new Error('unreachable: the room pump has no deadline'),
    };
    this.respSpec = {
      attempt: () => this.reader.ready(),
      check: () => this.checkDaemon() || (!this.syncWaiting && this.pending.size === 0),
      deadline: Number.POSITIVE_INFINITY,
      timeout: () => new Error('unreachable'),
    };
    this.syncSpec = {
      attempt: () => this.reader.ready(),
      check: () => this.checkDaemon(),
      deadline: 0,
      timeout: () => this.timeout('requestSync', this.syncSpec.timeoutMs),
    };
    this.stateSpec = {
      since: 0,
      attempt: () => this.state.latest() !== this.stateSpec.since,
      check: () => this.checkDaemon(),
      deadline: 0,
      timeout: () => this.timeout('waitData', this.stateSpec.timeoutMs),
    };
  }

  private syncWaiting = false;

  /**
   * Connects to daemon `name`: validates the segment and protocol version, takes a free
   * client slot (its liveness lock) and a new client id. Fails with SHM_ERR_NOT_FOUND,
   * SHM_ERR_VERSION_MISMATCH, SHM_ERR_PEER_DEAD / _PEER_CLOSED (no daemon running) or
   * SHM_ERR_REFUSED (maxClients live clients). Blocks briefly (at most connectTimeoutMs).
   */
  static connect(name: string, options: ClientConnectOptions = {}): Client {
    const policy = checkEndOptions(options);
    const seg = Segment.open(name, Kind.DAEMON, options);
    try {
      const dv = seg.views.dv;
      const where = `daemon ${JSON.stringify(name)}`;
      if (seg.header.paramsLength < DAEMON_PARAMS_LENGTH)
        throw new ShmSegmentError(ErrorCode.CORRUPT, `${where} has paramsLength=${seg.header.paramsLength}`);
      const d = readDaemonParams(dv);
      if (d.protocolVersion !== DAEMON_PROTOCOL_VERSION)
        throw new ShmSegmentError(
          ErrorCode.VERSION_MISMATCH,
          `${where} speaks daemon protocol version ${d.protocolVersion}; this shmbus speaks version ${DAEMON_PROTOCOL_VERSION}`,
          { details: { name, version: d.protocolVersion, expected: DAEMON_PROTOCOL_VERSION } },
        );
      const problems = checkDaemonGeometry(d, Math.min(seg.length, seg.header.segmentLength));
      if (problems.length > 0)
        throw new ShmSegmentError(ErrorCode.CORRUPT, `${where} has corrupt parameters: ${problems.join('; ')}`, {
          details: { name, problems },
        });
      const i32 = seg.views.i32;
      if (Atomics.load(i32, DAEMON_CLOSED_OFFSET >> 2) !== 0)
        throw new ShmStateError(ErrorCode.PEER_CLOSED, `${where} has closed`, { details: { name } });
      if (!seg.roleAlive(OWNER_ROLE))
        throw new ShmStateError(ErrorCode.PEER_DEAD, `${where} is not running (its process died)`, {
          details: { name, pid: seg.header.ownerPid },
        });
      const deadline = Date.now() + (options.connectTimeoutMs ?? 1000);
      const sleeper = new Int32Array(new SharedArrayBuffer(4));
      for (;;) {
        const claimed = Client.claim(seg, d);
        if (claimed !== null) return new Client(seg, d, claimed[0], claimed[1], policy);
        // Every slot is claimed. Some may belong to dead clients the daemon has not
        // reclaimed yet: ask it to, and retry until the deadline.
        let dead = 0;
        for (let slot = 0; slot < d.maxClients; slot++) if (!seg.roleAlive(CLIENT_ROLE_BASE + slot)) dead++;
        if (dead === 0 || Date.now() >= deadline)
          throw new ShmStateError(
            ErrorCode.REFUSED,
            `${where} already serves maxClients=${d.maxClients} clients` +
              (dead > 0 ? ` (${dead} slot(s) of dead clients not reclaimed in time: is the daemon serving?)` : ''),
            { details: { name, reason: 'max-clients', maxClients: d.maxClients } },
          );
        Atomics.store(i32, RECLAIM_REQUEST_OFFSET >> 2, 1);
        new WaitBlock(
          seg.views.buffer as ArrayBuffer,
          i32,
          CMD_WAIT_OFFSET + SLEEPING_OFFSET,
          CMD_WAIT_OFFSET + SEQ_OFFSET,
        ).wakeAlways();
        Atomics.wait(sleeper, 0, 0, 5);
      }
    } catch (err) {
      seg.close();
      throw err;
    }
  }

  /** Takes the first free slot: its lock first (mutual exclusion with other clients and the daemon's reclaim), then the state word. */
  private static claim(seg: Segment, d: DaemonGeometry): [slot: number, clientId: number] | null {
    const v = seg.views;
    const i32 = v.i32;
    for (let slot = 0; slot < d.maxClients; slot++) {
      const role = CLIENT_ROLE_BASE + slot;
      if (!seg.tryAcquireRole(role)) continue;
      const at = (d.slotsOffset + slot * d.slotLength) >> 2;
      if (Atomics.load(i32, at + (SLOT_STATE_OFFSET >> 2)) !== SLOT_FREE) {
        // A dead client's slot the daemon has not reclaimed: it may still be reading it.
        seg.releaseRole(role);
        continue;
      }
      // Fresh rings: positions, totals and sleeping flags of both areas (the daemon ignores
      // a FREE slot, so nobody else touches them now).
      const { cmd, resp } = slotAreas(d, slot);
      for (const area of [cmd, resp]) {
        const from = area.blocksBase + PRODUCER_BLOCK_OFFSET;
        v.u8.fill(0, from, area.blocksBase + CONSUMER_BLOCK_OFFSET + BLOCK_LENGTH);
        Atomics.store(i32, (area.blocksBase + DATA_WAIT_OFFSET + SLEEPING_OFFSET) >> 2, 0);
        Atomics.store(i32, (area.blocksBase + SPACE_WAIT_OFFSET + SLEEPING_OFFSET) >> 2, 0);
      }
      Atomics.store(i32, (d.slotsOffset + slot * d.slotLength + SLOT_STATE_WAIT_OFFSET + SLEEPING_OFFSET) >> 2, 0);
      const clientId = (Atomics.add(i32, NEXT_CLIENT_ID_OFFSET >> 2, 1) + 1) >>> 0;
      Atomics.store(i32, at + (SLOT_CLIENT_ID_OFFSET >> 2), clientId | 0);
      Atomics.store(i32, at + (SLOT_PID_OFFSET >> 2), process.pid);
      Atomics.add(i32, at + (SLOT_GENERATION_OFFSET >> 2), 1);
      if (STOP_AT !== null) stopAt('client.slot-locked');
      // SYNC POINT: pairs with Atomics.load(state) in Daemon.scan(); the rings are reset and
      // the id written before the slot reads as claimed.
      Atomics.store(i32, at + (SLOT_STATE_OFFSET >> 2), SLOT_CLAIMED);
      if (STOP_AT !== null) stopAt('client.slot-claimed');
      Atomics.add(i32, CLAIM_SEQ_OFFSET >> 2, 1);
      new WaitBlock(
        v.buffer as ArrayBuffer,
        i32,
        CMD_WAIT_OFFSET + SLEEPING_OFFSET,
        CMD_WAIT_OFFSET + SEQ_OFFSET,
      ).wake();
      return [slot, clientId];
    }
    return null;
  }

  get name(): string {
    return this.seg.name;
  }

  get closed(): boolean {
    return this.closedByUs;
  }

  private assertOpen(): void {
    if (this.closedByUs) throw new ShmStateError(ErrorCode.CLOSED, `client of ${JSON.stringify(this.name)} is closed`);
  }

  private timeout(what: string, ms: number | undefined): ShmTimeoutError {
    return new ShmTimeoutError(
      ErrorCode.TIMEOUT,
      `daemon ${JSON.stringify(this.name)}: ${what} timed out after ${ms} ms`,
      {
        details: { name: this.name, timeoutMs: ms },
      },
    );
  }

  /** Throws if the daemon closed or died (liveness probed at most every livenessCheckMs). */
  private checkDaemon(): boolean {
    if (this.closedByUs) this.assertOpen();
    const err = this.daemonGone(false);
    if (err !== null) throw err;
    return false;
  }

  private daemonGone(force: boolean): ShmStateError | null {
    const where = `daemon ${JSON.stringify(this.name)}`;
    if (Atomics.load(this.seg.views.i32, DAEMON_CLOSED_OFFSET >> 2) !== 0)
      return new ShmStateError(ErrorCode.PEER_CLOSED, `${where} has closed`, { details: { name: this.name } });
    const now = Date.now();
    if (!force && now - this.livenessCheckedAt < this.policy.livenessCheckMs) return null;
    this.livenessCheckedAt = now;
    if (this.seg.roleAlive(OWNER_ROLE)) return null;
    return new ShmStateError(ErrorCode.PEER_DEAD, `${where} died`, {
      details: { name: this.name, pid: this.seg.header.ownerPid },
    });
  }

  /** True while the daemon is running (a lock probe: a system call). */
  daemonAlive(): boolean {
    this.assertOpen();
    return this.daemonGone(true) === null;
  }

  // ---------------------------------------------------------------- shared state

  /** Version of the snapshot returned by the last readData() (0 before any state was published). */
  get dataVersion(): number {
    return this.state.version;
  }

  /** The latest published version (one atomic load). */
  latestVersion(): number {
    this.assertOpen();
    return this.state.latest();
  }

  /**
   * Copies a consistent snapshot of the state into `buf` (at most buf.length bytes) and
   * returns the state's true length; without `buf`, returns a copy of the whole state.
   * Lock-free: never blocks the daemon, never returns a torn state, and keeps working
   * after the daemon died (the last complete state). Sets dataVersion.
   */
  readData(buf: Uint8Array): number;
  readData(): Uint8Array;
  readData(buf?: Uint8Array): number | Uint8Array {
    this.assertOpen();
    if (buf === undefined && this.scratch === null) this.scratch = new Uint8Array(this.d.dataSize);
    const target = buf ?? (this.scratch as Uint8Array);
    let n = this.state.read(target);
    // A daemon publishing faster than we can copy: keep trying, yielding the CPU a little.
    for (let round = 0; n < 0; round++) {
      if (round >= 100)
        throw new ShmTimeoutError(
          ErrorCode.TIMEOUT,
          `daemon ${JSON.stringify(this.name)}: the state changed under every one of 100,000 read attempts`,
        );
      n = this.state.read(target);
    }
    return buf === undefined ? target.slice(0, n) : n;
  }

  /**
   * Resolves with the latest version once it differs from `sinceVersion` (default: the
   * version of the last readData()): spins briefly, then parks on the event loop. Rejects
   * with SHM_ERR_TIMEOUT, SHM_ERR_PEER_DEAD or SHM_ERR_PEER_CLOSED.
   */
  async waitData(options: { sinceVersion?: number; timeoutMs?: number } = {}): Promise<number> {
    this.assertOpen();
    const spec = this.stateSpec;
    spec.since = (options.sinceVersion ?? this.state.version) >>> 0;
    if (this.state.latest() !== spec.since) return this.state.latest();
    spec.timeoutMs = options.timeoutMs;
    spec.deadline = deadlineOf(options);
    await waitAsync(this.stateWait, this.policy, spec, () => this.assertOpen());
    return this.state.latest();
  }

  // ---------------------------------------------------------------- commands

  private classOf(options: RequestOptions | undefined): number {
    const priority = options?.priority ?? 'high';
    const cls = PRIORITY_CLASS[priority];
    if (cls === undefined)
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        `priority must be 'critical', 'high' or 'low', got ${String(priority)}`,
      );
    return cls;
  }

  private checkCommand(cmd: Uint8Array): void {
    if (!(cmd instanceof Uint8Array))
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, 'a command must be a Uint8Array');
    if (cmd.length > this.d.cmdMaxBytes)
      throw new ShmFrameError(
        ErrorCode.TOO_LARGE,
        `command of ${cmd.length} bytes is larger than cmdMaxBytes=${this.d.cmdMaxBytes}`,
        { details: { length: cmd.length, cmdMaxBytes: this.d.cmdMaxBytes } },
      );
  }

  /** Writes the frame into the claimed record at `index` and commits it. */
  private commitCommand(cls: number, index: number, requestId: number, cmd: Uint8Array): void {
    if (STOP_AT !== null) stopAt('client.command-claimed');
    const dv = this.seg.views.dv;
    dv.setUint32(index, requestId, true);
    dv.setUint32(index + 4, 0, true);
    this.seg.views.u8.set(cmd, index + FRAME_HEADER_LENGTH);
    this.writers[cls].commit(FRAME_HEADER_LENGTH + cmd.length);
  }

  /** Fire and forget: queues `cmd` for the daemon, or returns false when the ring is full. Never blocks. */
  send(cmd: Uint8Array, options?: { priority?: Priority }): boolean {
    this.assertOpen();
    this.checkCommand(cmd);
    const cls = this.classOf(options);
    // Behind queued requests of the same class (FIFO): no room for it now.
    const index = this.roomQueues[cls].length > 0 ? -1 : this.writers[cls].claim(FRAME_HEADER_LENGTH + cmd.length);
    if (index < 0) {
      const gone = this.daemonGone(false);
      if (gone !== null) throw gone;
      return false;
    }
    this.commitCommand(cls, index, 0, cmd);
    return true;
  }

  private newRequestId(): number {
    let id = this.nextRequestId;
    this.nextRequestId = (id + 1) >>> 0 || 1;
    while (id === 0 || this.pending.has(id)) {
      id = this.nextRequestId;
      this.nextRequestId = (id + 1) >>> 0 || 1;
    }
    return id;
  }

  /**
   * Sends `cmd` and resolves with the daemon's reply to it (a copy). Waits for room in the
   * command ring if it is full. Rejects with SHM_ERR_TIMEOUT (a late reply is discarded),
   * SHM_ERR_REMOTE (the handler threw), SHM_ERR_PEER_DEAD / _PEER_CLOSED, SHM_ERR_TOO_LARGE.
   */
  request(cmd: Uint8Array, options?: RequestOptions): Promise<Uint8Array> {
    try {
      this.assertOpen();
      this.checkCommand(cmd);
      const cls = this.classOf(options);
      const deadline = deadlineOf(options);
      // Hot path: only the closed flag (one atomic load). A dead daemon is found by the
      // liveness probe of the reply wait, within livenessCheckMs.
      if (Atomics.load(this.seg.views.i32, DAEMON_CLOSED_OFFSET >> 2) !== 0) throw this.daemonGone(true);
      if (this.roomQueues[cls].length === 0) {
        const index = this.writers[cls].claim(FRAME_HEADER_LENGTH + cmd.length);
        // The common case stays synchronous up to the reply promise (no async wrapper).
        if (index >= 0) return this.issue(cls, index, cmd, deadline, options?.timeoutMs);
      }
      return this.enqueueForRoom(cls, cmd, deadline, options?.timeoutMs);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** request() when its class's command ring is full (or others already wait): queue it, FIFO. */
  private enqueueForRoom(cls: number, cmd: Uint8Array, deadline: number, timeoutMs: number | undefined) {
    return new Promise<Uint8Array>((resolve, reject) => {
      const q: Queued = { cls, cmd: cmd.slice(), deadline, timeoutMs, resolve, reject, timer: null };
      if (deadline !== Number.POSITIVE_INFINITY)
        q.timer = setTimeout(
          () => {
            const queue = this.roomQueues[cls];
            const i = queue.indexOf(q);
            if (i < 0) return;
            queue.splice(i, 1);
            reject(this.timeout('request (waiting for room in the command ring)', timeoutMs));
          },
          Math.max(0, deadline - Date.now()),
        );
      this.roomQueues[cls].push(q);
      if (!this.roomPumping) void this.pumpRoom();
    });
  }

  /**
   * Commits queued commands while they fit, oldest first per class. Synchronous, so a claim
   * is never held across an await. True when every queue is empty.
   */
  private drainRoomQueues(): boolean {
    let empty = true;
    for (let cls = 0; cls < this.roomQueues.length; cls++) {
      const queue = this.roomQueues[cls];
      while (queue.length > 0) {
        const q = queue[0];
        const index = this.writers[cls].claim(FRAME_HEADER_LENGTH + q.cmd.length);
        if (index < 0) break;
        queue.shift();
        if (q.timer !== null) clearTimeout(q.timer);
        const id = this.newRequestId();
        this.commitCommand(cls, index, id, q.cmd);
        this.register(id, q.resolve, q.reject, q.deadline, q.timeoutMs);
      }
      if (queue.length > 0) empty = false;
    }
    if (this.pending.size > 0 && !this.pumping) void this.pump();
    return empty;
  }

  /** Waits (spin, then park on the command rings' space) until every queued command is committed. */
  private async pumpRoom(): Promise<void> {
    this.roomPumping = true;
    try {
      await waitAsync(this.spaceWait, this.policy, this.roomSpec, () => this.assertOpen());
    } catch (err) {
      for (const queue of this.roomQueues)
        for (const q of queue.splice(0)) {
          if (q.timer !== null) clearTimeout(q.timer);
          q.reject(err as Error);
        }
    } finally {
      this.roomPumping = false;
    }
    // Entries queued while the last wait was ending.
    if (this.roomQueues.some((q) => q.length > 0) && !this.closedByUs) void this.pumpRoom();
  }

  /** Registers the pending reply, commits the claimed command and makes sure replies are pumped. */
  private issue(
    cls: number,
    index: number,
    cmd: Uint8Array,
    deadline: number,
    timeoutMs: number | undefined,
  ): Promise<Uint8Array> {
    const id = this.newRequestId();
    // Committed first: if that threw, no pending entry would be left behind.
    this.commitCommand(cls, index, id, cmd);
    if (STOP_AT !== null) stopAt('client.awaiting-reply');
    const reply = new Promise<Uint8Array>((resolve, reject) => this.register(id, resolve, reject, deadline, timeoutMs));
    try {
      if (!this.pumping && !this.spinForReply(id)) void this.pump();
    } catch (err) {
      // A corrupt response ring: every pending request (this one included) rejects with it,
      // through the promises already handed out, so nothing is left to reject unobserved.
      this.failAll(err as Error);
    }
    return reply;
  }

  /** A request whose command is committed: waits for its reply (or its deadline). */
  private register(
    id: number,
    resolve: (reply: Uint8Array) => void,
    reject: (err: Error) => void,
    deadline: number,
    timeoutMs: number | undefined,
  ): void {
    const p: Pending = { resolve, reject, timer: null };
    if (deadline !== Number.POSITIVE_INFINITY)
      p.timer = setTimeout(
        () => {
          if (this.pending.get(id) !== p) return;
          this.pending.delete(id);
          reject(this.timeout('request', timeoutMs));
          if (this.pending.size === 0) this.respWait.interrupt();
        },
        Math.max(0, deadline - Date.now()),
      );
    this.pending.set(id, p);
  }

  /**
   * The fast path of request(): spins (per the wait policy, as waitAsync would before
   * parking) until the reply to `id` is routed, so a quick daemon answers without any
   * promise machinery in between. True if the reply came.
   */
  private spinForReply(id: number): boolean {
    const policy = this.policy;
    if (policy.wait === 'park') return false;
    const limit = policy.wait === 'spin' ? 1 << 16 : policy.spinIterations;
    for (let i = 0; i < limit; i++) {
      if (!this.reader.ready()) continue;
      while (this.reader.poll() >= 0) this.route();
      if (!this.pending.has(id)) return true;
    }
    return false;
  }

  /** The request id requestSync() waits for (0: none), and what came back for it. */
  private syncId = 0;
  private syncReply: Uint8Array | Error | null = null;

  /** Routes one reply frame to its request; returns the request id (0 if malformed). */
  private route(): number {
    const at = this.reader.frameIndex;
    const n = this.reader.frameLength;
    if (n < FRAME_HEADER_LENGTH) return 0;
    const dv = this.seg.views.dv;
    const id = dv.getUint32(at, true);
    const status = dv.getUint32(at + 4, true);
    if (id === this.syncId) {
      const body = this.seg.views.u8.slice(at + FRAME_HEADER_LENGTH, at + n);
      this.syncReply = status === STATUS_OK ? body : this.remoteError(id, body);
      this.syncId = 0;
      return id;
    }
    const p = this.pending.get(id);
    if (p === undefined) return id; // a late reply to a request that timed out: discarded
    this.pending.delete(id);
    if (p.timer !== null) clearTimeout(p.timer);
    const body = this.seg.views.u8.slice(at + FRAME_HEADER_LENGTH, at + n);
    if (status === STATUS_OK) p.resolve(body);
    else p.reject(this.remoteError(id, body));
    return id;
  }

  private remoteError(requestId: number, body: Uint8Array): ShmStateError {
    return new ShmStateError(ErrorCode.REMOTE, `daemon ${JSON.stringify(this.name)}: ${decoder.decode(body)}`, {
      details: { name: this.name, clientId: this.clientId, requestId },
    });
  }

  /** Delivers replies to pending requests until none is pending; parks on the event loop between them. */
  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.pending.size > 0 && !this.closedByUs) {
        try {
          if (this.reader.poll() >= 0) {
            this.route();
            continue;
          }
          await waitAsync(this.respWait, this.policy, this.respSpec, () => this.assertOpen());
        } catch (err) {
          // Timed out, daemon gone, or a corrupt response ring: the pending requests get it.
          this.failAll(err as Error);
          return;
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  private failAll(err: Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      if (p.timer !== null) clearTimeout(p.timer);
      p.reject(err);
    }
  }

  /**
   * request() that blocks this thread until the reply comes (worker threads, scripts).
   * Replies to this client's pending async requests that arrive meanwhile are delivered to them.
   */
  requestSync(cmd: Uint8Array, options?: RequestOptions): Uint8Array {
    this.assertOpen();
    this.checkCommand(cmd);
    const cls = this.classOf(options);
    const deadline = deadlineOf(options);
    if (Atomics.load(this.seg.views.i32, DAEMON_CLOSED_OFFSET >> 2) !== 0) throw this.daemonGone(true);
    const need = FRAME_HEADER_LENGTH + cmd.length;
    let index = this.roomQueues.every((q) => q.length === 0) ? this.writers[cls].claim(need) : -1;
    if (index < 0) {
      const spec = this.spaceSpec;
      spec.need = need;
      spec.cls = cls;
      spec.deadline = deadline;
      spec.timeoutMs = options?.timeoutMs;
      waitSync(this.spaceWait, this.policy, spec);
      index = spec.index;
    }
    const id = this.newRequestId();
    this.syncId = id;
    this.syncReply = null;
    this.commitCommand(cls, index, id, cmd);
    const spec = this.syncSpec;
    spec.deadline = deadline;
    spec.timeoutMs = options?.timeoutMs;
    this.syncWaiting = true;
    try {
      for (;;) {
        while (this.syncReply === null && this.reader.poll() >= 0) this.route();
        if (this.syncReply !== null) break;
        waitSync(this.respWait, this.policy, spec);
      }
    } finally {
      this.syncWaiting = false;
      this.syncId = 0;
    }
    const r = this.syncReply as Uint8Array | Error;
    this.syncReply = null;
    if (r instanceof Error) throw r;
    return r;
  }

  /** Requests waiting for a reply. */
  get pendingRequests(): number {
    return this.pending.size;
  }

  /**
   * Leaves: pending requests reject with SHM_ERR_CLOSED, the slot's lock is released (the
   * daemon serves what was already sent, then reclaims the slot). Never unlinks. Idempotent.
   */
  close(): void {
    if (this.closedByUs) return;
    this.closedByUs = true;
    const closed = new ShmStateError(ErrorCode.CLOSED, `client of ${JSON.stringify(this.name)} closed`);
    this.failAll(closed);
    for (const queue of this.roomQueues)
      for (const q of queue.splice(0)) {
        if (q.timer !== null) clearTimeout(q.timer);
        q.reject(closed);
      }
    for (const w of [this.respWait, this.stateWait, this.spaceWait]) w.close();
    for (const w of this.writers) if (w.unpublished) w.publish();
    this.reader.publish();
    this.seg.close();
  }
}
