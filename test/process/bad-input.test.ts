/**
 * Bad input at the public boundary and in the segment file: malformed, truncated and
 * corrupted files under /dev/shm, corrupt records met while receiving, bad names and
 * options, oversized frames and a full filesystem. Every case asserts the typed error
 * (class and code) and that the message carries the offending value; the test process
 * itself must survive each one (no crash, no SIGBUS).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  Channel,
  type ChannelCreateOptions,
  type ChannelReceiver,
  type ChannelSender,
  ErrorCode,
  type ErrorCodeValue,
  Session,
  ShmArgumentError,
  type ShmError,
  ShmFrameError,
  ShmSegmentError,
  ShmSystemError,
} from '../../src/index.js';
import {
  CAPACITY_OFFSET,
  CLASS_COUNT_OFFSET,
  channelGeometry,
  DATA_INDEX_OFFSET,
  HEAD_POSITION_OFFSET,
  largestPayload,
  MAX_FRAME_OFFSET,
  PARAMS_LENGTH,
  RECORD_LENGTH_OFFSET,
  RECORD_TYPE_OFFSET,
  RING_LENGTH_OFFSET,
  recordLength,
  TAIL_POSITION_OFFSET,
  TYPE_DATA,
  TYPE_PADDING,
} from '../../src/layout/channel.js';
import {
  HEADER_LENGTH,
  HEADER_LENGTH_OFFSET,
  KIND_OFFSET,
  LAYOUT_VERSION,
  MAGIC,
  MAGIC_LENGTH,
  MAGIC_OFFSET,
  PARAMS_LENGTH_OFFSET,
  PARAMS_MAX_LENGTH,
  SEGMENT_LENGTH_OFFSET,
  VERSION_OFFSET,
} from '../../src/layout/segment.js';
import { pageSize } from '../../src/segment/segment.js';
import { leftovers, uniqueName } from '../helpers/children.js';
import {
  abandonedChannel,
  patchBytes,
  patchI32,
  patchU32,
  patchU64,
  readU32,
  truncateFile,
} from '../helpers/corrupt.js';

// ---------------------------------------------------------------------------------------
// Cleanup: every name and end a test makes is removed / closed after it, pass or fail.
// ---------------------------------------------------------------------------------------

const names: string[] = [];
const ends: Array<ChannelSender | ChannelReceiver> = [];

function name(prefix: string): string {
  const n = uniqueName(prefix);
  names.push(n);
  return n;
}

function keep<T extends ChannelSender | ChannelReceiver>(end: T): T {
  ends.push(end);
  return end;
}

afterEach(() => {
  for (const end of ends.splice(0)) end.close();
  for (const n of names.splice(0)) Channel.remove(n);
});

// ---------------------------------------------------------------------------------------
// Assertions on typed errors.
// ---------------------------------------------------------------------------------------

type ErrorClass = abstract new (...args: never[]) => ShmError;
/** A substring the message must contain (numbers are matched as their decimal text), or a pattern. */
type Part = string | number | RegExp;

