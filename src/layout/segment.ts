/**
 * The header every shmbus segment starts with (bytes 0..127). One segment = one file in
 * the segment directory (default /dev/shm), named `shmbus.<name>` (see segment/names.ts).
 *
 * ```
 *  0               8       12      16      20      24              32
 *  +---------------+-------+-------+-------+-------+---------------+
 *  | magic (8 B)   |version| kind  |hdrLen | flags | segmentLength |
 *  | "SHMBUS\0\0"  |  u32  |  u32  |  u32  |  u32  |  u64 (lo, hi) |
 *  +---------------+-------+-------+-------+-------+---------------+
 *  32      36      40              48              56      60      64
 *  +-------+-------+---------------+---------------+-------+-------+
 *  |ownPid | (0)   | ownerStart    | createdAtMs   |paramsL| (0)   |
 *  |  u32  |       | u64 (lo, hi)  | u64 (lo, hi)  |  u32  |       |
 *  +-------+-------+---------------+---------------+-------+-------+
 *  64                                                            128
 *  +---------------------------------------------------------------+
 *  | kind parameters (paramsLength bytes, owned by the kind layout) |
 *  +---------------------------------------------------------------+
 * ```
 * All integers little-endian. `version` is written LAST by the creator with an atomic
 * store: 0 means "still initialising", LAYOUT_VERSION means ready (iceoryx2's rule).
 * `ownerStart` is the creator's start time in clock ticks since boot (/proc/<pid>/stat
 * field 22): pid plus start time names a process even after pid reuse.
 *
 * Liveness is not in the mapping: each role (creator = role 0, other roles per kind) holds
 * an OFD write lock (fcntl F_OFD_SETLK) on the single file byte at offset `role` of the
 * segment file. The kernel drops it when the holder's last fd closes, i.e. when it dies,
 * even as an unreaped zombie or from another pid namespace.
 */

/** 'S','H','M','B','U','S',0,0 */
export const MAGIC = Uint8Array.of(0x53, 0x48, 0x4d, 0x42, 0x55, 0x53, 0x00, 0x00);
export const MAGIC_OFFSET = 0;
export const MAGIC_LENGTH = 8;
export const VERSION_OFFSET = MAGIC_OFFSET + MAGIC_LENGTH;
export const KIND_OFFSET = VERSION_OFFSET + 4;
export const HEADER_LENGTH_OFFSET = KIND_OFFSET + 4;
export const FLAGS_OFFSET = HEADER_LENGTH_OFFSET + 4;
export const SEGMENT_LENGTH_OFFSET = FLAGS_OFFSET + 4;
export const OWNER_PID_OFFSET = SEGMENT_LENGTH_OFFSET + 8;
export const OWNER_START_OFFSET = OWNER_PID_OFFSET + 8;
export const CREATED_AT_OFFSET = OWNER_START_OFFSET + 8;
export const PARAMS_LENGTH_OFFSET = CREATED_AT_OFFSET + 8;
export const PARAMS_OFFSET = 64;
export const PARAMS_MAX_LENGTH = 64;
/** Bytes of the common header; kind layouts start their blocks here. */
export const HEADER_LENGTH = PARAMS_OFFSET + PARAMS_MAX_LENGTH;

/** The layout version this build writes and accepts. Bump on any incompatible change. */
export const LAYOUT_VERSION = 1;

/** Segment kinds. */
export const Kind = {
  CHANNEL: 1,
  DAEMON: 2,
  SESSION: 3,
  HUB: 4,
  BLOB: 5,
  BLOB_CHUNK: 6,
  SENDER: 7,
} as const;
export type KindValue = (typeof Kind)[keyof typeof Kind];

export function kindName(kind: number): string {
  switch (kind) {
    case Kind.CHANNEL:
      return 'channel';
    case Kind.DAEMON:
      return 'daemon';
    case Kind.SESSION:
      return 'session';
    case Kind.HUB:
      return 'hub';
    case Kind.BLOB:
      return 'blob store';
    case Kind.BLOB_CHUNK:
      return 'blob chunk';
    case Kind.SENDER:
      return 'fan-out sender';
    default:
      return `unknown(${kind})`;
  }
}

