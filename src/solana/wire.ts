/**
 * The Solana data frames (account, transaction and slot updates), byte for byte the wire
 * format of the qlaster reference, wire version 9. A frame body is one message: the ring
 * (or any other transport) adds its own length prefix around it.
 *
 * ```ts
 * import { decodeFrame, encodeAccountUpdate, TAG_ACCOUNT_UPDATE } from './wire.js'; // src/solana/
 *
 * const frame = encodeAccountUpdate({
 *   pubkey: 'TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA',
 *   owner: new Uint8Array(32),
 *   lamports: 1_000_000n,
 *   executable: false,
 *   rentEpoch: 0n,
 *   slot: 250_000_000n,
 *   writeVersion: 7,
 *   data: new Uint8Array([1, 2, 3]),
 * });
 * const decoded = decodeFrame(frame);
 * if (decoded.tag === TAG_ACCOUNT_UPDATE) console.log(decoded.update.lamports, decoded.senderNanos);
 * ```
 *
 * Every body starts with `wire_version u8 = 9` and `message_tag u8`. Integers are
 * little-endian, booleans one byte that must be 0 or 1, nothing is aligned.
 *
 * ```
 * AccountUpdate, tag 2 (116-byte fixed header, then wire_len payload bytes)
 *  0   1   2              10           42           74         82  83
 *  +---+---+--------------+------------+------------+----------+---+------------+
 *  |ver|tag| sender_nanos | pubkey[32] | owner[32]  | lamports |exe| rent_epoch |
 *  +---+---+--------------+------------+------------+----------+---+------------+
 *  91         99              107   108       112       116
 *  +----------+---------------+-----+---------+---------+---------------------+
 *  | slot u64 | write_version |flags| raw_len | wire_len| payload (wire_len)  |
 *  +----------+---------------+-----+---------+---------+---------------------+
 *  flags bit0 = LZ4 block (payload decompresses to raw_len bytes); other bits must be 0.
 *  Uncompressed: wire_len == raw_len. raw_len <= 10 MiB. total == 116 + wire_len.
 *
 * TransactionUpdate, tag 6 (91-byte fixed header, then payload_len bytes)
 *  0   1   2              10         18          22  23               87            91
 *  +---+---+--------------+----------+-----------+---+----------------+-------------+---------+
 *  |ver|tag| sender_nanos | slot u64 | index u32 |vote| signature[64] | payload_len | payload |
 *  +---+---+--------------+----------+-----------+---+----------------+-------------+---------+
 *  payload_len <= 10 MiB. total == 91 + payload_len.
 *
 * SlotUpdate, tag 7 (exactly 18 bytes)
 *  0   1   2              10         18
 *  +---+---+--------------+----------+
 *  |ver|tag| sender_nanos | slot u64 |
 *  +---+---+--------------+----------+
 * ```
 * `sender_nanos` is the sender's wall clock (unix nanoseconds) when it encoded the frame,
 * so a consumer on the same host can measure delivery latency.
 *
 * Decoders check, in the reference's order: fixed-header length (SHM_ERR_TRUNCATED), wire
 * version (SHM_ERR_VERSION_MISMATCH), tag, boolean bytes, flags (SHM_ERR_CORRUPT), declared
 * lengths against 10 MiB (SHM_ERR_TOO_LARGE), then the total length (shorter than declared:
 * SHM_ERR_TRUNCATED, longer: SHM_ERR_CORRUPT). On any byte input they either return or throw
 * a ShmError. Decoded byte fields (pubkey, owner, signature, uncompressed data, payload) are
 * zero-copy views into the frame: copy them (`slice()`) to keep them past the frame's life,
 * e.g. once its ring slot is released.
 *
 * Every function is pure and may be called from any thread; none blocks. Encoders allocate
 * the frame; decoders allocate the result object and its views (and the decompressed data).
 */
import { ErrorCode, ShmArgumentError, ShmError, ShmFrameError } from '../errors.js';
import { decodeBase58, PUBKEY_LENGTH, toPubkey } from './base58.js';

export { PUBKEY_LENGTH };

/** Wire version of the qlaster reference this module speaks; byte 0 of every body. */
export const WIRE_VERSION = 9;

/** Message tags (byte 1). Tags 1, 3, 4 and 5 are control messages of the reference's socket. */
export const TAG_SUBSCRIPTION_REQUEST = 1;
export const TAG_ACCOUNT_UPDATE = 2;
export const TAG_CONNECTION_READY = 3;
export const TAG_PING_REQUEST = 4;
export const TAG_CONNECTION_READY_SHM = 5;
export const TAG_TRANSACTION_UPDATE = 6;
export const TAG_SLOT_UPDATE = 7;

