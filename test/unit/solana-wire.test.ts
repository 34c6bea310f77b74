/**
 * The Solana data-frame codecs against the qlaster reference's wire version 9
 * (docs: shared/reference/seed-designs.md §1.4). Golden frames are built here field by field
 * at the spec's offsets with a DataView, independently of the encoder, so a layout change in
 * src/solana/wire.ts fails these tests instead of silently round-tripping.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode, type ErrorCodeValue, ShmArgumentError, ShmError, ShmFrameError } from '../../src/errors.js';
import { decodeBase58, encodeBase58, pubkeyToString, toPubkey } from '../../src/solana/base58.js';
import * as wire from '../../src/solana/wire.js';
import {
  type AccountUpdate,
  decodeAccountUpdate,
  decodeFrame,
  decodeSlotUpdate,
  decodeTransactionUpdate,
  encodeAccountUpdate,
  encodeSlotUpdate,
  encodeTransactionUpdate,
  peekSenderNanos,
  peekTag,
} from '../../src/solana/wire.js';
import { prng, testSeed } from '../helpers/prng.js';

const MIB = 1024 * 1024;
const U64_MAX = 2n ** 64n - 1n;
const TOKEN_PROGRAM = 'TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA';
const TOKEN_PROGRAM_HEX = '06ddf6e1d765a193d9cbe146ceeb79ac1cb485ed5f5b37913a8cf5857eff00a9';

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

function fromHex(h: string): Uint8Array {
  return new Uint8Array(Buffer.from(h, 'hex'));
}

function pattern(length: number, start: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (start + i * 7) & 0xff;
  return out;
}

/** Asserts that `fn` throws a ShmError of `cls` with `code`, and returns it for more checks. */
function throwsShm(fn: () => unknown, cls: typeof ShmError, code: ErrorCodeValue, message?: RegExp): ShmError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, `expected ${code}, nothing was thrown`);
  assert.ok(caught instanceof cls, `expected a ${cls.name}, got ${String(caught)}`);
  const err = caught as ShmError;
  assert.equal(err.code, code, `wrong code for: ${err.message}`);
  if (message !== undefined) assert.match(err.message, message);
  return err;
}

// ---------------------------------------------------------------------------------------------
// Golden frames, written at the offsets of seed-designs.md §1.4 (literals on purpose).

interface GoldenAccount {
  senderNanos: bigint;
  pubkey: Uint8Array;
  owner: Uint8Array;
  lamports: bigint;
  executable: number;
  rentEpoch: bigint;
  slot: bigint;
  writeVersion: bigint;
  flags: number;
  rawLength: number;
  wire: Uint8Array;
}

function goldenAccountFrame(g: GoldenAccount): Uint8Array {
  const frame = new Uint8Array(116 + g.wire.length);
  const dv = new DataView(frame.buffer);
  dv.setUint8(0, 9);
  dv.setUint8(1, 2);
  dv.setBigUint64(2, g.senderNanos, true);
  frame.set(g.pubkey, 10);
  frame.set(g.owner, 42);
  dv.setBigUint64(74, g.lamports, true);
  dv.setUint8(82, g.executable);
  dv.setBigUint64(83, g.rentEpoch, true);
  dv.setBigUint64(91, g.slot, true);
  dv.setBigUint64(99, g.writeVersion, true);
  dv.setUint8(107, g.flags);
  dv.setUint32(108, g.rawLength, true);
  dv.setUint32(112, g.wire.length, true);
  frame.set(g.wire, 116);
  return frame;
}

interface GoldenTransaction {
  senderNanos: bigint;
  slot: bigint;
  index: number;
  isVote: number;
  signature: Uint8Array;
  payload: Uint8Array;
  payloadLength?: number;
}

function goldenTransactionFrame(g: GoldenTransaction): Uint8Array {
  const frame = new Uint8Array(91 + g.payload.length);
  const dv = new DataView(frame.buffer);
  dv.setUint8(0, 9);
  dv.setUint8(1, 6);
  dv.setBigUint64(2, g.senderNanos, true);
  dv.setBigUint64(10, g.slot, true);
  dv.setUint32(18, g.index, true);
  dv.setUint8(22, g.isVote);
  frame.set(g.signature, 23);
  dv.setUint32(87, g.payloadLength ?? g.payload.length, true);
  frame.set(g.payload, 91);
  return frame;
}

const ACCOUNT_FIELDS = {
  pubkey: pattern(32, 1),
  owner: pattern(32, 0xa0),
  lamports: 0x0123_4567_89ab_cdefn,
  executable: true,
  rentEpoch: U64_MAX,
  slot: 250_000_000n,
  writeVersion: 0x1122_3344_5566_7788n,
  data: new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0x00]),
};
const SENDER_NANOS = 1_700_000_000_123_456_789n;

function goldenOf(fields: typeof ACCOUNT_FIELDS, overrides: Partial<GoldenAccount> = {}): GoldenAccount {
  return {
    senderNanos: SENDER_NANOS,
    pubkey: fields.pubkey,
    owner: fields.owner,
    lamports: fields.lamports,
    executable: fields.executable ? 1 : 0,
    rentEpoch: fields.rentEpoch,
    slot: fields.slot,
    writeVersion: fields.writeVersion,
    flags: 0,
    rawLength: fields.data.length,
    wire: fields.data,
    ...overrides,
  };
}

function plainAccountFrame(overrides: Partial<GoldenAccount> = {}): Uint8Array {
  return goldenAccountFrame(goldenOf(ACCOUNT_FIELDS, overrides));
}

