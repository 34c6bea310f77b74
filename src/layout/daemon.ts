/**
 * Layout of a daemon segment (kind 2): shared state published by one daemon and read
 * lock-free by its clients, plus one slot per client holding that client's command rings
 * (client -> daemon, three priority classes) and response ring (daemon -> client).
 *
 * ```
 *  0      64                   128
 *  +------+--------------------+  segment header (layout/segment.ts); parameters at 64:
 *  |header| daemon parameters  |    +0 protocolVersion u32  +4 dataSize u32  +8 stateCells u32
 *  +------+--------------------+    +12 cellLength u32  +16 stateOffset u32  +20 maxClients u32
 *  128 DAEMON block (128 B)         +24 cmdCapacity u32  +28 respCapacity u32  +32 cmdMaxBytes u32
 *    +0 pid u32 +4 closed i32       +36 slotLength u32  +40 slotsOffset u32
 *    +8 nextClientId u32 (clients: Atomics.add) +12 reclaimRequest i32 +16 claimSeq u32
 *  256 CMD_WAIT block: +0 sleeping i32 (the daemon parks) +4 seq i32 (futex word)
 *  384 STATE block: +0 stateSeq u32 (writes published; cell of write s is s & (cells-1))
 *  512 state cells, stateCells x cellLength:
 *        +0 length u32  +4 version u32 (= its s)  +8 data (dataSize bytes)
 *  slotsOffset: maxClients slots of slotLength bytes:
 *    +0    SLOT block: +0 state i32 (FREE 0 / CLAIMED 1) +4 clientId u32 +8 pid u32 +12 generation u32
 *    +128  STATE_WAIT block: +0 sleeping +4 seq (the client parks in waitData)
 *    +256  command area: a channel's blocks and rings (layout/channel.ts, offsets relative to
 *          the area): producer block (client), consumer block (daemon), DATA_WAIT (unused:
 *          the daemon parks on CMD_WAIT for every client), SPACE_WAIT (the client parks when
 *          full), then three rings (critical / high / low, a third of cmdCapacity each)
 *    +256+cmdAreaLength  response area: the same, one ring; DATA_WAIT is where the client
 *          parks for replies
 * ```
 * Liveness locks: byte OWNER_ROLE (0) is the daemon; byte CLIENT_ROLE_BASE + i is client slot i.
 *
 * State cells (iceoryx2's UnrestrictedAtomic, with four cells): the daemon writes write
 * s + 1 into cell (s + 1) & 3, then publishes stateSeq = s + 1. A reader loads s1, copies
 * cell s1 & 3, and re-reads stateSeq as s2: the copy is intact if s2 - s1 <= 2, because cell
 * s1 & 3 is only rewritten by write s1 + 4, which starts after s1 + 3 was published. A daemon
 * that dies mid-write leaves stateSeq at the last complete write: readers are never wedged.
 *
 * Frames in the command ring: `requestId u32, flags u32, payload` (requestId 0: fire and
 * forget). In the response ring: `requestId u32, status u32 (0 ok, 1 handler error: payload
 * is the UTF-8 message), payload`.
 */
import { alignUp, type ChannelGeometry, channelGeometry, RECORD_HEADER_LENGTH } from './channel.js';
import { BLOCK_LENGTH, HEADER_LENGTH, PARAMS_OFFSET } from './segment.js';

/** Version of the daemon/client protocol inside the segment (checked on connect). */
export const DAEMON_PROTOCOL_VERSION = 1;