/** Largest account data (raw_len) or transaction payload, in bytes (10 MiB). */
export const MAX_PAYLOAD_BYTES = 10 * 1024 * 1024;
/** Account flags bit 0: the payload is one LZ4 block (no frame header). */
export const FLAG_LZ4 = 1;
/** Length in bytes of a transaction signature. */
export const SIGNATURE_LENGTH = 64;

const U8_LENGTH = 1;
const U32_LENGTH = 4;
const U64_LENGTH = 8;
const U32_MAX = 0xffff_ffff;
const U64_MAX = 0xffff_ffff_ffff_ffffn;
const TWO_POW_32 = 2 ** 32;

// Common prefix of every data frame.
export const WIRE_VERSION_OFFSET = 0;
export const MESSAGE_TAG_OFFSET = WIRE_VERSION_OFFSET + U8_LENGTH;
export const SENDER_NANOS_OFFSET = MESSAGE_TAG_OFFSET + U8_LENGTH;
/** Bytes of the prefix shared by the three data frames (version, tag, sender_nanos). */
export const DATA_PREFIX_LENGTH = SENDER_NANOS_OFFSET + U64_LENGTH;

// AccountUpdate.
export const ACCOUNT_PUBKEY_OFFSET = DATA_PREFIX_LENGTH;
export const ACCOUNT_OWNER_OFFSET = ACCOUNT_PUBKEY_OFFSET + PUBKEY_LENGTH;
export const ACCOUNT_LAMPORTS_OFFSET = ACCOUNT_OWNER_OFFSET + PUBKEY_LENGTH;
export const ACCOUNT_EXECUTABLE_OFFSET = ACCOUNT_LAMPORTS_OFFSET + U64_LENGTH;
export const ACCOUNT_RENT_EPOCH_OFFSET = ACCOUNT_EXECUTABLE_OFFSET + U8_LENGTH;
export const ACCOUNT_SLOT_OFFSET = ACCOUNT_RENT_EPOCH_OFFSET + U64_LENGTH;
export const ACCOUNT_WRITE_VERSION_OFFSET = ACCOUNT_SLOT_OFFSET + U64_LENGTH;
export const ACCOUNT_FLAGS_OFFSET = ACCOUNT_WRITE_VERSION_OFFSET + U64_LENGTH;
export const ACCOUNT_RAW_LENGTH_OFFSET = ACCOUNT_FLAGS_OFFSET + U8_LENGTH;
export const ACCOUNT_WIRE_LENGTH_OFFSET = ACCOUNT_RAW_LENGTH_OFFSET + U32_LENGTH;
export const ACCOUNT_HEADER_LENGTH = ACCOUNT_WIRE_LENGTH_OFFSET + U32_LENGTH;
export const ACCOUNT_DATA_OFFSET = ACCOUNT_HEADER_LENGTH;

// TransactionUpdate.
export const TRANSACTION_SLOT_OFFSET = DATA_PREFIX_LENGTH;
export const TRANSACTION_INDEX_OFFSET = TRANSACTION_SLOT_OFFSET + U64_LENGTH;
export const TRANSACTION_IS_VOTE_OFFSET = TRANSACTION_INDEX_OFFSET + U32_LENGTH;
export const TRANSACTION_SIGNATURE_OFFSET = TRANSACTION_IS_VOTE_OFFSET + U8_LENGTH;
export const TRANSACTION_PAYLOAD_LENGTH_OFFSET = TRANSACTION_SIGNATURE_OFFSET + SIGNATURE_LENGTH;
export const TRANSACTION_HEADER_LENGTH = TRANSACTION_PAYLOAD_LENGTH_OFFSET + U32_LENGTH;
export const TRANSACTION_PAYLOAD_OFFSET = TRANSACTION_HEADER_LENGTH;

// SlotUpdate.
export const SLOT_UPDATE_SLOT_OFFSET = DATA_PREFIX_LENGTH;
export const SLOT_UPDATE_LENGTH = SLOT_UPDATE_SLOT_OFFSET + U64_LENGTH;

/** A u64 field: a bigint in 0..2^64-1, or (when encoding) a non-negative safe integer. */
export type U64Input = bigint | number;