function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.constructor.name} ${(err as { code?: unknown }).code ?? ''}: ${err.message}`;
  return String(err);
}

function checkShmError(err: unknown, cls: ErrorClass, code: ErrorCodeValue, parts: Part[]): true {
  assert.ok(err instanceof cls, `expected a ${cls.name} (${code}), got ${describeError(err)}`);
  assert.equal((err as ShmError).code, code, `wrong code; message: ${(err as Error).message}`);
  const message = (err as Error).message;
  for (const part of parts) {
    if (part instanceof RegExp) assert.match(message, part);
    else assert.ok(message.includes(String(part)), `message should name ${JSON.stringify(String(part))}: ${message}`);
  }
  return true;
}

function throwsShm(fn: () => unknown, cls: ErrorClass, code: ErrorCodeValue, parts: Part[] = []): void {
  assert.throws(fn, (err: unknown) => checkShmError(err, cls, code, parts));
}

async function rejectsShm(
  fn: () => Promise<unknown>,
  cls: ErrorClass,
  code: ErrorCodeValue,
  parts: Part[] = [],
): Promise<void> {
  await assert.rejects(fn, (err: unknown) => checkShmError(err, cls, code, parts));
}

/** A 1 KiB single-ring channel: ring 1024 B at the first data index, maxFrame 504. */
const SMALL: ChannelCreateOptions = { capacity: 1024 };

// ---------------------------------------------------------------------------------------

describe('opening a file that is not a valid segment', () => {
  test('refuses a file shorter than the 128-byte header as truncated', () => {
    const n = name('short');
    const bytes = new Uint8Array(HEADER_LENGTH - 8);
    bytes.set(MAGIC, MAGIC_OFFSET);
    writeFileSync(Channel.pathOf(n), bytes, { mode: 0o600 });
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.TRUNCATED, [
      `${HEADER_LENGTH - 8} bytes`,
      HEADER_LENGTH,
    ]);
  });

  test('refuses an empty file as truncated', () => {
    const n = name('empty');
    writeFileSync(Channel.pathOf(n), new Uint8Array(0), { mode: 0o600 });
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.TRUNCATED, ['0 bytes', HEADER_LENGTH]);
  });

  test('refuses a channel file whose magic was overwritten as corrupt', () => {
    const n = name('magic');
    abandonedChannel(n, SMALL);
    patchBytes(Channel.pathOf(n), MAGIC_OFFSET, new TextEncoder().encode('NOTSHMBU'));
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, [/magic/i, n]);
  });

  test('refuses a file of zeros and a text file as corrupt (bad magic)', () => {
    for (const content of [new Uint8Array(4096), new TextEncoder().encode('hello, world\n'.repeat(40))]) {
      const n = name('foreign');
      writeFileSync(Channel.pathOf(n), content, { mode: 0o600 });
      throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, [/magic/i]);
    }
  });

  test('refuses a segment whose magic differs only in its last byte', () => {
    const n = name('magic-last');
    abandonedChannel(n, SMALL);
    patchBytes(Channel.pathOf(n), MAGIC_OFFSET + MAGIC_LENGTH - 1, Uint8Array.of(1));
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, [/magic/i]);
  });

  test('reports version 0 as still initialising after readyTimeoutMs', () => {
    const n = name('version0');
    abandonedChannel(n, SMALL);
    patchU32(Channel.pathOf(n), VERSION_OFFSET, 0);
    const started = Date.now();
    throwsShm(() => Channel.open(n, { readyTimeoutMs: 50 }), ShmSegmentError, ErrorCode.NOT_READY, [
      '50 ms',
      /initialising/,
    ]);
    const waited = Date.now() - started;
    assert.ok(waited >= 50, `gave up after ${waited} ms, before readyTimeoutMs=50`);
  });

  test('refuses a newer layout version and names both versions', () => {
    const n = name('version2');
    abandonedChannel(n, SMALL);
    patchU32(Channel.pathOf(n), VERSION_OFFSET, LAYOUT_VERSION + 1);
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.VERSION_MISMATCH, [
      `version ${LAYOUT_VERSION + 1}`,
      `version ${LAYOUT_VERSION}`,
    ]);
  });

  test('refuses a segment of kind 99 and names the kind', () => {
    const n = name('kind99');
    abandonedChannel(n, SMALL);
    patchU32(Channel.pathOf(n), KIND_OFFSET, 99);
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.KIND_MISMATCH, ['99', 'channel']);
  });

  test('refuses a segment of kind 0 and names the kind', () => {
    const n = name('kind0');
    abandonedChannel(n, SMALL);
    patchU32(Channel.pathOf(n), KIND_OFFSET, 0);
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.KIND_MISMATCH, ['0']);
  });

  test('refuses nonsense headerLength values as corrupt and names the value', () => {
    const fileLength = channelGeometry(1024, null, undefined, pageSize()).segmentLength;
    for (const headerLength of [0, HEADER_LENGTH - 8, HEADER_LENGTH + 4, fileLength + 8, 0xffffffff]) {
      const n = name('hdrlen');
      abandonedChannel(n, SMALL);
      patchU32(Channel.pathOf(n), HEADER_LENGTH_OFFSET, headerLength);
      throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, [`headerLength=${headerLength}`]);
    }
  });

  test('refuses a paramsLength above the parameter area as corrupt and names the value', () => {
    for (const paramsLength of [PARAMS_MAX_LENGTH + 1, 0xffffffff]) {
      const n = name('paramslen');
      abandonedChannel(n, SMALL);
      patchU32(Channel.pathOf(n), PARAMS_LENGTH_OFFSET, paramsLength);
      throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, [`paramsLength=${paramsLength}`]);
    }
  });

  test('refuses a channel whose paramsLength is too short to hold the channel parameters', () => {
    for (const paramsLength of [0, PARAMS_LENGTH - 4]) {
      const n = name('paramsshort');
      abandonedChannel(n, SMALL);
      patchU32(Channel.pathOf(n), PARAMS_LENGTH_OFFSET, paramsLength);
      throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, [`paramsLength=${paramsLength}`]);
    }
  });

  test('refuses a segmentLength below the header length as corrupt and names the value', () => {
    for (const segmentLength of [0, HEADER_LENGTH - 8]) {
      const n = name('seglen-small');
      abandonedChannel(n, SMALL);
      patchU64(Channel.pathOf(n), SEGMENT_LENGTH_OFFSET, segmentLength);
      throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, [`segmentLength=${segmentLength}`]);
    }
  });

  test('refuses a header whose segmentLength is larger than the file as truncated, naming both sizes', () => {
    for (const extra of [8, 2 ** 40]) {
      const n = name('seglen-big');
      const g = abandonedChannel(n, SMALL);
      patchU64(Channel.pathOf(n), SEGMENT_LENGTH_OFFSET, g.segmentLength + extra);
      throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.TRUNCATED, [
        `${g.segmentLength + extra} bytes`,
        `${g.segmentLength}`,
      ]);
    }
  });

  test('refuses a header whose segmentLength ends before the channel rings', () => {
    const n = name('seglen-short');
    const g = abandonedChannel(n, SMALL);
    const segmentLength = g.dataIndices[0] + 8;
    patchU64(Channel.pathOf(n), SEGMENT_LENGTH_OFFSET, segmentLength);
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, [`${segmentLength}`]);
  });

  test('refuses a channel file truncated after creation, naming the sizes', () => {
    const capacity = 64 << 10;
    const full = channelGeometry(capacity, null, undefined, pageSize()).segmentLength;
    for (const length of [4096, full - 8, HEADER_LENGTH]) {
      const n = name('truncated');
      const g = abandonedChannel(n, { capacity });
      assert.equal(g.segmentLength, full);
      truncateFile(Channel.pathOf(n), length);
      assert.throws(
        () => Channel.open(n),
        (err: unknown) => {
          assert.ok(err instanceof ShmSegmentError, `expected a ShmSegmentError, got ${describeError(err)}`);
          assert.ok(
            err.code === ErrorCode.TRUNCATED || err.code === ErrorCode.CORRUPT,
            `expected TRUNCATED or CORRUPT, got ${err.code}: ${err.message}`,
          );
          assert.ok(
            err.message.includes(String(length)),
            `message should name the file size ${length}: ${err.message}`,
          );
          assert.ok(
            err.message.includes(String(full)),
            `message should name the expected size ${full}: ${err.message}`,
          );
          return true;
        },
      );
    }
  });

  test('refuses a channel file truncated below its header as truncated', () => {
    const n = name('truncated-header');
    abandonedChannel(n, SMALL);
    truncateFile(Channel.pathOf(n), HEADER_LENGTH - 1);
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.TRUNCATED, [`${HEADER_LENGTH - 1} bytes`]);
  });
});

describe('opening a channel with corrupt parameters', () => {
  const cases: Array<{ what: string; offset: number; value: number; parts: Part[] }> = [
    { what: 'a capacity that is not a power of two', offset: CAPACITY_OFFSET, value: 1536, parts: ['capacity=1536'] },
    { what: 'a capacity of 0', offset: CAPACITY_OFFSET, value: 0, parts: ['capacity=0'] },
    { what: 'a capacity of 2**31', offset: CAPACITY_OFFSET, value: 2 ** 31, parts: [`capacity=${2 ** 31}`] },
    { what: 'classCount 2', offset: CLASS_COUNT_OFFSET, value: 2, parts: ['classCount=2'] },
    { what: 'classCount 0', offset: CLASS_COUNT_OFFSET, value: 0, parts: ['classCount=0'] },
    { what: 'classCount 0xffffffff', offset: CLASS_COUNT_OFFSET, value: 0xffffffff, parts: ['classCount=4294967295'] },
    {
      what: 'a ring length that is not a multiple of 8',
      offset: RING_LENGTH_OFFSET,
      value: 1020,
      parts: ['ringLength[0]=1020'],
    },
    { what: 'a ring length of 0', offset: RING_LENGTH_OFFSET, value: 0, parts: ['ringLength[0]=0'] },
    { what: 'a ring longer than the capacity', offset: RING_LENGTH_OFFSET, value: 2048, parts: ['2048'] },
    { what: 'maxFrame 0', offset: MAX_FRAME_OFFSET, value: 0, parts: ['maxFrame=0'] },
    {
      what: 'a maxFrame one byte above the largest payload',
      offset: MAX_FRAME_OFFSET,
      value: largestPayload(1024) + 1,
      parts: [`maxFrame=${largestPayload(1024) + 1}`],
    },
    { what: 'a maxFrame larger than the ring', offset: MAX_FRAME_OFFSET, value: 4096, parts: ['maxFrame=4096'] },
    { what: 'a misplaced data offset', offset: DATA_INDEX_OFFSET, value: 8, parts: ['dataOffset[0]=8'] },
    {
      what: 'a data offset past the end of the file',
      offset: DATA_INDEX_OFFSET,
      value: 0x7fffff80,
      parts: [`dataOffset[0]=${0x7fffff80}`],
    },
  ];
  for (const c of cases) {
    test(`refuses ${c.what} as corrupt and names the field`, () => {
      const n = name('params');
      abandonedChannel(n, SMALL);
      patchU32(Channel.pathOf(n), c.offset, c.value);
      throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, [n, ...c.parts]);
    });
  }

  test('leaves the channel openable once the parameters are repaired (the failed open released everything)', () => {
    const n = name('params-repair');
    const g = abandonedChannel(n, SMALL);
    patchU32(Channel.pathOf(n), MAX_FRAME_OFFSET, 0);
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, ['maxFrame=0']);
    patchU32(Channel.pathOf(n), MAX_FRAME_OFFSET, g.maxFrame);
    const sut = keep(Channel.open(n));
    assert.equal(sut.geometry.maxFrame, g.maxFrame);
    assert.equal(sut.tryRecv(), null);
    assert.equal(sut.isEnded, true);
  });
});

describe('opening a channel with corrupt positions', () => {
  const ring = 1024;
  const cases: Array<{ what: string; head: number; tail: number; parts: Part[] }> = [
    { what: 'a head position at 2 * ringLength', head: 2 * ring, tail: 0, parts: [`headPosition=${2 * ring}`] },
    { what: 'a negative head position', head: -8, tail: 0, parts: [`headPosition=${2 ** 32 - 8}`] },
    { what: 'a tail position at 2 * ringLength', head: 0, tail: 2 * ring, parts: [`tailPosition=${2 * ring}`] },
    { what: 'a tail position far outside the ring', head: 0, tail: 1 << 28, parts: [`tailPosition=${1 << 28}`] },
  ];
  for (const c of cases) {
    test(`refuses ${c.what} as corrupt`, () => {
      const n = name('positions');
      abandonedChannel(n, SMALL);
      patchI32(Channel.pathOf(n), HEAD_POSITION_OFFSET, c.head);
      patchI32(Channel.pathOf(n), TAIL_POSITION_OFFSET, c.tail);
      throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, [n, 'ring 0', ...c.parts]);
    });
  }

  test('refuses an out-of-range head in the third ring of a channel with priorities and names the ring', () => {
    const n = name('positions-prio');
    const g = abandonedChannel(n, { capacity: 4096, priorities: true });
    const low = 2;
    patchI32(Channel.pathOf(n), HEAD_POSITION_OFFSET + 4 * low, 2 * g.ringLengths[low]);
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, [
      `ring ${low}`,
      `headPosition=${2 * g.ringLengths[low]}`,
    ]);
  });

  test('a consumer re-opening after frames were read resumes at the published head', () => {
    const n = name('reopen');
    const tx = keep(Channel.create(n, SMALL));
    const first = keep(Channel.open(n));
    assert.equal(tx.trySend(Uint8Array.of(1)), true);
    assert.deepEqual(Array.from(first.tryRecv() ?? []), [1]);
    assert.equal(first.tryRecv(), null);
    first.close();
    const path = Channel.pathOf(n);
    assert.equal(
      readU32(path, HEAD_POSITION_OFFSET),
      readU32(path, TAIL_POSITION_OFFSET),
      'the tail is the commit point',
    );
    const sut = keep(Channel.open(n));
    assert.equal(tx.trySend(Uint8Array.of(2)), true);
    assert.deepEqual(Array.from(sut.tryRecv() ?? []), [2]);
  });

  test('refuses a published head ahead of the published tail (the tail then reads as more than a ring ahead)', () => {
    const n = name('head-ahead');
    abandonedChannel(n, SMALL);
    patchI32(Channel.pathOf(n), HEAD_POSITION_OFFSET, 64);
    patchI32(Channel.pathOf(n), TAIL_POSITION_OFFSET, 0);
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, ['more than a ring ahead']);
  });

  test('refuses a head position that is not on a record boundary (not a multiple of 8)', () => {
    const n = name('positions-misaligned');
    abandonedChannel(n, SMALL);
    patchI32(Channel.pathOf(n), HEAD_POSITION_OFFSET, 4);
    patchI32(Channel.pathOf(n), TAIL_POSITION_OFFSET, 4);
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.CORRUPT, ['headPosition=4']);
  });
});

describe('receiving a corrupt record', () => {
  /** A live producer and consumer of a 1 KiB channel with `frames` 3-byte frames sent. */
  function liveChannel(prefix: string, frames = 1) {
    const n = name(prefix);
    const tx = keep(Channel.create(n, SMALL));
    const sut = keep(Channel.open(n));
    for (let i = 0; i < frames; i++) assert.equal(tx.trySend(Uint8Array.of(1, 2, i)), true);
    return { n, tx, sut, path: Channel.pathOf(n), g: tx.geometry };
  }

  test('refuses a committed record whose length runs past the end of the ring, and can still close', () => {
    const { sut, path, g } = liveChannel('record-long', 2);
    // The second record starts one record into the ring; make it end 8 bytes past the ring.
    const offset = recordLength(3);
    const bad = g.ringLengths[0] - offset + 8;
    assert.deepEqual(Array.from(sut.tryRecv() ?? []), [1, 2, 0]);
    patchI32(path, g.dataIndices[0] + offset + RECORD_LENGTH_OFFSET, bad);
    throwsShm(() => sut.tryRecv(), ShmSegmentError, ErrorCode.CORRUPT, [`record length ${bad}`, `offset ${offset}`]);
    assert.doesNotThrow(() => sut.close());
    assert.equal(sut.closed, true);
  });

  test('refuses the first committed record when its length runs past the end of the ring', () => {
    const { sut, path, g } = liveChannel('record-long-first');
    const bad = g.ringLengths[0] + 8;
    patchI32(path, g.dataIndices[0] + RECORD_LENGTH_OFFSET, bad);
    throwsShm(() => sut.tryRecv(), ShmSegmentError, ErrorCode.CORRUPT, [`record length ${bad}`, 'offset 0']);
    assert.doesNotThrow(() => sut.close());
  });

  test('refuses a committed record with an unknown type, and can still close', () => {
    const { sut, path, g } = liveChannel('record-type');
    patchU32(path, g.dataIndices[0] + RECORD_TYPE_OFFSET, 99);
    throwsShm(() => sut.tryRecv(), ShmSegmentError, ErrorCode.CORRUPT, ['record type 99']);
    assert.doesNotThrow(() => sut.close());
  });

  test('refuses a committed record shorter than its own header', () => {
    const { sut, path, g } = liveChannel('record-short');
    patchI32(path, g.dataIndices[0] + RECORD_LENGTH_OFFSET, 4);
    throwsShm(() => sut.tryRecv(), ShmSegmentError, ErrorCode.CORRUPT, ['record length 4']);
    assert.doesNotThrow(() => sut.close());
  });

  test('refuses a padding record that runs past the end of the ring', () => {
    const { sut, path, g } = liveChannel('record-padding');
    const bad = g.ringLengths[0] + 8;
    patchU32(path, g.dataIndices[0] + RECORD_TYPE_OFFSET, TYPE_PADDING);
    patchI32(path, g.dataIndices[0] + RECORD_LENGTH_OFFSET, bad);
    throwsShm(() => sut.tryRecv(), ShmSegmentError, ErrorCode.CORRUPT, [`record length ${bad}`]);
    assert.doesNotThrow(() => sut.close());
  });

  for (const bad of [0x7fffffff, 0x7ffffff9]) {
    test(`refuses a committed record length of ${bad} (2**31 - ${2 ** 31 - bad}) without overflowing`, () => {
      const { sut, path, g } = liveChannel('record-huge');
      patchI32(path, g.dataIndices[0] + RECORD_LENGTH_OFFSET, bad);
      let frame: Uint8Array | null = null;
      throwsShm(
        () => {
          frame = sut.tryRecv();
        },
        ShmSegmentError,
        ErrorCode.CORRUPT,
        [`record length ${bad}`],
      );
      assert.equal(frame, null);
      assert.doesNotThrow(() => sut.close());
    });
  }

  test('keeps refusing the same corrupt record on every receive call', async () => {
    const { sut, path, g } = liveChannel('record-every');
    patchU32(path, g.dataIndices[0] + RECORD_TYPE_OFFSET, 99);
    const parts = ['record type 99'];
    throwsShm(() => sut.tryRecv(), ShmSegmentError, ErrorCode.CORRUPT, parts);
    throwsShm(() => sut.tryRecv(), ShmSegmentError, ErrorCode.CORRUPT, parts);
    throwsShm(() => sut.recvSync({ timeoutMs: 100 }), ShmSegmentError, ErrorCode.CORRUPT, parts);
    await rejectsShm(() => sut.recv({ timeoutMs: 100 }), ShmSegmentError, ErrorCode.CORRUPT, parts);
    throwsShm(() => sut.drain(() => {}), ShmSegmentError, ErrorCode.CORRUPT, parts);
    throwsShm(() => sut.drainRaw(() => {}), ShmSegmentError, ErrorCode.CORRUPT, parts);
    assert.equal(sut.stats().receivedFrames, 0);
    assert.doesNotThrow(() => sut.close());
  });

  test('delivers the record again once it is repaired (a refused record is not consumed)', () => {
    const { sut, path, g } = liveChannel('record-repair');
    patchU32(path, g.dataIndices[0] + RECORD_TYPE_OFFSET, 99);
    throwsShm(() => sut.tryRecv(), ShmSegmentError, ErrorCode.CORRUPT, ['record type 99']);
    patchU32(path, g.dataIndices[0] + RECORD_TYPE_OFFSET, TYPE_DATA);
    assert.deepEqual(Array.from(sut.tryRecv() ?? []), [1, 2, 0]);
  });
});

describe('sending into a ring whose consumer head is corrupt', () => {
  function fullChannel(prefix: string) {
    const n = name(prefix);
    const sut = keep(Channel.create(n, SMALL));
    const frame = new Uint8Array(100);
    let sent = 0;
    while (sut.trySend(frame)) {
      sent++;
      assert.ok(sent < 1000, 'the ring never filled');
    }
    sut.flush();
    return { n, sut, frame, path: Channel.pathOf(n), g: sut.geometry };
  }

  test('refuses a head that leaves the tail more than a ring ahead, with a typed corrupt error', () => {
    const { sut, frame, path, g } = fullChannel('send-head-behind');
    const ring = g.ringLengths[0];
    // The producer flushed: the published tail is its private tail. A head one record past it
    // means the consumer claims to have read bytes that were never written.
    const tail = readU32(path, TAIL_POSITION_OFFSET);
    patchI32(path, HEAD_POSITION_OFFSET, (tail + 8) % (2 * ring));
    throwsShm(() => sut.trySend(frame), ShmSegmentError, ErrorCode.CORRUPT, ['head']);
    assert.doesNotThrow(() => sut.close());
  });

  test('refuses a head outside [0, 2 * ringLength) instead of overwriting unread frames', () => {
    const { sut, frame, path, g } = fullChannel('send-head-range');
    const bad = 5 * g.ringLengths[0];
    patchI32(path, HEAD_POSITION_OFFSET, bad);
    throwsShm(() => sut.trySend(frame), ShmSegmentError, ErrorCode.CORRUPT, [`${bad}`]);
    assert.doesNotThrow(() => sut.close());
  });
});

describe('opening with expectations the channel does not meet', () => {
  test('refuses an expected capacity the channel does not have and names the parameter', () => {
    const n = name('expect-capacity');
    keep(Channel.create(n, SMALL));
    throwsShm(() => Channel.open(n, { expect: { capacity: 2048 } }), ShmSegmentError, ErrorCode.INCOMPATIBLE, [
      'capacity',
      '2048',
      '1024',
    ]);
  });

  test('refuses expected priorities on a channel created without them and names the parameter', () => {
    const n = name('expect-prio');
    keep(Channel.create(n, SMALL));
    throwsShm(() => Channel.open(n, { expect: { priorities: true } }), ShmSegmentError, ErrorCode.INCOMPATIBLE, [
      'priorities',
      'true',
      'false',
    ]);
  });

  test('refuses an expected plain channel when it has priorities', () => {
    const n = name('expect-noprio');
    keep(Channel.create(n, { capacity: 4096, priorities: true }));
    throwsShm(() => Channel.open(n, { expect: { priorities: false } }), ShmSegmentError, ErrorCode.INCOMPATIBLE, [
      'priorities',
    ]);
  });

  test('refuses an expected maxFrame the channel does not have and names both values', () => {
    const n = name('expect-maxframe');
    const tx = keep(Channel.create(n, SMALL));
    const other = tx.geometry.maxFrame - 8;
    throwsShm(() => Channel.open(n, { expect: { maxFrame: other } }), ShmSegmentError, ErrorCode.INCOMPATIBLE, [
      'maxFrame',
      `${other}`,
      `${tx.geometry.maxFrame}`,
    ]);
  });

  test('names every mismatched parameter at once', () => {
    const n = name('expect-all');
    keep(Channel.create(n, SMALL));
    throwsShm(
      () => Channel.open(n, { expect: { capacity: 2048, priorities: true } }),
      ShmSegmentError,
      ErrorCode.INCOMPATIBLE,
      ['capacity', 'priorities'],
    );
  });

  test('leaves the consumer end free after an incompatible open', () => {
    const n = name('expect-free');
    const tx = keep(Channel.create(n, SMALL));
    throwsShm(() => Channel.open(n, { expect: { capacity: 2048 } }), ShmSegmentError, ErrorCode.INCOMPATIBLE);
    assert.equal(tx.consumerAttached(), false);
    const sut = keep(Channel.open(n, { expect: { capacity: 1024, priorities: false } }));
    assert.equal(tx.trySend(Uint8Array.of(7)), true);
    assert.deepEqual(Array.from(sut.tryRecv() ?? []), [7]);
  });
});

describe('invalid names', () => {
  const bad: Array<{ what: string; value: unknown; parts: Part[] }> = [
    { what: 'the empty name', value: '', parts: ['got 0'] },
    { what: "a name with a '/'", value: 'a/b', parts: ['"a/b"'] },
    { what: "the name '..'", value: '..', parts: ['".."'] },
    { what: 'a name starting with a dot', value: '.hidden', parts: ['".hidden"'] },
    { what: 'a name of 201 characters', value: 'x'.repeat(201), parts: ['got 201'] },
    { what: 'a name with a space', value: 'sp ace', parts: ['"sp ace"'] },
    { what: 'a name with a NUL', value: 'a\u0000b', parts: ['a\\u0000b'] },
    { what: "a name with a '~' (reserved for files being created)", value: 'a~1', parts: ['"a~1"'] },
    { what: 'a number', value: 42, parts: ['number'] },
    { what: 'undefined', value: undefined, parts: ['undefined'] },
    { what: 'null', value: null, parts: ['object'] },
  ];
  for (const c of bad) {
    test(`refuses ${c.what} in Channel.create, Channel.open and Channel.remove`, () => {
      const value = c.value as string;
      const before = readdirSync('/dev/shm').length;
      throwsShm(() => Channel.create(value, SMALL), ShmArgumentError, ErrorCode.INVALID_NAME, c.parts);
      throwsShm(() => Channel.open(value), ShmArgumentError, ErrorCode.INVALID_NAME, c.parts);
      throwsShm(() => Channel.remove(value), ShmArgumentError, ErrorCode.INVALID_NAME, c.parts);
      throwsShm(() => Channel.pathOf(value), ShmArgumentError, ErrorCode.INVALID_NAME, c.parts);
      assert.equal(readdirSync('/dev/shm').length, before);
    });
  }

  test('accepts a name of exactly 200 characters', () => {
    const n = name('long');
    const long = n + 'y'.repeat(200 - n.length);
    names.push(long);
    keep(Channel.create(long, SMALL));
    assert.ok(existsSync(Channel.pathOf(long)));
  });
});

describe('invalid options', () => {
  const bad: Array<{ what: string; options: ChannelCreateOptions; parts: Part[] }> = [
    { what: 'capacity 1000', options: { capacity: 1000 }, parts: ['capacity=1000'] },
    { what: 'capacity 2**31', options: { capacity: 2 ** 31 }, parts: [`capacity=${2 ** 31}`] },
    {
      what: 'capacity 1536 (not a power of two)',
      options: { capacity: 1536 },
      parts: ['capacity=1536', 'power of two'],
    },
    { what: 'capacity NaN', options: { capacity: Number.NaN }, parts: ['capacity=NaN'] },
    { what: 'capacity 1024.5', options: { capacity: 1024.5 }, parts: ['capacity=1024.5'] },
    { what: 'maxFrame 0', options: { maxFrame: 0 }, parts: ['maxFrame=0'] },
    { what: 'maxFrame -1', options: { maxFrame: -1 }, parts: ['maxFrame=-1'] },
    { what: 'maxFrame 1.5', options: { maxFrame: 1.5 }, parts: ['maxFrame=1.5'] },
    {
      what: 'maxFrame larger than the capacity',
      options: { capacity: 1024, maxFrame: 2048 },
      parts: ['maxFrame=2048'],
    },
    {
      what: 'maxFrame one byte above the largest payload',
      options: { capacity: 1024, maxFrame: largestPayload(1024) + 1 },
      parts: [`maxFrame=${largestPayload(1024) + 1}`],
    },
    { what: "wait 'bogus'", options: { wait: 'bogus' as never }, parts: ['wait', 'bogus'] },
    { what: 'spinIterations -1', options: { spinIterations: -1 }, parts: ['spinIterations', '-1'] },
    { what: 'livenessCheckMs 0', options: { livenessCheckMs: 0 }, parts: ['livenessCheckMs', '0'] },
    { what: 'mode -1', options: { mode: -1 }, parts: ['mode', '-1'] },
    { what: 'mode 0o10000 (beyond the permission bits)', options: { mode: 0o10000 }, parts: ['mode', '4096'] },
    {
      what: 'a priority share of 0',
      options: { priorities: { critical: 0, high: 1, low: 1 } },
      parts: ['priorities'],
    },
    {
      what: 'a priority share too small for a ring',
      options: { capacity: 1024, priorities: { critical: 1, high: 1, low: 1e-6 } },
      parts: ['ringLength[2]'],
    },
  ];
  for (const c of bad) {
    test(`refuses ${c.what} in Channel.create and creates no file`, () => {
      const n = name('options');
      throwsShm(() => Channel.create(n, c.options), ShmArgumentError, ErrorCode.INVALID_ARGUMENT, c.parts);
      assert.equal(existsSync(Channel.pathOf(n)), false);
    });
  }

  test("refuses wait 'bogus' in Channel.open before touching the segment", () => {
    const n = name('open-options');
    const tx = keep(Channel.create(n, SMALL));
    throwsShm(() => Channel.open(n, { wait: 'bogus' as never }), ShmArgumentError, ErrorCode.INVALID_ARGUMENT, [
      'bogus',
    ]);
    assert.equal(tx.consumerAttached(), false);
  });
});

describe('opening a name that does not exist', () => {
  test('fails at once with SHM_ERR_NOT_FOUND naming the channel', () => {
    const n = name('missing');
    throwsShm(() => Channel.open(n), ShmSegmentError, ErrorCode.NOT_FOUND, [n]);
  });

  test('waits waitMs for the file to appear, then fails with SHM_ERR_NOT_FOUND', () => {
    const n = name('missing-wait');
    const started = Date.now();
    throwsShm(() => Channel.open(n, { waitMs: 100 }), ShmSegmentError, ErrorCode.NOT_FOUND, [n]);
    const waited = Date.now() - started;
    assert.ok(waited >= 100, `gave up after ${waited} ms, before waitMs=100`);
    assert.equal(existsSync(Channel.pathOf(n)), false);
  });
});

describe('frames larger than maxFrame', () => {
  test('are refused with SHM_ERR_TOO_LARGE by trySend, send, sendSync and claim', async () => {
    const n = name('too-large');
    const sut = keep(Channel.create(n, SMALL));
    const maxFrame = sut.geometry.maxFrame;
    const big = new Uint8Array(maxFrame + 1);
    const parts = [`${maxFrame + 1} bytes`, `maxFrame=${maxFrame}`];
    throwsShm(() => sut.trySend(big), ShmFrameError, ErrorCode.TOO_LARGE, parts);
    await rejectsShm(() => sut.send(big, { timeoutMs: 100 }), ShmFrameError, ErrorCode.TOO_LARGE, parts);
    throwsShm(() => sut.sendSync(big, { timeoutMs: 100 }), ShmFrameError, ErrorCode.TOO_LARGE, parts);
    throwsShm(() => sut.claim(maxFrame + 1), ShmFrameError, ErrorCode.TOO_LARGE, parts);
    // Nothing was written, and a frame of exactly maxFrame still goes through.
    assert.equal(sut.stats().sentFrames, 0);
    assert.equal(sut.trySend(new Uint8Array(maxFrame)), true);
  });

  test('are refused with SHM_ERR_TOO_LARGE even when the ring is full, which is a return value', async () => {
    const n = name('too-large-full');
    const sut = keep(Channel.create(n, SMALL));
    const maxFrame = sut.geometry.maxFrame;
    const small = new Uint8Array(64);
    let sent = 0;
    let accepted = true;
    while (accepted) {
      accepted = sut.trySend(small);
      if (accepted) sent++;
      assert.ok(sent < 1000, 'the ring never filled');
    }
    assert.ok(sent > 0);
    assert.equal(sut.trySend(small), false);
    assert.equal(sut.claim(8), null);
    assert.ok(sut.stats().fullCount >= 2);
    const big = new Uint8Array(maxFrame + 1);
    const parts = [`maxFrame=${maxFrame}`];
    throwsShm(() => sut.trySend(big), ShmFrameError, ErrorCode.TOO_LARGE, parts);
    throwsShm(() => sut.sendSync(big, { timeoutMs: 50 }), ShmFrameError, ErrorCode.TOO_LARGE, parts);
    await rejectsShm(() => sut.send(big, { timeoutMs: 50 }), ShmFrameError, ErrorCode.TOO_LARGE, parts);
    throwsShm(() => sut.claim(maxFrame + 1), ShmFrameError, ErrorCode.TOO_LARGE, parts);
    assert.equal(sut.stats().sentFrames, sent);
  });

  test('are refused on a channel with priorities for every priority class', () => {
    const n = name('too-large-prio');
    const sut = keep(Channel.create(n, { capacity: 4096, priorities: true }));
    const big = new Uint8Array(sut.geometry.maxFrame + 1);
    for (const priority of ['critical', 'high', 'low'] as const)
      throwsShm(() => sut.trySend(big, { priority }), ShmFrameError, ErrorCode.TOO_LARGE, [
        `maxFrame=${sut.geometry.maxFrame}`,
      ]);
  });
});

describe('out of file descriptors', () => {
  test('creating segments past `ulimit -n` fails with a typed SHM_ERR_SYSTEM that says so, and the process recovers', () => {
    const fixture = fileURLToPath(new URL('../fixtures/fd-exhaustion.js', import.meta.url));
    const out = execFileSync('sh', ['-c', `ulimit -n 64 && exec "${process.execPath}" "${fixture}"`], {
      encoding: 'utf8',
      timeout: 30_000,
      env: process.env,
    });
    const report = JSON.parse(out.trim().split('\n').pop() as string);
    assert.equal(report.error, ErrorCode.SYSTEM, JSON.stringify(report));
    assert.match(report.message, /out of file descriptors/);
    assert.ok(report.created > 0 && report.created < 64, JSON.stringify(report));
    assert.equal(report.recovered, true);
  });
});

describe('a full filesystem', () => {
  test('Channel.create fails with SHM_ERR_NO_SPACE, leaves no file behind and does not SIGBUS', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'shmbus-nospace-'));
    try {
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1M', 'tmpfs', dir], { stdio: 'pipe' });
      } catch (err) {
        const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
        t.skip(`mount not permitted: ${stderr || (err as Error).message}`);
        return;
      }
      try {
        const n = uniqueName('nospace');
        const capacity = 4 << 20;
        const length = channelGeometry(capacity, null, undefined, pageSize()).segmentLength;
        // The message names the directory and its free space (at most the 1 MiB mount).
        throwsShm(() => Channel.create(n, { dir, capacity }), ShmSystemError, ErrorCode.NO_SPACE, [
          n,
          `${length}`,
          `${dir} has `,
          'MiB free of 1.0 MiB',
        ]);
        try {
          Channel.create(n, { dir, capacity });
        } catch (err) {
          const cause = (err as ShmSystemError).cause as { code?: string } | undefined;
          assert.equal(cause?.code, 'ENOSPC');
          const details = (err as ShmSystemError).details as { dir?: string; freeBytes?: number };
          assert.equal(details.dir, dir);
          assert.ok(typeof details.freeBytes === 'number' && details.freeBytes <= 1 << 20, JSON.stringify(details));
          assert.equal(typeof (err as ShmSystemError).errno, 'number');
          assert.equal(typeof (err as ShmSystemError).syscall, 'string');
        }
        assert.deepEqual(readdirSync(dir), []);
        // The directory is still usable: a channel that fits works end to end.
        const sut = Channel.create(n, { dir, capacity: 64 << 10 });
        try {
          const rx = Channel.open(n, { dir });
          assert.equal(sut.trySend(Uint8Array.of(1, 2, 3)), true);
          assert.deepEqual(Array.from(rx.tryRecv() ?? []), [1, 2, 3]);
          rx.close();
        } finally {
          sut.close();
          Channel.remove(n, { dir });
        }
        assert.deepEqual(readdirSync(dir), []);
      } finally {
        execFileSync('umount', [dir], { stdio: 'pipe' });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a segment larger than memory', () => {
  test('Session.create of twice the RAM (and the /dev/shm size) fails at once with SHM_ERR_NO_SPACE naming the directory, and leaves no file', () => {
    const shm = statfsSync('/dev/shm');
    const limit = Math.max(totalmem(), shm.blocks * shm.bsize);
    const slotSize = 1 << 20;
    const slotCount = Math.ceil((2 * limit) / slotSize);
    const n = uniqueName('huge');
    const started = Date.now();
    throwsShm(() => Session.create(n, { slotSize, slotCount }), ShmSystemError, ErrorCode.NO_SPACE, [
      n,
      '/dev/shm has ',
      'MiB free of ',
    ]);
    // tmpfs refuses a reservation beyond its size up front: nothing was allocated on the way.
    assert.ok(Date.now() - started < 5_000, `took ${Date.now() - started} ms`);
    assert.deepEqual(
      readdirSync('/dev/shm').filter((f) => f.includes(n)),
      [],
    );
  });
});

describe('cleanup', () => {
  test('leaves no segment file of this process in /dev/shm', () => {
    assert.deepEqual(leftovers(), []);
  });
});