export const PROTOCOL_VERSION_OFFSET = PARAMS_OFFSET;
export const DATA_SIZE_OFFSET = PROTOCOL_VERSION_OFFSET + 4;
export const STATE_CELLS_OFFSET = DATA_SIZE_OFFSET + 4;
export const CELL_LENGTH_OFFSET = STATE_CELLS_OFFSET + 4;
export const STATE_OFFSET_OFFSET = CELL_LENGTH_OFFSET + 4;
export const MAX_CLIENTS_OFFSET = STATE_OFFSET_OFFSET + 4;
export const CMD_CAPACITY_OFFSET = MAX_CLIENTS_OFFSET + 4;
export const RESP_CAPACITY_OFFSET = CMD_CAPACITY_OFFSET + 4;
export const CMD_MAX_BYTES_OFFSET = RESP_CAPACITY_OFFSET + 4;
export const SLOT_LENGTH_OFFSET = CMD_MAX_BYTES_OFFSET + 4;
export const SLOTS_OFFSET_OFFSET = SLOT_LENGTH_OFFSET + 4;
export const DAEMON_PARAMS_LENGTH = SLOTS_OFFSET_OFFSET + 4 - PARAMS_OFFSET;

export const DAEMON_BLOCK_OFFSET = HEADER_LENGTH;
export const DAEMON_PID_OFFSET = DAEMON_BLOCK_OFFSET;
export const DAEMON_CLOSED_OFFSET = DAEMON_PID_OFFSET + 4;
export const NEXT_CLIENT_ID_OFFSET = DAEMON_CLOSED_OFFSET + 4;
/** A client that found no free slot but some dead ones sets this and wakes the daemon. */
export const RECLAIM_REQUEST_OFFSET = NEXT_CLIENT_ID_OFFSET + 4;
/** Bumped by every client after it claims a slot: the daemon rescans the slots when it moves. */
export const CLAIM_SEQ_OFFSET = RECLAIM_REQUEST_OFFSET + 4;

export const CMD_WAIT_OFFSET = DAEMON_BLOCK_OFFSET + BLOCK_LENGTH;
export const STATE_BLOCK_OFFSET = CMD_WAIT_OFFSET + BLOCK_LENGTH;
export const STATE_SEQ_OFFSET = STATE_BLOCK_OFFSET;
export const CELLS_OFFSET = STATE_BLOCK_OFFSET + BLOCK_LENGTH;

export const CELL_LENGTH_FIELD_OFFSET = 0;
export const CELL_VERSION_OFFSET = CELL_LENGTH_FIELD_OFFSET + 4;
export const CELL_DATA_OFFSET = CELL_VERSION_OFFSET + 4;
/** Power of two, so `s & (STATE_CELLS - 1)` stays right across u32 wrap-around. */
export const STATE_CELLS = 4;
/** A snapshot is intact if stateSeq moved by at most this much during the copy. */
export const STATE_MAX_LAG = STATE_CELLS - 2;

/** Within a client slot. */
export const SLOT_STATE_OFFSET = 0;
export const SLOT_CLIENT_ID_OFFSET = SLOT_STATE_OFFSET + 4;
export const SLOT_PID_OFFSET = SLOT_CLIENT_ID_OFFSET + 4;
export const SLOT_GENERATION_OFFSET = SLOT_PID_OFFSET + 4;
export const SLOT_STATE_WAIT_OFFSET = BLOCK_LENGTH;
export const SLOT_CMD_AREA_OFFSET = SLOT_STATE_WAIT_OFFSET + BLOCK_LENGTH;

export const SLOT_FREE = 0;
export const SLOT_CLAIMED = 1;

/** Lock byte of client slot i is CLIENT_ROLE_BASE + i. */
export const CLIENT_ROLE_BASE = 1;

/** Command and response frame headers. */
export const FRAME_REQUEST_ID_OFFSET = 0;
export const FRAME_WORD_OFFSET = FRAME_REQUEST_ID_OFFSET + 4;
export const FRAME_HEADER_LENGTH = FRAME_WORD_OFFSET + 4;
export const STATUS_OK = 0;
export const STATUS_ERROR = 1;

/**
 * Priority class shares of the command rings (critical, high, low): equal, so each class
 * holds `cmdSlots` commands of `cmdMaxBytes` (its own budget: a flood of low commands takes
 * no room from critical ones).
 */
export const CMD_CLASS_SHARES = [1 / 3, 1 / 3, 1 / 3] as const;

export interface DaemonGeometry {
  dataSize: number;
  stateCells: number;
  cellLength: number;
  stateOffset: number;
  maxClients: number;
  cmdCapacity: number;
  respCapacity: number;
  cmdMaxBytes: number;
  slotLength: number;
  slotsOffset: number;
  segmentLength: number;
}