/** A decoded account update. Byte fields are views into the frame they came from. */
export interface AccountUpdate {
  /** 32 bytes. */
  pubkey: Uint8Array;
  /** 32 bytes. */
  owner: Uint8Array;
  lamports: bigint;
  executable: boolean;
  rentEpoch: bigint;
  slot: bigint;
  writeVersion: bigint;
  /** The account data, decompressed if the frame carried an LZ4 block. */
  data: Uint8Array;
}

/** What `encodeAccountUpdate` accepts: keys as bytes or base58, u64s as bigint or safe integers. */
export interface AccountUpdateInput {
  pubkey: Uint8Array | string;
  owner: Uint8Array | string;
  lamports: U64Input;
  executable: boolean;
  rentEpoch: U64Input;
  slot: U64Input;
  writeVersion: U64Input;
  data: Uint8Array;
}

/** A decoded transaction update. Byte fields are views into the frame they came from. */
export interface TransactionUpdate {
  slot: bigint;
  /** Position of the transaction in its slot (u32). */
  index: number;
  /** 64 bytes. */
  signature: Uint8Array;
  isVote: boolean;
  payload: Uint8Array;
}

/** What `encodeTransactionUpdate` accepts: the signature as bytes or base58. */
export interface TransactionUpdateInput {
  slot: U64Input;
  index: number;
  signature: Uint8Array | string;
  isVote: boolean;
  payload: Uint8Array;
}

export interface SlotUpdate {
  slot: bigint;
}

export interface SlotUpdateInput {
  slot: U64Input;
}

export interface EncodeOptions {
  /** The sender timestamp to stamp, unix nanoseconds; default `unixNanosNow()`. */
  senderNanos?: U64Input;
}

export interface EncodeAccountOptions extends EncodeOptions {
  /**
   * Compresses the account data into one LZ4 block, or returns null to send it raw. Called
   * once, after the fields are validated; what it throws propagates unchanged. The policy is
   * the caller's: the reference compresses only data >= 500 KiB whose first 8 KiB shrink by
   * >= 0.75 %, and keeps the block only if it is strictly smaller than the data.
   */
  compress?: (data: Uint8Array) => Uint8Array | null;
}

export interface DecodeOptions {
  /**
   * Inflates an LZ4 block to exactly `rawLength` bytes (`rawLength` <= MAX_PAYLOAD_BYTES, checked
   * before the call). Needed only for frames with FLAG_LZ4. A non-ShmError it throws is reported
   * as SHM_ERR_CORRUPT with the original as `cause`; a result of another length is refused too.
   */
  decompress?: (wire: Uint8Array, rawLength: number) => Uint8Array;
}

export interface DecodedAccountUpdate {
  tag: typeof TAG_ACCOUNT_UPDATE;
  update: AccountUpdate;
  /** The sender's wall clock when it encoded the frame, unix nanoseconds. */
  senderNanos: bigint;
  /** Whether the frame carried an LZ4 block (FLAG_LZ4). */
  compressed: boolean;
}

export interface DecodedTransactionUpdate {
  tag: typeof TAG_TRANSACTION_UPDATE;
  update: TransactionUpdate;
  senderNanos: bigint;
}

export interface DecodedSlotUpdate {
  tag: typeof TAG_SLOT_UPDATE;
  update: SlotUpdate;
  senderNanos: bigint;
}

/** Any data frame, discriminated by `tag`. */
export type DecodedFrame = DecodedAccountUpdate | DecodedTransactionUpdate | DecodedSlotUpdate;

// ---------------------------------------------------------------------------------------------
// Sender clock

let anchorWallNanos = -1n;
let anchorHrNanos = 0n;

/**
 * The wall clock in unix nanoseconds: `Date.now()` for the millisecond, `process.hrtime` for
 * the part below it, so the result always lies inside the current `Date.now()` millisecond
 * (it follows wall-clock steps) and does not go backwards while the wall clock does not.
 * Per thread (module state); allocates bigints.
 */
export function unixNanosNow(): bigint {
  const wall = BigInt(Date.now()) * 1_000_000n;
  const hr = process.hrtime.bigint();
  const estimate = anchorWallNanos + (hr - anchorHrNanos);
  if (anchorWallNanos >= 0n && estimate >= wall && estimate < wall + 1_000_000n) return estimate;
  // First call, a new millisecond the hrtime estimate has not reached yet, or a wall-clock step.
  anchorWallNanos = wall;
  anchorHrNanos = hr;
  return wall;
}

// ---------------------------------------------------------------------------------------------
// Encoders