const TRANSACTION_FIELDS = {
  slot: 0xfedc_ba98_7654_3210n,
  index: 0xdead_beef,
  signature: pattern(64, 0x40),
  isVote: true,
  payload: pattern(300, 3),
};

function plainTransactionFrame(overrides: Partial<GoldenTransaction> = {}): Uint8Array {
  return goldenTransactionFrame({
    senderNanos: SENDER_NANOS,
    slot: TRANSACTION_FIELDS.slot,
    index: TRANSACTION_FIELDS.index,
    isVote: 1,
    signature: TRANSACTION_FIELDS.signature,
    payload: TRANSACTION_FIELDS.payload,
    ...overrides,
  });
}

/** 09 07 | sender_nanos 0x0102030405060708 LE | slot 0x1112131415161718 LE */
const GOLDEN_SLOT_HEX = '0907' + '0807060504030201' + '1817161514131211';

/** A toy run-length codec standing in for LZ4: the codec is the caller's, the frame only carries it. */
function rleCompress(data: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < data.length; ) {
    let run = 1;
    while (run < 255 && i + run < data.length && data[i + run] === data[i]) run++;
    out.push(run, data[i]);
    i += run;
  }
  return new Uint8Array(out);
}

function rleDecompress(block: Uint8Array): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i + 1 < block.length; i += 2) for (let k = 0; k < block[i]; k++) out.push(block[i + 1]);
  return new Uint8Array(out);
}

// ---------------------------------------------------------------------------------------------
// Layout

test('the frame offsets and lengths are those of the reference wire version 9', () => {
  assert.deepEqual(
    {
      version: wire.WIRE_VERSION,
      tags: [
        wire.TAG_SUBSCRIPTION_REQUEST,
        wire.TAG_ACCOUNT_UPDATE,
        wire.TAG_CONNECTION_READY,
        wire.TAG_PING_REQUEST,
        wire.TAG_CONNECTION_READY_SHM,
        wire.TAG_TRANSACTION_UPDATE,
        wire.TAG_SLOT_UPDATE,
      ],
      prefix: [wire.WIRE_VERSION_OFFSET, wire.MESSAGE_TAG_OFFSET, wire.SENDER_NANOS_OFFSET, wire.DATA_PREFIX_LENGTH],
      account: [
        wire.ACCOUNT_PUBKEY_OFFSET,
        wire.ACCOUNT_OWNER_OFFSET,
        wire.ACCOUNT_LAMPORTS_OFFSET,
        wire.ACCOUNT_EXECUTABLE_OFFSET,
        wire.ACCOUNT_RENT_EPOCH_OFFSET,
        wire.ACCOUNT_SLOT_OFFSET,
        wire.ACCOUNT_WRITE_VERSION_OFFSET,
        wire.ACCOUNT_FLAGS_OFFSET,
        wire.ACCOUNT_RAW_LENGTH_OFFSET,
        wire.ACCOUNT_WIRE_LENGTH_OFFSET,
        wire.ACCOUNT_HEADER_LENGTH,
        wire.ACCOUNT_DATA_OFFSET,
      ],
      transaction: [
        wire.TRANSACTION_SLOT_OFFSET,
        wire.TRANSACTION_INDEX_OFFSET,
        wire.TRANSACTION_IS_VOTE_OFFSET,
        wire.TRANSACTION_SIGNATURE_OFFSET,
        wire.TRANSACTION_PAYLOAD_LENGTH_OFFSET,
        wire.TRANSACTION_HEADER_LENGTH,
        wire.TRANSACTION_PAYLOAD_OFFSET,
      ],
      slot: [wire.SLOT_UPDATE_SLOT_OFFSET, wire.SLOT_UPDATE_LENGTH],
      limits: [wire.MAX_PAYLOAD_BYTES, wire.FLAG_LZ4, wire.PUBKEY_LENGTH, wire.SIGNATURE_LENGTH],
    },
    {
      version: 9,
      tags: [1, 2, 3, 4, 5, 6, 7],
      prefix: [0, 1, 2, 10],
      account: [10, 42, 74, 82, 83, 91, 99, 107, 108, 112, 116, 116],
      transaction: [10, 18, 22, 23, 87, 91, 91],
      slot: [10, 18],
      limits: [10 * MIB, 1, 32, 64],
    },
  );
});

// ---------------------------------------------------------------------------------------------
// Golden bytes

test('encodes an account update byte for byte as the spec lays it out, and decodes it back', () => {
  const expected = plainAccountFrame();
  const sut = encodeAccountUpdate(ACCOUNT_FIELDS, { senderNanos: SENDER_NANOS });
  assert.equal(hex(sut), hex(expected));

  const decoded = decodeAccountUpdate(expected);
  assert.equal(decoded.tag, 2);
  assert.equal(decoded.senderNanos, SENDER_NANOS);
  assert.equal(decoded.compressed, false);
  assert.deepEqual(decoded.update, ACCOUNT_FIELDS);
});