/**
 * A ring set laid out like a channel's, with its blocks at `areaBase` (what the channel has
 * at HEADER_LENGTH). `blocksBase` is what RingWriter/RingReader add to the channel offsets.
 */
export interface AreaGeometry {
  g: ChannelGeometry;
  blocksBase: number;
  length: number;
}

export function areaGeometry(
  areaBase: number,
  capacity: number,
  shares: readonly number[] | null,
  maxFrame?: number,
): AreaGeometry {
  const blocksBase = areaBase - HEADER_LENGTH;
  const base = channelGeometry(capacity, shares, maxFrame);
  const g: ChannelGeometry = { ...base, dataIndices: base.dataIndices.map((i) => i + blocksBase) };
  return { g, blocksBase, length: base.segmentLength - HEADER_LENGTH };
}

/** Smallest ring capacity (a power of two) whose smallest class takes a frame of `frame` payload bytes. */
export function capacityFor(frame: number, shares: readonly number[] | null): number {
  const smallestShare = shares === null ? 1 : Math.min(...shares);
  let capacity = 1024;
  // A class ring must hold two records of the largest frame (the channel's default rule).
  while (Math.floor((capacity * smallestShare) / 8) * 8 < 2 * alignUp(frame + RECORD_HEADER_LENGTH, 8)) capacity *= 2;
  return capacity;
}

export function daemonGeometry(o: {
  dataSize: number;
  maxClients: number;
  cmdCapacity: number;
  respCapacity: number;
  cmdMaxBytes: number;
}): DaemonGeometry {
  const cellLength = alignUp(CELL_DATA_OFFSET + o.dataSize, BLOCK_LENGTH);
  const stateOffset = CELLS_OFFSET;
  const slotsOffset = stateOffset + STATE_CELLS * cellLength;
  const frame = o.cmdMaxBytes + FRAME_HEADER_LENGTH;
  const cmd = areaGeometry(SLOT_CMD_AREA_OFFSET, o.cmdCapacity, CMD_CLASS_SHARES, frame);
  const resp = areaGeometry(SLOT_CMD_AREA_OFFSET + cmd.length, o.respCapacity, null);
  const slotLength = alignUp(SLOT_CMD_AREA_OFFSET + cmd.length + resp.length, BLOCK_LENGTH);
  return {
    dataSize: o.dataSize,
    stateCells: STATE_CELLS,
    cellLength,
    stateOffset,
    maxClients: o.maxClients,
    cmdCapacity: o.cmdCapacity,
    respCapacity: o.respCapacity,
    cmdMaxBytes: o.cmdMaxBytes,
    slotLength,
    slotsOffset,
    segmentLength: slotsOffset + o.maxClients * slotLength,
  };
}

/** The command and response areas of client slot `i`, at their absolute offsets. */
export function slotAreas(d: DaemonGeometry, i: number): { base: number; cmd: AreaGeometry; resp: AreaGeometry } {
  const base = d.slotsOffset + i * d.slotLength;
  const cmd = areaGeometry(
    base + SLOT_CMD_AREA_OFFSET,
    d.cmdCapacity,
    CMD_CLASS_SHARES,
    d.cmdMaxBytes + FRAME_HEADER_LENGTH,
  );
  const resp = areaGeometry(base + SLOT_CMD_AREA_OFFSET + cmd.length, d.respCapacity, null);
  return { base, cmd, resp };
}