/**
 * Encodes an account update into one frame body (header + payload), stamped with
 * `options.senderNanos` (default now). With `options.compress` returning a block, the frame
 * carries the block with FLAG_LZ4, raw_len = data length and wire_len = block length.
 * Throws SHM_ERR_INVALID_ARGUMENT for a bad field and SHM_ERR_TOO_LARGE for data over
 * MAX_PAYLOAD_BYTES. Allocates the frame.
 */
export function encodeAccountUpdate(u: AccountUpdateInput, options?: EncodeAccountOptions): Uint8Array {
  requireObject(u, 'account update');
  const pubkey = pubkeyField(u.pubkey, 'pubkey');
  const owner = pubkeyField(u.owner, 'owner');
  requireU64(u.lamports, 'lamports');
  requireBoolean(u.executable, 'executable');
  requireU64(u.rentEpoch, 'rentEpoch');
  requireU64(u.slot, 'slot');
  requireU64(u.writeVersion, 'writeVersion');
  const data = u.data;
  requirePayload(data, 'account data');
  const senderNanos = senderNanosOption(options);
  const compress = options?.compress;
  if (compress !== undefined && typeof compress !== 'function') {
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `options.compress must be a function, got ${show(compress)}`,
    );
  }

  let wire = data;
  let flags = 0;
  if (compress !== undefined) {
    const block = compress(data);
    if (block !== null && block !== undefined) {
      if (!(block instanceof Uint8Array) || block.length > U32_MAX) {
        throw new ShmArgumentError(
          ErrorCode.INVALID_ARGUMENT,
          `options.compress must return null or a Uint8Array of at most ${U32_MAX} bytes, got ${show(block)}`,
        );
      }
      wire = block;
      flags = FLAG_LZ4;
    }
  }

  const frame = new Uint8Array(ACCOUNT_HEADER_LENGTH + wire.length);
  const view = new DataView(frame.buffer);
  writePrefix(frame, view, TAG_ACCOUNT_UPDATE, senderNanos);
  frame.set(pubkey, ACCOUNT_PUBKEY_OFFSET);
  frame.set(owner, ACCOUNT_OWNER_OFFSET);
  writeU64(view, ACCOUNT_LAMPORTS_OFFSET, u.lamports);
  frame[ACCOUNT_EXECUTABLE_OFFSET] = u.executable ? 1 : 0;
  writeU64(view, ACCOUNT_RENT_EPOCH_OFFSET, u.rentEpoch);
  writeU64(view, ACCOUNT_SLOT_OFFSET, u.slot);
  writeU64(view, ACCOUNT_WRITE_VERSION_OFFSET, u.writeVersion);
  frame[ACCOUNT_FLAGS_OFFSET] = flags;
  view.setUint32(ACCOUNT_RAW_LENGTH_OFFSET, data.length, true);
  view.setUint32(ACCOUNT_WIRE_LENGTH_OFFSET, wire.length, true);
  frame.set(wire, ACCOUNT_DATA_OFFSET);
  return frame;
}

/**
 * Encodes a transaction update into one frame body (header + payload), stamped with
 * `options.senderNanos` (default now). Throws SHM_ERR_INVALID_ARGUMENT for a bad field and
 * SHM_ERR_TOO_LARGE for a payload over MAX_PAYLOAD_BYTES. Allocates the frame.
 */
export function encodeTransactionUpdate(t: TransactionUpdateInput, options?: EncodeOptions): Uint8Array {
  requireObject(t, 'transaction update');
  requireU64(t.slot, 'slot');
  if (!Number.isInteger(t.index) || t.index < 0 || t.index > U32_MAX) {
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `index must be an integer in 0..${U32_MAX}, got ${show(t.index)}`,
    );
  }
  const signature = signatureField(t.signature);
  requireBoolean(t.isVote, 'isVote');
  const payload = t.payload;
  requirePayload(payload, 'transaction payload');
  const senderNanos = senderNanosOption(options);

  const frame = new Uint8Array(TRANSACTION_HEADER_LENGTH + payload.length);
  const view = new DataView(frame.buffer);
  writePrefix(frame, view, TAG_TRANSACTION_UPDATE, senderNanos);
  writeU64(view, TRANSACTION_SLOT_OFFSET, t.slot);
  view.setUint32(TRANSACTION_INDEX_OFFSET, t.index, true);
  frame[TRANSACTION_IS_VOTE_OFFSET] = t.isVote ? 1 : 0;
  frame.set(signature, TRANSACTION_SIGNATURE_OFFSET);
  view.setUint32(TRANSACTION_PAYLOAD_LENGTH_OFFSET, payload.length, true);
  frame.set(payload, TRANSACTION_PAYLOAD_OFFSET);
  return frame;
}