test('encodes a compressed account update with FLAG_LZ4, raw_len and the block length', () => {
  const data = new Uint8Array(4000).fill(0xab);
  data.set([1, 2, 3], 1000);
  const block = rleCompress(data);
  assert.ok(block.length < data.length);
  const fields = { ...ACCOUNT_FIELDS, data };
  const expected = goldenAccountFrame(goldenOf(fields, { flags: 1, rawLength: data.length, wire: block }));

  const seen: Uint8Array[] = [];
  const sut = encodeAccountUpdate(fields, {
    senderNanos: SENDER_NANOS,
    compress: (d) => {
      seen.push(d);
      return rleCompress(d);
    },
  });
  assert.equal(seen.length, 1);
  assert.equal(seen[0], data);
  assert.equal(hex(sut), hex(expected));

  const calls: Array<[number, number]> = [];
  const decoded = decodeAccountUpdate(expected, {
    decompress: (w, rawLength) => {
      calls.push([w.length, rawLength]);
      assert.equal(hex(w), hex(block));
      return rleDecompress(w);
    },
  });
  assert.deepEqual(calls, [[block.length, data.length]]);
  assert.equal(decoded.compressed, true);
  assert.deepEqual(decoded.update, fields);
});

test('sends the data raw when compress returns null', () => {
  const sut = encodeAccountUpdate(ACCOUNT_FIELDS, { senderNanos: SENDER_NANOS, compress: () => null });
  assert.equal(hex(sut), hex(plainAccountFrame()));
});

test('encodes a transaction update byte for byte as the spec lays it out, and decodes it back', () => {
  const expected = plainTransactionFrame();
  const sut = encodeTransactionUpdate(TRANSACTION_FIELDS, { senderNanos: SENDER_NANOS });
  assert.equal(hex(sut), hex(expected));

  const decoded = decodeTransactionUpdate(expected);
  assert.equal(decoded.tag, 6);
  assert.equal(decoded.senderNanos, SENDER_NANOS);
  assert.deepEqual(decoded.update, TRANSACTION_FIELDS);
});

test('encodes a slot update as exactly the 18 spec bytes, and decodes it back', () => {
  const sut = encodeSlotUpdate({ slot: 0x1112_1314_1516_1718n }, { senderNanos: 0x0102_0304_0506_0708n });
  assert.equal(hex(sut), GOLDEN_SLOT_HEX);
  const decoded = decodeSlotUpdate(fromHex(GOLDEN_SLOT_HEX));
  assert.deepEqual(decoded, { tag: 7, update: { slot: 0x1112_1314_1516_1718n }, senderNanos: 0x0102_0304_0506_0708n });
});

test('accepts safe-integer numbers for u64 fields and writes the same bytes as bigints', () => {
  const big = encodeAccountUpdate(
    { ...ACCOUNT_FIELDS, lamports: 2n ** 53n - 1n, rentEpoch: 0n, slot: 4_294_967_296n, writeVersion: 4_294_967_295n },
    { senderNanos: 1_234_567_890_123n },
  );
  const num = encodeAccountUpdate(
    {
      ...ACCOUNT_FIELDS,
      lamports: Number.MAX_SAFE_INTEGER,
      rentEpoch: 0,
      slot: 4_294_967_296,
      writeVersion: 4_294_967_295,
    },
    { senderNanos: 1_234_567_890_123 },
  );
  assert.equal(hex(num), hex(big));
  assert.equal(
    hex(encodeSlotUpdate({ slot: 0x1112_1314 }, { senderNanos: 5 })),
    hex(encodeSlotUpdate({ slot: 0x1112_1314n }, { senderNanos: 5n })),
  );
});

test('takes pubkeys and signatures as base58 text too', () => {
  const fromText = encodeAccountUpdate(
    { ...ACCOUNT_FIELDS, pubkey: TOKEN_PROGRAM, owner: '11111111111111111111111111111111' },
    { senderNanos: SENDER_NANOS },
  );
  const fromBytes = encodeAccountUpdate(
    { ...ACCOUNT_FIELDS, pubkey: fromHex(TOKEN_PROGRAM_HEX), owner: new Uint8Array(32) },
    { senderNanos: SENDER_NANOS },
  );
  assert.equal(hex(fromText), hex(fromBytes));

  const signature = TRANSACTION_FIELDS.signature;
  assert.equal(
    hex(encodeTransactionUpdate({ ...TRANSACTION_FIELDS, signature: encodeBase58(signature) }, { senderNanos: 1n })),
    hex(encodeTransactionUpdate(TRANSACTION_FIELDS, { senderNanos: 1n })),
  );
});

// ---------------------------------------------------------------------------------------------
// Decoding details

test('decodes uncompressed data, keys and payloads as views into the frame (zero-copy)', () => {
  const outer = new Uint8Array(3 + 116 + ACCOUNT_FIELDS.data.length + 5);
  const frame = outer.subarray(3, 3 + 116 + ACCOUNT_FIELDS.data.length);
  frame.set(plainAccountFrame());
  const { update } = decodeAccountUpdate(frame);
  assert.deepEqual(update, ACCOUNT_FIELDS);
  assert.equal(update.data.buffer, outer.buffer);
  assert.equal(update.data.byteOffset, 3 + 116);
  assert.equal(update.pubkey.byteOffset, 3 + 10);
  frame[116] = 0x42;
  assert.equal(update.data[0], 0x42);

  const tx = plainTransactionFrame();
  const decoded = decodeTransactionUpdate(tx);
  assert.equal(decoded.update.payload.buffer, tx.buffer);
  assert.equal(decoded.update.payload.byteOffset, 91);
  assert.equal(decoded.update.signature.byteOffset, 23);
});

