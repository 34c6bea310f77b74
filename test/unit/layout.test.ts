/** Pins every offset of the byte layouts to docs/LAYOUT.md: a change here is a layout version bump. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlobHandle } from '../../src/blob/handle.js';
import { ConsumerTable } from '../../src/fanout/consumer-table.js';
import * as blob from '../../src/layout/blob.js';
import * as ch from '../../src/layout/channel.js';
import * as seg from '../../src/layout/segment.js';
import * as sender from '../../src/layout/sender.js';

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

test('the channel consumer block’s latency fields follow the received counters, inside the block', () => {
  assert.deepEqual(
    [
      ch.LATENCY_P50_OFFSET,
      ch.LATENCY_P99_OFFSET,
      ch.LATENCY_MAX_OFFSET,
      ch.LATENCY_SAMPLES_OFFSET,
      ch.LATENCY_UPDATED_MS_OFFSET,
    ],
    [296, 304, 312, 320, 328],
  );
  assert.ok(ch.LATENCY_UPDATED_MS_OFFSET + 8 <= ch.CONSUMER_BLOCK_OFFSET + 128);
});

test('the fan-out sender registration offsets are those of docs/LAYOUT.md', () => {
  assert.deepEqual(
    [
      sender.SENDER_PROTOCOL_VERSION,
      sender.SENDER_PROTOCOL_OFFSET,
      sender.RING_CAPACITY_OFFSET,
      sender.TABLE_SLOTS_OFFSET,
      sender.TABLE_OFFSET_OFFSET,
      sender.SOCKET_PATH_OFFSET,
      sender.COUNTERS_OFFSET,
      sender.SENDER_SEGMENT_LENGTH,
      sender.KIND_MODES_OFFSET,
      sender.CONSUMER_TABLE_OFFSET,
      sender.TABLE_ENTRY_LENGTH,
    ],
    [2, 64, 80, 84, 88, 128, 256, 384, 384, 512, 256],
  );
  assert.deepEqual(
    [
      sender.ENTRY_SEQ_OFFSET,
      sender.ENTRY_STATE_OFFSET,
      sender.ENTRY_CONSUMER_ID_OFFSET,
      sender.ENTRY_PID_OFFSET,
      sender.ENTRY_UID_OFFSET,
      sender.ENTRY_REASON_OFFSET,
      sender.ENTRY_KEYS_OFFSET,
      sender.ENTRY_GROUPS_OFFSET,
      sender.ENTRY_KIND_COUNT_OFFSET,
      sender.ENTRY_RING_NAME_LENGTH_OFFSET,
      sender.ENTRY_NAME_LENGTH_OFFSET,
      sender.ENTRY_CONNECTED_MS_OFFSET,
      sender.ENTRY_ENDED_MS_OFFSET,
      sender.ENTRY_DELIVERED_OFFSET,
      sender.ENTRY_DELIVERED_BYTES_OFFSET,
      sender.ENTRY_KINDS_OFFSET,
      sender.ENTRY_RING_NAME_OFFSET,
      sender.ENTRY_NAME_OFFSET,
      sender.ENTRY_NAME_ROOM,
    ],
    [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 48, 56, 64, 72, 80, 112, 160, 96],
  );
  assert.equal(sender.senderSegmentLength(16), 512 + 16 * 256);
  assert.equal(sender.tableSlotsFor(10_000), sender.MAX_TABLE_SLOTS);
});

test('a consumer table entry reads back through its seqlock, and an entry being rewritten is not taken', () => {
  const slots = 2;
  const buffer = new SharedArrayBuffer(sender.senderSegmentLength(slots));
  const views = {
    buffer,
    u8: new Uint8Array(buffer),
    i32: new Int32Array(buffer),
    f64: new Float64Array(buffer),
    dv: new DataView(buffer),
  };
  const sut = new ConsumerTable(views, slots);
  assert.equal(sender.readConsumerEntry(views.dv, views.i32, 0), null, 'a FREE entry');
  const slot = sut.claim();
  assert.equal(slot, 0);
  sut.open(slot, { consumerId: 7, pid: 1234, uid: 1000, name: 'ticker-é'.repeat(20), ring: 'fanout-1-7-abcd' });
  sut.setFilter(slot, { keys: 3, groups: 1, kinds: [9, 200] });
  const stats = sut.stats(slot);
  stats[0] += 5;
  stats[1] += 500;
  const e = sender.readConsumerEntry(views.dv, views.i32, slot);
  assert.ok(e !== null);
  assert.deepEqual(
    [e.state, e.consumerId, e.pid, e.uid, e.ring, e.keys, e.groups, e.kinds, e.delivered, e.deliveredBytes],
    ['live', 7, 1234, 1000, 'fanout-1-7-abcd', 3, 1, [9, 200], 5, 500],
  );
  assert.ok(e.name.startsWith('ticker-é') && new TextEncoder().encode(e.name).length <= sender.ENTRY_NAME_ROOM);
  assert.ok(!e.name.includes('\ufffd'), 'the name is cut on a character boundary');
  assert.equal(sut.claim(), 1, 'a LIVE entry is not reused');
  sut.end(slot, 'ring-full');
  const ended = sender.readConsumerEntry(views.dv, views.i32, slot);
  assert.deepEqual([ended?.state, ended?.evictReason], ['evicted', 'ring-full']);
  // A writer in the middle of a rewrite leaves the sequence odd: the reader does not take it.
  const seqIndex = (sender.CONSUMER_TABLE_OFFSET + sender.ENTRY_SEQ_OFFSET) >> 2;
  Atomics.add(views.i32, seqIndex, 1);
  assert.equal(sender.readConsumerEntry(views.dv, views.i32, slot), null);
  Atomics.add(views.i32, seqIndex, 1);
  assert.equal(sender.readConsumerEntry(views.dv, views.i32, slot)?.state, 'evicted');
});