/**
 * Encodes a slot update into one 18-byte frame body, stamped with `options.senderNanos`
 * (default now). Throws SHM_ERR_INVALID_ARGUMENT for a bad slot. Allocates the frame.
 */
export function encodeSlotUpdate(s: SlotUpdateInput, options?: EncodeOptions): Uint8Array {
  requireObject(s, 'slot update');
  requireU64(s.slot, 'slot');
  const senderNanos = senderNanosOption(options);
  const frame = new Uint8Array(SLOT_UPDATE_LENGTH);
  const view = new DataView(frame.buffer);
  writePrefix(frame, view, TAG_SLOT_UPDATE, senderNanos);
  writeU64(view, SLOT_UPDATE_SLOT_OFFSET, s.slot);
  return frame;
}

// ---------------------------------------------------------------------------------------------
// Decoders

/**
 * The message tag (byte 1) of a frame body, without any other check. Throws
 * SHM_ERR_TRUNCATED for a body shorter than 2 bytes.
 */
export function peekTag(frame: Uint8Array): number {
  requireFrame(frame);
  if (frame.length <= MESSAGE_TAG_OFFSET) {
    throw new ShmFrameError(
      ErrorCode.TRUNCATED,
      `frame of ${frame.length} bytes is too short for a message tag (needs ${MESSAGE_TAG_OFFSET + U8_LENGTH})`,
      { details: { length: frame.length } },
    );
  }
  return frame[MESSAGE_TAG_OFFSET];
}

/**
 * The sender timestamp of a data frame (tag 2, 6 or 7, wire version 9) without decoding the
 * rest. Throws SHM_ERR_TRUNCATED, SHM_ERR_VERSION_MISMATCH or SHM_ERR_CORRUPT (other tag).
 */
export function peekSenderNanos(frame: Uint8Array): bigint {
  requireFrame(frame);
  const what = 'data frame';
  requireLength(frame, DATA_PREFIX_LENGTH, what);
  requireVersion(frame);
  const tag = frame[MESSAGE_TAG_OFFSET];
  if (tag !== TAG_ACCOUNT_UPDATE && tag !== TAG_TRANSACTION_UPDATE && tag !== TAG_SLOT_UPDATE) throw unknownTag(tag);
  return viewOf(frame).getBigUint64(SENDER_NANOS_OFFSET, true);
}

/**
 * Decodes any data frame, dispatching on the tag (byte 1) like the reference's router. A tag
 * other than 2, 6 or 7 is SHM_ERR_CORRUPT (found=…, expected=2); otherwise see the decoder of
 * that tag.
 */
export function decodeFrame(frame: Uint8Array, options?: DecodeOptions): DecodedFrame {
  const tag = peekTag(frame);
  switch (tag) {
    case TAG_ACCOUNT_UPDATE:
      return decodeAccountUpdate(frame, options);
    case TAG_TRANSACTION_UPDATE:
      return decodeTransactionUpdate(frame, options);
    case TAG_SLOT_UPDATE:
      return decodeSlotUpdate(frame, options);
    default:
      throw unknownTag(tag);
  }
}

/**
 * Decodes an account update frame. `update.data` is a view into `frame` when the frame is
 * uncompressed, and the bytes `options.decompress` returned when it carries FLAG_LZ4 (without
 * `decompress`, such a frame throws SHM_ERR_INVALID_ARGUMENT after the header checks).
 */