test('routes frames by tag and peeks tag and sender timestamp', () => {
  const account = encodeAccountUpdate(ACCOUNT_FIELDS, { senderNanos: 11n });
  const transaction = encodeTransactionUpdate(TRANSACTION_FIELDS, { senderNanos: 22n });
  const slot = encodeSlotUpdate({ slot: 456n }, { senderNanos: 33n });

  const a = decodeFrame(account);
  assert.equal(a.tag, wire.TAG_ACCOUNT_UPDATE);
  if (a.tag === wire.TAG_ACCOUNT_UPDATE) assert.deepEqual(a.update, ACCOUNT_FIELDS);
  const t = decodeFrame(transaction);
  assert.equal(t.tag, wire.TAG_TRANSACTION_UPDATE);
  if (t.tag === wire.TAG_TRANSACTION_UPDATE) assert.deepEqual(t.update, TRANSACTION_FIELDS);
  const s = decodeFrame(slot);
  assert.deepEqual(s, { tag: wire.TAG_SLOT_UPDATE, update: { slot: 456n }, senderNanos: 33n });

  assert.deepEqual([peekTag(account), peekTag(transaction), peekTag(slot)], [2, 6, 7]);
  assert.deepEqual([peekSenderNanos(account), peekSenderNanos(transaction), peekSenderNanos(slot)], [11n, 22n, 33n]);
});

test('carries the sender timestamp: the one given, else the wall clock in nanoseconds', () => {
  for (const [frame, nanos] of [
    [encodeAccountUpdate(ACCOUNT_FIELDS, { senderNanos: 123_456_789n }), 123_456_789n],
    [encodeTransactionUpdate(TRANSACTION_FIELDS, { senderNanos: 987_654_321n }), 987_654_321n],
    [encodeSlotUpdate({ slot: 456n }, { senderNanos: 222_333_444n }), 222_333_444n],
    [encodeSlotUpdate({ slot: 1n }, { senderNanos: U64_MAX }), U64_MAX],
  ] as const) {
    assert.equal(decodeFrame(frame).senderNanos, nanos);
  }

  const before = BigInt(Date.now()) * 1_000_000n;
  const frames = [
    encodeAccountUpdate(ACCOUNT_FIELDS),
    encodeTransactionUpdate(TRANSACTION_FIELDS),
    encodeSlotUpdate({ slot: 1n }),
  ];
  const after = (BigInt(Date.now()) + 1n) * 1_000_000n;
  for (const frame of frames) {
    const nanos = decodeFrame(frame).senderNanos;
    assert.ok(nanos >= before && nanos < after, `senderNanos=${nanos} outside [${before}, ${after})`);
  }
});

test('unixNanosNow stays inside the current Date.now() millisecond and resolves below it', () => {
  let subMillisecond = 0;
  for (let i = 0; i < 2000; i++) {
    const lo = BigInt(Date.now()) * 1_000_000n;
    const now = wire.unixNanosNow();
    const hi = (BigInt(Date.now()) + 1n) * 1_000_000n;
    assert.ok(now >= lo && now < hi, `unixNanosNow()=${now} outside [${lo}, ${hi})`);
    if (now % 1_000_000n !== 0n) subMillisecond++;
  }
  assert.ok(subMillisecond > 0, 'every timestamp was a whole millisecond');
});

