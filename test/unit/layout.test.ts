/** Pins every offset of the byte layouts to docs/LAYOUT.md: a change here is a layout version bump. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlobHandle } from '../../src/blob/handle.js';
import * as blob from '../../src/layout/blob.js';
import * as ch from '../../src/layout/channel.js';
import * as seg from '../../src/layout/segment.js';

test('the segment header offsets are those of docs/LAYOUT.md', () => {
  assert.deepEqual(
    {
      magic: seg.MAGIC_OFFSET,
      version: seg.VERSION_OFFSET,
      kind: seg.KIND_OFFSET,
      headerLength: seg.HEADER_LENGTH_OFFSET,
      flags: seg.FLAGS_OFFSET,
      segmentLength: seg.SEGMENT_LENGTH_OFFSET,
      ownerPid: seg.OWNER_PID_OFFSET,
      ownerStart: seg.OWNER_START_OFFSET,
      createdAt: seg.CREATED_AT_OFFSET,
      paramsLength: seg.PARAMS_LENGTH_OFFSET,
      params: seg.PARAMS_OFFSET,
      header: seg.HEADER_LENGTH,
      version1: seg.LAYOUT_VERSION,
    },
    {
      magic: 0,
      version: 8,
      kind: 12,
      headerLength: 16,
      flags: 20,
      segmentLength: 24,
      ownerPid: 32,
      ownerStart: 40,
      createdAt: 48,
      paramsLength: 56,
      params: 64,
      header: 128,
      version1: 1,
    },
  );
  assert.equal(new TextDecoder().decode(seg.MAGIC), 'SHMBUS\0\0');
});

test('the channel offsets are those of docs/LAYOUT.md', () => {
  assert.deepEqual(
    [
      ch.CAPACITY_OFFSET,
      ch.MAX_FRAME_OFFSET,
      ch.CLASS_COUNT_OFFSET,
      ch.RING_LENGTH_OFFSET,
      ch.DATA_INDEX_OFFSET,
      ch.TAIL_POSITION_OFFSET,
      ch.PRODUCER_CLOSED_OFFSET,
      ch.PRODUCER_PID_OFFSET,
      ch.SENT_FRAMES_OFFSET,
      ch.SENT_BYTES_OFFSET,
      ch.FULL_COUNT_OFFSET,
      ch.HEAD_POSITION_OFFSET,
      ch.CONSUMER_CLOSED_OFFSET,
      ch.CONSUMER_PID_OFFSET,
      ch.ATTACH_COUNT_OFFSET,
      ch.RECEIVED_FRAMES_OFFSET,
      ch.RECEIVED_BYTES_OFFSET,
      ch.DATA_WAIT_OFFSET + ch.SLEEPING_OFFSET,
      ch.DATA_WAIT_OFFSET + ch.SEQ_OFFSET,
      ch.SPACE_WAIT_OFFSET + ch.SLEEPING_OFFSET,
      ch.SPACE_WAIT_OFFSET + ch.SEQ_OFFSET,
      ch.RINGS_OFFSET,
    ],
    [64, 68, 72, 80, 92, 128, 140, 144, 152, 160, 168, 256, 268, 272, 276, 280, 288, 384, 388, 512, 516, 640],
  );
  assert.deepEqual(
    [ch.TYPE_DATA, ch.TYPE_PADDING, ch.RECORD_HEADER_LENGTH, ch.PRODUCER_ROLE, ch.CONSUMER_ROLE],
    [1, 2, 8, 0, 1],
  );
});

test('counters written by different processes are 128 bytes apart', () => {
  const blocks = [
    ch.PRODUCER_BLOCK_OFFSET,
    ch.CONSUMER_BLOCK_OFFSET,
    ch.DATA_WAIT_OFFSET,
    ch.SPACE_WAIT_OFFSET,
    ch.RINGS_OFFSET,
  ];
  for (let i = 1; i < blocks.length; i++) assert.equal(blocks[i] - blocks[i - 1], 128);
});

test('the blob store offsets are those of docs/LAYOUT.md', () => {
  assert.deepEqual(
    [
      blob.WRITE_HEAD_OFFSET,
      blob.NEXT_GENERATION_OFFSET,
      blob.STORE_CLOSED_OFFSET,
      blob.PREFETCHING_OFFSET,
      blob.APPENDS_OFFSET,
      blob.EXPIRED_OFFSET,
      blob.TABLE_OFFSET,
      blob.TABLE_ENTRY_LENGTH,
    ],
    [128, 132, 136, 140, 144, 156, 192, 32],
  );
  assert.deepEqual(
    [
      blob.USED_OFFSET,
      blob.ENTRIES_OFFSET,
      blob.ACKED_OFFSET,
      blob.WRITERS_OFFSET,
      blob.SEALED_OFFSET,
      blob.FIRST_WRITE_OFFSET,
      blob.EMPTY_SINCE_OFFSET,
      blob.LEASES_OFFSET,
      blob.LAST_LEASE_OFFSET,
      blob.LAST_WRITE_OFFSET,
      blob.CHUNK_ACKS_OFFSET,
    ],
    [128, 132, 136, 140, 144, 148, 152, 156, 160, 164, 192],
  );
  // ACK area: one word per 64 data bytes; the data area starts on the next page boundary.
  assert.deepEqual(
    [blob.ackAreaLength(4096), blob.chunkDataOffset(4096, 4096), blob.chunkDataOffset(1 << 20, 4096)],
    [256, 4096, 69632],
  );
  assert.deepEqual([blob.ackIndex(0), blob.ackIndex(63), blob.ackIndex(64), blob.ackIndex(640)], [192, 192, 196, 232]);
  // Entry: 16-byte header, payload padded to 8, at least 64 B per ACK word (1 word up to 32
  // recipients, then a `remaining` word and a bitmap word per 32).
  assert.deepEqual(
    [
      blob.entrySize(1),
      blob.entrySize(48),
      blob.entrySize(49),
      blob.entrySize(100),
      blob.entrySize(1, 32),
      blob.entrySize(1, 33),
      blob.entrySize(1, 1024),
      blob.HANDLE_LENGTH,
    ],
    [64, 64, 72, 120, 64, 192, 64 * 33, 24],
  );
  assert.deepEqual([blob.fullMask(1), blob.fullMask(3), blob.fullMask(32)], [1, 7, -1]);
});

test('a blob handle is 24 little-endian bytes and reads back equal', () => {
  const h = new BlobHandle(3, 4096, 77, 0xfffffffe, 1_795_000_000_123);
  const bytes = h.toBytes();
  assert.equal(bytes.length, 24);
  const dv = new DataView(bytes.buffer);
  assert.deepEqual(
    [dv.getUint32(0, true), dv.getUint32(4, true), dv.getUint32(8, true), dv.getUint32(12, true)],
    [3, 4096, 77, 0xfffffffe],
  );
  assert.equal(dv.getUint32(20, true) * 2 ** 32 + dv.getUint32(16, true), 1_795_000_000_123);
  assert.deepEqual({ ...BlobHandle.fromBytes(bytes) }, { ...h });
  assert.throws(() => BlobHandle.fromBytes(bytes.subarray(1)), { code: 'SHM_ERR_INVALID_ARGUMENT' });
});