export function decodeAccountUpdate(frame: Uint8Array, options?: DecodeOptions): DecodedAccountUpdate {
  const what = 'account update';
  requireFrame(frame);
  const decompress = decompressOption(options);
  requireLength(frame, ACCOUNT_HEADER_LENGTH, what);
  requireVersion(frame);
  requireTag(frame, TAG_ACCOUNT_UPDATE);
  const executable = readBoolean(frame, ACCOUNT_EXECUTABLE_OFFSET, what, 'executable');
  const flags = frame[ACCOUNT_FLAGS_OFFSET];
  if ((flags & ~FLAG_LZ4) !== 0) {
    throw new ShmFrameError(
      ErrorCode.CORRUPT,
      `${what} has unknown flag bits: flags=0x${flags.toString(16)} (only bit 0 = LZ4 is defined)`,
      { details: { flags } },
    );
  }
  const view = viewOf(frame);
  const rawLength = view.getUint32(ACCOUNT_RAW_LENGTH_OFFSET, true);
  requireAtMostMax(rawLength, what, 'raw_len');
  const wireLength = view.getUint32(ACCOUNT_WIRE_LENGTH_OFFSET, true);
  requireTotal(frame, ACCOUNT_HEADER_LENGTH + wireLength, what, ` (${ACCOUNT_HEADER_LENGTH} + wire_len=${wireLength})`);

  const wire = frame.subarray(ACCOUNT_DATA_OFFSET);
  const compressed = (flags & FLAG_LZ4) !== 0;
  let data: Uint8Array;
  if (compressed) {
    data = inflate(wire, rawLength, decompress, what);
  } else {
    if (wireLength !== rawLength) {
      throw new ShmFrameError(
        ErrorCode.CORRUPT,
        `${what} is uncompressed but wire_len=${wireLength} differs from raw_len=${rawLength}`,
        { details: { found: wireLength, expected: rawLength } },
      );
    }
    data = wire;
  }
  return {
    tag: TAG_ACCOUNT_UPDATE,
    update: {
      pubkey: frame.subarray(ACCOUNT_PUBKEY_OFFSET, ACCOUNT_PUBKEY_OFFSET + PUBKEY_LENGTH),
      owner: frame.subarray(ACCOUNT_OWNER_OFFSET, ACCOUNT_OWNER_OFFSET + PUBKEY_LENGTH),
      lamports: view.getBigUint64(ACCOUNT_LAMPORTS_OFFSET, true),
      executable,
      rentEpoch: view.getBigUint64(ACCOUNT_RENT_EPOCH_OFFSET, true),
      slot: view.getBigUint64(ACCOUNT_SLOT_OFFSET, true),
      writeVersion: view.getBigUint64(ACCOUNT_WRITE_VERSION_OFFSET, true),
      data,
    },
    senderNanos: view.getBigUint64(SENDER_NANOS_OFFSET, true),
    compressed,
  };
}

/** Decodes a transaction update frame; `signature` and `payload` are views into `frame`. */
export function decodeTransactionUpdate(frame: Uint8Array, options?: DecodeOptions): DecodedTransactionUpdate {
  const what = 'transaction update';
  requireFrame(frame);
  decompressOption(options);
  requireLength(frame, TRANSACTION_HEADER_LENGTH, what);
  requireVersion(frame);
  requireTag(frame, TAG_TRANSACTION_UPDATE);
  const isVote = readBoolean(frame, TRANSACTION_IS_VOTE_OFFSET, what, 'is_vote');
  const view = viewOf(frame);
  const payloadLength = view.getUint32(TRANSACTION_PAYLOAD_LENGTH_OFFSET, true);
  requireAtMostMax(payloadLength, what, 'payload_len');
  requireTotal(
    frame,
    TRANSACTION_HEADER_LENGTH + payloadLength,
    what,
    ` (${TRANSACTION_HEADER_LENGTH} + payload_len=${payloadLength})`,
  );
  return {
    tag: TAG_TRANSACTION_UPDATE,
    update: {
      slot: view.getBigUint64(TRANSACTION_SLOT_OFFSET, true),
      index: view.getUint32(TRANSACTION_INDEX_OFFSET, true),
      signature: frame.subarray(TRANSACTION_SIGNATURE_OFFSET, TRANSACTION_SIGNATURE_OFFSET + SIGNATURE_LENGTH),
      isVote,
      payload: frame.subarray(TRANSACTION_PAYLOAD_OFFSET),
    },
    senderNanos: view.getBigUint64(SENDER_NANOS_OFFSET, true),
  };
}

/** Decodes a slot update frame (exactly SLOT_UPDATE_LENGTH bytes). `options` is accepted for symmetry. */
export function decodeSlotUpdate(frame: Uint8Array, options?: DecodeOptions): DecodedSlotUpdate {
  const what = 'slot update';
  requireFrame(frame);
  decompressOption(options);
  requireLength(frame, SLOT_UPDATE_LENGTH, what);
  requireVersion(frame);
  requireTag(frame, TAG_SLOT_UPDATE);
  requireTotal(frame, SLOT_UPDATE_LENGTH, what, '');
  const view = viewOf(frame);
  return {
    tag: TAG_SLOT_UPDATE,
    update: { slot: view.getBigUint64(SLOT_UPDATE_SLOT_OFFSET, true) },
    senderNanos: view.getBigUint64(SENDER_NANOS_OFFSET, true),
  };
}

// ---------------------------------------------------------------------------------------------
// Checks

function viewOf(frame: Uint8Array): DataView {
  return new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
}