test('round-trips random updates of every kind (seeded)', () => {
  const seed = testSeed();
  const rnd = prng(seed);
  const u64 = () => (BigInt(Math.floor(rnd() * 2 ** 32)) << 32n) | BigInt(Math.floor(rnd() * 2 ** 32));
  const bytes = (n: number) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = Math.floor(rnd() * 256);
    return out;
  };
  for (let i = 0; i < 300; i++) {
    const senderNanos = u64();
    const kind = i % 3;
    const msg = `seed=${seed} iteration=${i}`;
    if (kind === 0) {
      const u: AccountUpdate = {
        pubkey: bytes(32),
        owner: bytes(32),
        lamports: u64(),
        executable: rnd() < 0.5,
        rentEpoch: u64(),
        slot: u64(),
        writeVersion: u64(),
        data: bytes(Math.floor(rnd() * 2000)),
      };
      const compress = rnd() < 0.3 ? rleCompress : undefined;
      const frame = encodeAccountUpdate(u, { senderNanos, compress });
      const decoded = decodeFrame(frame, { decompress: (w) => rleDecompress(w) });
      assert.deepEqual(decoded, { tag: 2, update: u, senderNanos, compressed: compress !== undefined }, msg);
    } else if (kind === 1) {
      const t = {
        slot: u64(),
        index: Math.floor(rnd() * 2 ** 32),
        signature: bytes(64),
        isVote: rnd() < 0.5,
        payload: bytes(Math.floor(rnd() * 2000)),
      };
      const frame = encodeTransactionUpdate(t, { senderNanos });
      assert.equal(frame.length, 91 + t.payload.length, msg);
      assert.deepEqual(decodeFrame(frame), { tag: 6, update: t, senderNanos }, msg);
    } else {
      const slot = u64();
      assert.deepEqual(
        decodeFrame(encodeSlotUpdate({ slot }, { senderNanos })),
        { tag: 7, update: { slot }, senderNanos },
        msg,
      );
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Rejections

test('refuses another wire version with found and expected (99 and 77)', () => {
  const frames = [plainAccountFrame(), plainTransactionFrame(), fromHex(GOLDEN_SLOT_HEX)];
  const decoders = [decodeAccountUpdate, decodeTransactionUpdate, decodeSlotUpdate];
  for (const bad of [99, 77]) {
    for (let k = 0; k < frames.length; k++) {
      const frame = frames[k].slice();
      frame[0] = bad;
      for (const decode of [decoders[k], decodeFrame]) {
        const err = throwsShm(
          () => decode(frame),
          ShmFrameError,
          ErrorCode.VERSION_MISMATCH,
          new RegExp(`found=${bad}, expected=9`),
        );
        assert.deepEqual(err.details, { found: bad, expected: 9 });
      }
      throwsShm(() => peekSenderNanos(frame), ShmFrameError, ErrorCode.VERSION_MISMATCH);
    }
  }
});

test('refuses a frame whose tag is not the one expected', () => {
  const account = plainAccountFrame();
  account[1] = 77;
  const err = throwsShm(() => decodeAccountUpdate(account), ShmFrameError, ErrorCode.CORRUPT, /found=77, expected=2/);
  assert.deepEqual(err.details, { found: 77, expected: 2 });
  throwsShm(() => decodeFrame(account), ShmFrameError, ErrorCode.CORRUPT, /found=77/);
  throwsShm(() => peekSenderNanos(account), ShmFrameError, ErrorCode.CORRUPT, /found=77/);

  // A transaction-sized body with the slot tag, and the other way round.
  throwsShm(
    () => decodeTransactionUpdate(encodeAccountUpdate(ACCOUNT_FIELDS)),
    ShmFrameError,
    ErrorCode.CORRUPT,
    /found=2, expected=6/,
  );
  throwsShm(() => decodeSlotUpdate(plainTransactionFrame()), ShmFrameError, ErrorCode.CORRUPT, /found=6, expected=7/);

  // Control messages travel on the socket, never in a data frame.
  for (const control of [1, 3, 4, 5]) {
    const frame = fromHex(GOLDEN_SLOT_HEX);
    frame[1] = control;
    throwsShm(() => decodeFrame(frame), ShmFrameError, ErrorCode.CORRUPT, /control message/);
  }
});

test('refuses every frame shorter than its fixed header as truncated', () => {
  const cases: Array<[Uint8Array, number, (f: Uint8Array) => unknown]> = [
    [plainAccountFrame(), 116, decodeAccountUpdate],
    [plainTransactionFrame(), 91, decodeTransactionUpdate],
    [fromHex(GOLDEN_SLOT_HEX), 18, decodeSlotUpdate],
  ];
  for (const [frame, header, decode] of cases) {
    for (let length = 0; length < header; length++) {
      const short = frame.subarray(0, length);
      throwsShm(() => decode(short), ShmFrameError, ErrorCode.TRUNCATED);
      throwsShm(() => decodeFrame(short), ShmFrameError, ErrorCode.TRUNCATED);
    }
  }
  throwsShm(() => peekTag(new Uint8Array([9])), ShmFrameError, ErrorCode.TRUNCATED);
  throwsShm(() => peekSenderNanos(new Uint8Array([9, 2, 0, 0])), ShmFrameError, ErrorCode.TRUNCATED);
});

test('refuses garbage', () => {
  throwsShm(() => decodeAccountUpdate(new Uint8Array([9, 9, 9])), ShmFrameError, ErrorCode.TRUNCATED);
  throwsShm(() => decodeFrame(new Uint8Array([1, 2, 3, 4, 5])), ShmFrameError, ErrorCode.TRUNCATED);
  throwsShm(() => decodeFrame(new Uint8Array(200).fill(0xff)), ShmFrameError, ErrorCode.CORRUPT);
  throwsShm(() => decodeFrame(new Uint8Array(0)), ShmFrameError, ErrorCode.TRUNCATED);
  throwsShm(() => decodeFrame([9, 7] as unknown as Uint8Array), ShmArgumentError, ErrorCode.INVALID_ARGUMENT);
  throwsShm(() => decodeSlotUpdate('090700' as unknown as Uint8Array), ShmArgumentError, ErrorCode.INVALID_ARGUMENT);
});

test('refuses a boolean byte other than 0 or 1', () => {
  for (const bad of [2, 0xff]) {
    throwsShm(
      () => decodeAccountUpdate(plainAccountFrame({ executable: bad })),
      ShmFrameError,
      ErrorCode.CORRUPT,
      new RegExp(`executable byte must be 0 or 1, found=${bad}`),
    );
    throwsShm(
      () => decodeTransactionUpdate(plainTransactionFrame({ isVote: bad })),
      ShmFrameError,
      ErrorCode.CORRUPT,
      new RegExp(`is_vote byte must be 0 or 1, found=${bad}`),
    );
  }
  const notVote = decodeTransactionUpdate(plainTransactionFrame({ isVote: 0 }));
  assert.equal(notVote.update.isVote, false);
});

test('refuses unknown flag bits', () => {
  for (const flags of [0x02, 0x03, 0x80, 0xfe]) {
    throwsShm(
      () => decodeAccountUpdate(plainAccountFrame({ flags }), { decompress: rleDecompress }),
      ShmFrameError,
      ErrorCode.CORRUPT,
      /unknown flag bits/,
    );
  }
});

test('refuses payloads over 10 MiB when encoding and when decoding', () => {
  const tooLarge = new Uint8Array(10 * MIB + 1);
  const e1 = throwsShm(
    () => encodeAccountUpdate({ ...ACCOUNT_FIELDS, data: tooLarge }),
    ShmFrameError,
    ErrorCode.TOO_LARGE,
    /found=10485761, max=10485760/,
  );
  assert.deepEqual(e1.details, { found: 10 * MIB + 1, max: 10 * MIB });
  throwsShm(
    () => encodeTransactionUpdate({ ...TRANSACTION_FIELDS, payload: tooLarge }),
    ShmFrameError,
    ErrorCode.TOO_LARGE,
  );

  // Exactly 10 MiB is allowed.
  const max = new Uint8Array(10 * MIB).fill(7);
  const frame = encodeAccountUpdate({ ...ACCOUNT_FIELDS, data: max });
  assert.equal(decodeAccountUpdate(frame).update.data.length, 10 * MIB);

  // Declared lengths are checked before the total, so no 10 MiB body is needed to trip them.
  throwsShm(
    () => decodeAccountUpdate(plainAccountFrame({ rawLength: 10 * MIB + 1, wire: new Uint8Array(0) })),
    ShmFrameError,
    ErrorCode.TOO_LARGE,
    /raw_len is too large: found=10485761, max=10485760/,
  );
  throwsShm(
    () => decodeTransactionUpdate(plainTransactionFrame({ payloadLength: 10 * MIB + 1 })),
    ShmFrameError,
    ErrorCode.TOO_LARGE,
    /payload_len is too large: found=10485761/,
  );
});

test('refuses a body whose length differs from what its header declares', () => {
  const account = plainAccountFrame();
  throwsShm(
    () => decodeAccountUpdate(account.subarray(0, account.length - 1)),
    ShmFrameError,
    ErrorCode.TRUNCATED,
    /found=120, expected=121/,
  );
  const longer = new Uint8Array(account.length + 1);
  longer.set(account);
  throwsShm(() => decodeAccountUpdate(longer), ShmFrameError, ErrorCode.CORRUPT, /found=122, expected=121/);

  const tx = plainTransactionFrame();
  throwsShm(() => decodeTransactionUpdate(tx.subarray(0, tx.length - 1)), ShmFrameError, ErrorCode.TRUNCATED);
  throwsShm(
    () => decodeTransactionUpdate(plainTransactionFrame({ payloadLength: 299 })),
    ShmFrameError,
    ErrorCode.CORRUPT,
  );

  const slot = new Uint8Array(19);
  slot.set(fromHex(GOLDEN_SLOT_HEX));
  throwsShm(() => decodeSlotUpdate(slot), ShmFrameError, ErrorCode.CORRUPT, /found=19, expected=18/);
});

test('refuses an uncompressed account whose wire_len differs from raw_len', () => {
  const frame = plainAccountFrame({ rawLength: 6 });
  throwsShm(() => decodeAccountUpdate(frame), ShmFrameError, ErrorCode.CORRUPT, /wire_len=5 differs from raw_len=6/);
});

test('decodes a compressed account only through the decompress callback, to exactly raw_len bytes', () => {
  const data = new Uint8Array(1000).fill(0x5c);
  const block = rleCompress(data);
  const frame = plainAccountFrame({ flags: 1, rawLength: data.length, wire: block });
  assert.notEqual(block.length, data.length);

  const decoded = decodeAccountUpdate(frame, { decompress: rleDecompress });
  assert.equal(hex(decoded.update.data), hex(data));

  // No codec given: a typed error, not a wrong payload.
  throwsShm(() => decodeAccountUpdate(frame), ShmArgumentError, ErrorCode.INVALID_ARGUMENT, /decompress/);
  throwsShm(() => decodeFrame(frame), ShmArgumentError, ErrorCode.INVALID_ARGUMENT, /decompress/);

  // raw_len corrupted to one more than the block inflates to (the reference's test).
  const corrupted = frame.slice();
  new DataView(corrupted.buffer).setUint32(108, data.length + 1, true);
  throwsShm(
    () => decodeAccountUpdate(corrupted, { decompress: rleDecompress }),
    ShmFrameError,
    ErrorCode.CORRUPT,
    /decompressed length found=1000, expected raw_len=1001/,
  );

  // A codec failure is a corrupt frame, with the codec's error kept as cause.
  const codecError = new Error('bad lz4 block');
  const err = throwsShm(
    () =>
      decodeAccountUpdate(frame, {
        decompress: () => {
          throw codecError;
        },
      }),
    ShmFrameError,
    ErrorCode.CORRUPT,
    /bad lz4 block/,
  );
  assert.equal(err.cause, codecError);
  throwsShm(
    () => decodeAccountUpdate(frame, { decompress: () => 'nope' as unknown as Uint8Array }),
    ShmFrameError,
    ErrorCode.CORRUPT,
  );
});

test('refuses bad fields when encoding, naming them', () => {
  const cases: Array<[() => unknown, RegExp]> = [
    [() => encodeAccountUpdate({ ...ACCOUNT_FIELDS, pubkey: new Uint8Array(31) }), /pubkey: .*32 bytes, got 31/],
    [() => encodeAccountUpdate({ ...ACCOUNT_FIELDS, owner: 'not base58!' }), /owner: /],
    [() => encodeAccountUpdate({ ...ACCOUNT_FIELDS, lamports: -1 }), /lamports must be a u64/],
    [() => encodeAccountUpdate({ ...ACCOUNT_FIELDS, lamports: 2 ** 53 }), /lamports must be a u64/],
    [() => encodeAccountUpdate({ ...ACCOUNT_FIELDS, slot: 1.5 }), /slot must be a u64/],
    [() => encodeAccountUpdate({ ...ACCOUNT_FIELDS, rentEpoch: U64_MAX + 1n }), /rentEpoch must be a u64/],
    [() => encodeAccountUpdate({ ...ACCOUNT_FIELDS, writeVersion: -1n }), /writeVersion must be a u64/],
    [
      () => encodeAccountUpdate({ ...ACCOUNT_FIELDS, executable: 1 as unknown as boolean }),
      /executable must be a boolean/,
    ],
    [
      () => encodeAccountUpdate({ ...ACCOUNT_FIELDS, data: [1] as unknown as Uint8Array }),
      /account data must be a Uint8Array/,
    ],
    [() => encodeAccountUpdate(ACCOUNT_FIELDS, { senderNanos: -5n }), /senderNanos must be a u64/],
    [
      () => encodeAccountUpdate(ACCOUNT_FIELDS, { compress: () => [1] as unknown as Uint8Array }),
      /compress must return/,
    ],
    [() => encodeTransactionUpdate({ ...TRANSACTION_FIELDS, index: -1 }), /index must be an integer/],
    [() => encodeTransactionUpdate({ ...TRANSACTION_FIELDS, index: 2 ** 32 }), /index must be an integer/],
    [
      () => encodeTransactionUpdate({ ...TRANSACTION_FIELDS, signature: new Uint8Array(63) }),
      /signature must be 64 bytes/,
    ],
    [() => encodeTransactionUpdate({ ...TRANSACTION_FIELDS, signature: TOKEN_PROGRAM }), /got 32 bytes/],
    [
      () => encodeTransactionUpdate({ ...TRANSACTION_FIELDS, isVote: 'no' as unknown as boolean }),
      /isVote must be a boolean/,
    ],
    [() => encodeSlotUpdate({ slot: 'x' as unknown as bigint }), /slot must be a u64/],
    [() => encodeSlotUpdate(null as unknown as { slot: bigint }), /slot update must be an object/],
  ];
  for (const [fn, message] of cases) throwsShm(fn, ShmArgumentError, ErrorCode.INVALID_ARGUMENT, message);
});

// ---------------------------------------------------------------------------------------------
// Fuzz

test('throws nothing but ShmError on random and mutated bytes (seeded)', () => {
  const seed = testSeed();
  const rnd = prng(seed);
  const int = (n: number) => Math.floor(rnd() * n);
  const valid = [
    encodeAccountUpdate(ACCOUNT_FIELDS, { senderNanos: 1n }),
    encodeAccountUpdate({ ...ACCOUNT_FIELDS, data: new Uint8Array(600).fill(1) }, { compress: rleCompress }),
    encodeTransactionUpdate(TRANSACTION_FIELDS, { senderNanos: 2n }),
    encodeSlotUpdate({ slot: 3n }, { senderNanos: 3n }),
  ];
  const decompressors: Array<((w: Uint8Array, n: number) => Uint8Array) | undefined> = [
    undefined,
    rleDecompress,
    (_w, n) => new Uint8Array(n),
    (_w, n) => new Uint8Array(int(n + 2)),
    () => {
      throw new RangeError('codec');
    },
    () => ({}) as Uint8Array,
  ];
  const decoders = [decodeFrame, decodeAccountUpdate, decodeTransactionUpdate, decodeSlotUpdate, peekSenderNanos];
  let decodedCount = 0;
  let rejected = 0;
  for (let i = 0; i < 20_000; i++) {
    let frame: Uint8Array;
    const mode = i % 3;
    if (mode === 0) {
      frame = new Uint8Array(int(200));
      for (let k = 0; k < frame.length; k++) frame[k] = int(256);
    } else if (mode === 1) {
      // Plausible prefix, random rest, and often a total that matches the declared length.
      const tag = [2, 6, 7][int(3)];
      const header = tag === 2 ? 116 : tag === 6 ? 91 : 18;
      const extra = int(40);
      frame = new Uint8Array(header + extra - (rnd() < 0.1 ? int(header + 1) : 0));
      for (let k = 0; k < frame.length; k++) frame[k] = rnd() < 0.7 ? int(2) : int(256);
      frame[0] = 9;
      if (frame.length > 1) frame[1] = tag;
      if (rnd() < 0.7 && frame.length >= header) {
        const dv = new DataView(frame.buffer);
        if (tag === 2) {
          dv.setUint32(112, extra, true);
          dv.setUint32(108, rnd() < 0.5 ? extra : int(2 ** 32), true);
        } else if (tag === 6) dv.setUint32(87, extra, true);
      }
    } else {
      frame = valid[int(valid.length)].slice();
      for (let flips = 1 + int(3); flips > 0; flips--) frame[int(frame.length)] = int(256);
    }
    const decode = decoders[int(decoders.length)];
    const decompress = decompressors[int(decompressors.length)];
    try {
      (decode as (f: Uint8Array, o?: wire.DecodeOptions) => unknown)(frame, { decompress });
      decodedCount++;
    } catch (err) {
      if (!(err instanceof ShmError)) {
        assert.fail(`seed=${seed} iteration=${i}: ${decode.name}(${hex(frame)}) threw ${String(err)}`);
      }
      rejected++;
    }
  }
  // Both outcomes occur, so the loop exercised the accepting paths as well as the checks.
  assert.ok(decodedCount > 100, `seed=${seed}: only ${decodedCount} frames decoded`);
  assert.ok(rejected > 100, `seed=${seed}: only ${rejected} frames rejected`);
});

// ---------------------------------------------------------------------------------------------
// Base58

/** Base58 by repeated BigInt division: slow, obviously right, independent of the module's loop. */
function referenceBase58(bytes: Uint8Array): string {
  const alphabet = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  let out = '';
  while (n > 0n) {
    out = alphabet[Number(n % 58n)] + out;
    n /= 58n;
  }
  let zeros = 0;
  while (zeros < bytes.length && bytes[zeros] === 0) zeros++;
  return '1'.repeat(zeros) + out;
}

test('base58 matches the Bitcoin test vectors', () => {
  const vectors: Array<[string, string]> = [
    ['', ''],
    ['61', '2g'],
    ['626262', 'a3gV'],
    ['636363', 'aPEr'],
    ['73696d706c792061206c6f6e6720737472696e67', '2cFupjhnEsSn59qHXstmK2ffpLv2'],
    ['00eb15231dfceb60925886b67d065299925915aeb172c06647', '1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L'],
    ['516b6fcd0f', 'ABnLTmg'],
    ['bf4f89001e670274dd', '3SEo3LWLoPntC'],
    ['572e4794', '3EFU7m'],
    ['ecac89cad93923c02321', 'EJDM8drfXA6uyA'],
    ['10c8511e', 'Rt5zm'],
    ['00000000000000000000', '1111111111'],
  ];
  for (const [h, text] of vectors) {
    assert.equal(encodeBase58(fromHex(h)), text, h);
    assert.equal(hex(decodeBase58(text)), h, text);
  }
});

test('base58 keeps leading zero bytes as leading ones', () => {
  assert.equal(encodeBase58(new Uint8Array([0])), '1');
  assert.equal(encodeBase58(new Uint8Array([0, 0, 1])), '112');
  assert.deepEqual(decodeBase58('112'), new Uint8Array([0, 0, 1]));
  assert.deepEqual(decodeBase58('1'), new Uint8Array([0]));
  assert.deepEqual(decodeBase58(''), new Uint8Array(0));
});

test('converts Solana pubkeys: the system program, the token program, wrapped SOL', () => {
  const system = '11111111111111111111111111111111';
  assert.equal(pubkeyToString(new Uint8Array(32)), system);
  assert.deepEqual(toPubkey(system), new Uint8Array(32));

  assert.equal(hex(toPubkey(TOKEN_PROGRAM)), TOKEN_PROGRAM_HEX);
  assert.equal(pubkeyToString(fromHex(TOKEN_PROGRAM_HEX)), TOKEN_PROGRAM);

  const wsol = 'So11111111111111111111111111111111111111112';
  assert.equal(hex(toPubkey(wsol)), '069b8857feab8184fb687f634618c035dac439dc1aeb3b5598a0f00000000001');
  assert.equal(pubkeyToString(toPubkey(wsol)), wsol);

  assert.equal(pubkeyToString(new Uint8Array(32).fill(0xff)), 'JEKNVnkbo3jma5nREBBJCDoXFVeKkD56V3xKrvRmWxFG');
  const bytes = pattern(32, 9);
  assert.equal(toPubkey(bytes), bytes, 'a 32-byte array is returned as is');
});

test('base58 round-trips random bytes with random leading zeros (seeded)', () => {
  const seed = testSeed();
  const rnd = prng(seed);
  for (let i = 0; i < 500; i++) {
    const bytes = new Uint8Array(Math.floor(rnd() * 80));
    const zeros = Math.floor(rnd() * 4);
    for (let k = zeros; k < bytes.length; k++) bytes[k] = Math.floor(rnd() * 256);
    const text = encodeBase58(bytes);
    assert.equal(text, referenceBase58(bytes), `seed=${seed} bytes=${hex(bytes)}`);
    assert.deepEqual(decodeBase58(text), bytes, `seed=${seed} text=${text}`);
  }
});

test('base58 and pubkeys refuse bad input with SHM_ERR_INVALID_ARGUMENT', () => {
  for (const [text, position] of [
    ['0', 0],
    ['1O', 1],
    ['abI', 2],
    ['l', 0],
    ['ab c', 2],
    ['é', 0],
    ['2g\n', 2],
  ] as const) {
    const err = throwsShm(
      () => decodeBase58(text),
      ShmArgumentError,
      ErrorCode.INVALID_ARGUMENT,
      new RegExp(`at position ${position}`),
    );
    assert.deepEqual(err.details, { position });
  }
  const bad: Array<[unknown, RegExp]> = [
    [new Uint8Array(31), /exactly 32 bytes, got 31/],
    [new Uint8Array(33), /exactly 32 bytes, got 33/],
    ['2g', /decodes to 1 bytes, expected 32/],
    ['z'.repeat(44), /decodes to 33 bytes, expected 32/],
    ['1'.repeat(45), /1\.\.44 characters, got 45/],
    ['', /1\.\.44 characters, got 0/],
    ['TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ50A', /invalid base58 character "0"/],
    [42, /base58 string or a 32-byte Uint8Array, got number/],
    [null, /got null/],
    [[...new Uint8Array(32)], /got Array/],
  ];
  for (const [input, message] of bad) {
    throwsShm(() => toPubkey(input as string), ShmArgumentError, ErrorCode.INVALID_ARGUMENT, message);
  }
  throwsShm(() => pubkeyToString(new Uint8Array(64)), ShmArgumentError, ErrorCode.INVALID_ARGUMENT, /got 64/);
  throwsShm(() => pubkeyToString(TOKEN_PROGRAM as unknown as Uint8Array), ShmArgumentError, ErrorCode.INVALID_ARGUMENT);
  throwsShm(() => encodeBase58('00' as unknown as Uint8Array), ShmArgumentError, ErrorCode.INVALID_ARGUMENT);
  throwsShm(() => decodeBase58(5 as unknown as string), ShmArgumentError, ErrorCode.INVALID_ARGUMENT);
});