export function writeDaemonParams(dv: DataView, d: DaemonGeometry): void {
  dv.setUint32(PROTOCOL_VERSION_OFFSET, DAEMON_PROTOCOL_VERSION, true);
  dv.setUint32(DATA_SIZE_OFFSET, d.dataSize, true);
  dv.setUint32(STATE_CELLS_OFFSET, d.stateCells, true);
  dv.setUint32(CELL_LENGTH_OFFSET, d.cellLength, true);
  dv.setUint32(STATE_OFFSET_OFFSET, d.stateOffset, true);
  dv.setUint32(MAX_CLIENTS_OFFSET, d.maxClients, true);
  dv.setUint32(CMD_CAPACITY_OFFSET, d.cmdCapacity, true);
  dv.setUint32(RESP_CAPACITY_OFFSET, d.respCapacity, true);
  dv.setUint32(CMD_MAX_BYTES_OFFSET, d.cmdMaxBytes, true);
  dv.setUint32(SLOT_LENGTH_OFFSET, d.slotLength, true);
  dv.setUint32(SLOTS_OFFSET_OFFSET, d.slotsOffset, true);
}

export function readDaemonParams(dv: DataView): DaemonGeometry & { protocolVersion: number } {
  const maxClients = dv.getUint32(MAX_CLIENTS_OFFSET, true);
  const slotLength = dv.getUint32(SLOT_LENGTH_OFFSET, true);
  const slotsOffset = dv.getUint32(SLOTS_OFFSET_OFFSET, true);
  return {
    protocolVersion: dv.getUint32(PROTOCOL_VERSION_OFFSET, true),
    dataSize: dv.getUint32(DATA_SIZE_OFFSET, true),
    stateCells: dv.getUint32(STATE_CELLS_OFFSET, true),
    cellLength: dv.getUint32(CELL_LENGTH_OFFSET, true),
    stateOffset: dv.getUint32(STATE_OFFSET_OFFSET, true),
    maxClients,
    cmdCapacity: dv.getUint32(CMD_CAPACITY_OFFSET, true),
    respCapacity: dv.getUint32(RESP_CAPACITY_OFFSET, true),
    cmdMaxBytes: dv.getUint32(CMD_MAX_BYTES_OFFSET, true),
    slotLength,
    slotsOffset,
    segmentLength: slotsOffset + maxClients * slotLength,
  };
}

/**
 * Problems with daemon parameters read from a segment of `fileLength` bytes, as
 * `field=value (reason)` strings; empty when valid. Recomputes the geometry from the inputs and
 * requires every derived field to match, so a hostile segment cannot point a view outside it.
 */
export function checkDaemonGeometry(d: DaemonGeometry, fileLength: number): string[] {
  const problems: string[] = [];
  if (!(d.dataSize >= 8 && d.dataSize <= 1 << 30)) problems.push(`dataSize=${d.dataSize} (must be 8..1 GiB)`);
  if (!(d.maxClients >= 1 && d.maxClients <= 1024)) problems.push(`maxClients=${d.maxClients} (must be 1..1024)`);
  for (const [k, v] of [
    ['cmdCapacity', d.cmdCapacity],
    ['respCapacity', d.respCapacity],
  ] as const)
    if (!(v >= 1024 && v <= 1 << 30 && (v & (v - 1)) === 0)) problems.push(`${k}=${v} (a power of two, 1 KiB..1 GiB)`);
  if (!(d.cmdMaxBytes >= 1 && d.cmdMaxBytes <= 1 << 24)) problems.push(`cmdMaxBytes=${d.cmdMaxBytes} (1..16 MiB)`);
  if (d.stateCells !== STATE_CELLS) problems.push(`stateCells=${d.stateCells} (must be ${STATE_CELLS})`);
  if (problems.length > 0) return problems;
  if (capacityFor(d.cmdMaxBytes + FRAME_HEADER_LENGTH, CMD_CLASS_SHARES) > d.cmdCapacity)
    problems.push(`cmdCapacity=${d.cmdCapacity} (too small for cmdMaxBytes=${d.cmdMaxBytes})`);
  if (problems.length > 0) return problems;
  const expected = daemonGeometry(d);
  for (const key of ['cellLength', 'stateOffset', 'slotLength', 'slotsOffset', 'segmentLength'] as const)
    if (d[key] !== expected[key]) problems.push(`${key}=${d[key]} (expected ${expected[key]})`);
  if (expected.segmentLength > fileLength)
    problems.push(`segment needs ${expected.segmentLength} bytes (file has ${fileLength})`);
  return problems;
}