function requireFrame(frame: unknown): asserts frame is Uint8Array {
  if (!(frame instanceof Uint8Array)) {
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `a frame must be a Uint8Array, got ${show(frame)}`);
  }
}

function requireLength(frame: Uint8Array, headerLength: number, what: string): void {
  if (frame.length < headerLength) {
    throw new ShmFrameError(
      ErrorCode.TRUNCATED,
      `${what} frame of ${frame.length} bytes is shorter than its ${headerLength}-byte fixed header`,
      { details: { length: frame.length, expected: headerLength } },
    );
  }
}

function requireVersion(frame: Uint8Array): void {
  const found = frame[WIRE_VERSION_OFFSET];
  if (found !== WIRE_VERSION) {
    throw new ShmFrameError(ErrorCode.VERSION_MISMATCH, `wire version found=${found}, expected=${WIRE_VERSION}`, {
      details: { found, expected: WIRE_VERSION },
    });
  }
}

function requireTag(frame: Uint8Array, expected: number): void {
  const found = frame[MESSAGE_TAG_OFFSET];
  if (found !== expected) {
    throw new ShmFrameError(ErrorCode.CORRUPT, `unexpected message tag found=${found}, expected=${expected}`, {
      details: { found, expected },
    });
  }
}

function unknownTag(found: number): ShmFrameError {
  const control =
    found === TAG_SUBSCRIPTION_REQUEST ||
    found === TAG_CONNECTION_READY ||
    found === TAG_PING_REQUEST ||
    found === TAG_CONNECTION_READY_SHM;
  const note = control ? ' (a control message, not a data frame)' : '';
  return new ShmFrameError(
    ErrorCode.CORRUPT,
    `unknown message tag found=${found}, expected=${TAG_ACCOUNT_UPDATE}${note}; data frames are tags ${TAG_ACCOUNT_UPDATE}, ${TAG_TRANSACTION_UPDATE}, ${TAG_SLOT_UPDATE}`,
    { details: { found, expected: TAG_ACCOUNT_UPDATE } },
  );
}

function readBoolean(frame: Uint8Array, offset: number, what: string, field: string): boolean {
  const found = frame[offset];
  if (found > 1) {
    throw new ShmFrameError(ErrorCode.CORRUPT, `${what} ${field} byte must be 0 or 1, found=${found}`, {
      details: { field, found },
    });
  }
  return found === 1;
}

function requireAtMostMax(length: number, what: string, field: string): void {
  if (length > MAX_PAYLOAD_BYTES) {
    throw new ShmFrameError(
      ErrorCode.TOO_LARGE,
      `${what} ${field} is too large: found=${length}, max=${MAX_PAYLOAD_BYTES}`,
      { details: { field, found: length, max: MAX_PAYLOAD_BYTES } },
    );
  }
}

/**
 * The body must be exactly `expected` bytes (`how` says where that comes from): fewer is
 * TRUNCATED (the header promises bytes that are missing), more is CORRUPT.
 */
function requireTotal(frame: Uint8Array, expected: number, what: string, how: string): void {
  if (frame.length === expected) return;
  throw new ShmFrameError(
    frame.length < expected ? ErrorCode.TRUNCATED : ErrorCode.CORRUPT,
    `${what} frame length found=${frame.length}, expected=${expected}${how}`,
    { details: { found: frame.length, expected } },
  );
}

function inflate(
  wire: Uint8Array,
  rawLength: number,
  decompress: DecodeOptions['decompress'],
  what: string,
): Uint8Array {
  if (decompress === undefined) {
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `${what} carries an LZ4 block (raw_len=${rawLength}, wire_len=${wire.length}); pass options.decompress to decode it`,
      { details: { rawLength, wireLength: wire.length } },
    );
  }
  let data: unknown;
  try {
    data = decompress(wire, rawLength);
  } catch (err) {
    if (err instanceof ShmError) throw err;
    throw new ShmFrameError(ErrorCode.CORRUPT, `${what} payload does not decompress: ${messageOf(err)}`, {
      cause: err,
      details: { rawLength, wireLength: wire.length },
    });
  }
  if (!(data instanceof Uint8Array) || data.length !== rawLength) {
    const found = data instanceof Uint8Array ? data.length : show(data);
    throw new ShmFrameError(
      ErrorCode.CORRUPT,
      `${what} decompressed length found=${found}, expected raw_len=${rawLength}`,
      { details: { found, expected: rawLength } },
    );
  }
  return data;
}