/** Role whose lock byte marks the creator/owner as alive. */
export const OWNER_ROLE = 0;
/** Highest role index a channel uses; a daemon uses 1 + its client slot index per client. */
export const MAX_ROLE = 7;

/** Cache-line pair: counters written by different processes live this far apart (Agrona). */
export const BLOCK_LENGTH = 128;

export interface HeaderFields {
  version: number;
  kind: number;
  headerLength: number;
  flags: number;
  segmentLength: number;
  ownerPid: number;
  ownerStart: number;
  createdAtMs: number;
  paramsLength: number;
}

function readU64(dv: DataView, offset: number): number {
  return dv.getUint32(offset, true) + dv.getUint32(offset + 4, true) * 2 ** 32;
}

function writeU64(dv: DataView, offset: number, value: number): void {
  dv.setUint32(offset, value % 2 ** 32, true);
  dv.setUint32(offset + 4, Math.floor(value / 2 ** 32), true);
}

export function hasMagic(u8: Uint8Array): boolean {
  if (u8.length < MAGIC_LENGTH) return false;
  for (let i = 0; i < MAGIC_LENGTH; i++) if (u8[MAGIC_OFFSET + i] !== MAGIC[i]) return false;
  return true;
}

/** Reads the header fields; `version` is read with an atomic load (it is the ready flag). */
export function readHeader(dv: DataView, i32: Int32Array): HeaderFields {
  return {
    version: Atomics.load(i32, VERSION_OFFSET >> 2) >>> 0,
    kind: dv.getUint32(KIND_OFFSET, true),
    headerLength: dv.getUint32(HEADER_LENGTH_OFFSET, true),
    flags: dv.getUint32(FLAGS_OFFSET, true),
    segmentLength: readU64(dv, SEGMENT_LENGTH_OFFSET),
    ownerPid: dv.getUint32(OWNER_PID_OFFSET, true),
    ownerStart: readU64(dv, OWNER_START_OFFSET),
    createdAtMs: readU64(dv, CREATED_AT_OFFSET),
    paramsLength: dv.getUint32(PARAMS_LENGTH_OFFSET, true),
  };
}

/** Writes everything but `version` (see publishVersion). */
export function writeHeader(u8: Uint8Array, dv: DataView, fields: Omit<HeaderFields, 'version'>): void {
  u8.set(MAGIC, MAGIC_OFFSET);
  dv.setUint32(KIND_OFFSET, fields.kind, true);
  dv.setUint32(HEADER_LENGTH_OFFSET, fields.headerLength, true);
  dv.setUint32(FLAGS_OFFSET, fields.flags, true);
  writeU64(dv, SEGMENT_LENGTH_OFFSET, fields.segmentLength);
  dv.setUint32(OWNER_PID_OFFSET, fields.ownerPid, true);
  writeU64(dv, OWNER_START_OFFSET, fields.ownerStart);
  writeU64(dv, CREATED_AT_OFFSET, fields.createdAtMs);
  dv.setUint32(PARAMS_LENGTH_OFFSET, fields.paramsLength, true);
}

/** The creator's last initialisation step. */
export function publishVersion(i32: Int32Array, version: number = LAYOUT_VERSION): void {
  // SYNC POINT: pairs with Atomics.load(version) in readHeader(); every header, parameter
  // and block byte is written before the segment reads as ready.
  Atomics.store(i32, VERSION_OFFSET >> 2, version);
}

/** Problems with a header, as a list of `field: reason` strings (empty when valid). */
export function checkHeader(h: HeaderFields, fileLength: number): string[] {
  const problems: string[] = [];
  if (h.headerLength < HEADER_LENGTH || h.headerLength > fileLength || h.headerLength % 8 !== 0)
    problems.push(`headerLength=${h.headerLength} (file ${fileLength} B, minimum ${HEADER_LENGTH})`);
  if (h.paramsLength > PARAMS_MAX_LENGTH) problems.push(`paramsLength=${h.paramsLength} (max ${PARAMS_MAX_LENGTH})`);
  if (h.segmentLength < HEADER_LENGTH) problems.push(`segmentLength=${h.segmentLength} (minimum ${HEADER_LENGTH})`);
  return problems;
}