function decompressOption(options: DecodeOptions | undefined): DecodeOptions['decompress'] {
  if (options === undefined || options === null) return undefined;
  if (typeof options !== 'object') {
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `options must be an object, got ${show(options)}`);
  }
  const decompress = options.decompress;
  if (decompress !== undefined && typeof decompress !== 'function') {
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `options.decompress must be a function, got ${show(decompress)}`,
    );
  }
  return decompress;
}

// ---------------------------------------------------------------------------------------------
// Encoder helpers

function requireObject(x: unknown, what: string): void {
  if (x === null || typeof x !== 'object') {
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `${what} must be an object, got ${show(x)}`);
  }
}

function requireU64(value: unknown, field: string): void {
  if (
    typeof value === 'bigint' ? value >= 0n && value <= U64_MAX : Number.isSafeInteger(value) && (value as number) >= 0
  )
    return;
  throw new ShmArgumentError(
    ErrorCode.INVALID_ARGUMENT,
    `${field} must be a u64 (a bigint in 0..2^64-1 or a safe integer >= 0), got ${show(value)}`,
    { details: { field } },
  );
}

function requireBoolean(value: unknown, field: string): void {
  if (typeof value !== 'boolean') {
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `${field} must be a boolean, got ${show(value)}`, {
      details: { field },
    });
  }
}

function requirePayload(payload: unknown, what: string): asserts payload is Uint8Array {
  if (!(payload instanceof Uint8Array)) {
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `${what} must be a Uint8Array, got ${show(payload)}`);
  }
  if (payload.length > MAX_PAYLOAD_BYTES) {
    throw new ShmFrameError(
      ErrorCode.TOO_LARGE,
      `${what} is too large: found=${payload.length}, max=${MAX_PAYLOAD_BYTES}`,
      { details: { found: payload.length, max: MAX_PAYLOAD_BYTES } },
    );
  }
}

function pubkeyField(value: unknown, field: string): Uint8Array {
  try {
    return toPubkey(value as string | Uint8Array);
  } catch (err) {
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `${field}: ${messageOf(err)}`, {
      cause: err,
      details: { field },
    });
  }
}

function signatureField(value: unknown): Uint8Array {
  let bytes: Uint8Array | undefined;
  if (value instanceof Uint8Array) bytes = value;
  // 64 bytes are at most 88 base58 characters; the bound keeps the quadratic decode short.
  else if (typeof value === 'string' && value.length <= 88) {
    try {
      bytes = decodeBase58(value);
    } catch (err) {
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `signature: ${messageOf(err)}`, { cause: err });
    }
  }
  if (bytes === undefined || bytes.length !== SIGNATURE_LENGTH) {
    const got = bytes === undefined ? show(value) : `${bytes.length} bytes`;
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `signature must be ${SIGNATURE_LENGTH} bytes (a Uint8Array or base58), got ${got}`,
    );
  }
  return bytes;
}

function senderNanosOption(options: EncodeOptions | undefined): U64Input {
  if (options === undefined || options === null) return unixNanosNow();
  if (typeof options !== 'object') {
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `options must be an object, got ${show(options)}`);
  }
  if (options.senderNanos === undefined) return unixNanosNow();
  requireU64(options.senderNanos, 'options.senderNanos');
  return options.senderNanos;
}

function writePrefix(frame: Uint8Array, view: DataView, tag: number, senderNanos: U64Input): void {
  frame[WIRE_VERSION_OFFSET] = WIRE_VERSION;
  frame[MESSAGE_TAG_OFFSET] = tag;
  writeU64(view, SENDER_NANOS_OFFSET, senderNanos);
}

/** Writes a validated u64 little-endian; safe integers go in as two u32 halves (no BigInt). */
function writeU64(view: DataView, offset: number, value: U64Input): void {
  if (typeof value === 'bigint') {
    view.setBigUint64(offset, value, true);
  } else {
    view.setUint32(offset, value % TWO_POW_32, true);
    view.setUint32(offset + U32_LENGTH, Math.floor(value / TWO_POW_32), true);
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : show(err);
}

function show(x: unknown): string {
  if (typeof x === 'string') return JSON.stringify(x.length > 60 ? `${x.slice(0, 60)}…` : x);
  if (typeof x === 'bigint') return `${x}n`;
  if (typeof x === 'number' || typeof x === 'boolean' || x === undefined || x === null) return String(x);
  if (x instanceof Uint8Array) return `${x.constructor.name}(${x.length})`;
  if (typeof x === 'object') return (x as object).constructor?.name ?? 'object';
  return typeof x;
}
