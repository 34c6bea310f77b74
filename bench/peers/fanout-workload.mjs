/**
 * The fan-out workload, shared by the sender (bench/cases/fanout.mjs) and both kinds of
 * consumer process (bench/fanout-child.mjs over shmbus, bench/peers/fanout-uds-child.mjs over
 * unix sockets), so that every side builds the same keys, the same updates in the same order,
 * and measures the same way.
 *
 *   update #seq: kind 2, key = keys[keyOfUpdate(seq)] (a 32-byte pubkey, 4096 of them),
 *                group = its owner (32 bytes, 16 owners), payload 1 KiB (account-like bytes,
 *                seq in its first 4 bytes, little-endian)
 *   consumer i subscribes to the keys of quarter i % 4 (1024 keys); end of stream: kind 255
 *
 * Both consumers hand every decoded message (a FanoutMessage: shmbus's own, or decodeMessage()
 * over the unix-socket frame, which has the same bytes) to a Tally, so counting and latency are
 * the same code on both sides. Latency is the consumer's clock minus the sender's stamp in the
 * frame header; both clocks are performance.timeOrigin + performance.now() (src/core/clock.ts),
 * which agree across processes to about a microsecond.
 */
export const KEY_COUNT = 4096;
export const KEY_LENGTH = 32;
export const OWNER_COUNT = 16;
export const PAYLOAD_LENGTH = 1024;
export const QUARTERS = 4;
export const KIND_UPDATE = 2;
export const KIND_END = 255;
const KEYS_PER_QUARTER = KEY_COUNT / QUARTERS;

/** xorshift32: the fixed pseudo-random source of keys and key order (cheap to rebuild in every process). */
function xorshift(seed) {
  let x = seed;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}
const keyBytes = new Uint8Array((KEY_COUNT + OWNER_COUNT) * KEY_LENGTH);
const nextWord = xorshift(0x2545f491);
for (let i = 0; i < keyBytes.length; i += 4) {
  const w = nextWord();
  keyBytes[i] = w;
  keyBytes[i + 1] = w >>> 8;
  keyBytes[i + 2] = w >>> 16;
  keyBytes[i + 3] = w >>> 24;
}
const keyAt = (i) => keyBytes.subarray(i * KEY_LENGTH, (i + 1) * KEY_LENGTH);
/** The fixed key set: 32-byte pseudo-pubkeys (views of one buffer). */
export const keys = Array.from({ length: KEY_COUNT }, (_, i) => keyAt(i));
const owners = Array.from({ length: OWNER_COUNT }, (_, i) => keyAt(KEY_COUNT + i));
export const ownerOf = (keyIndex) => owners[keyIndex % OWNER_COUNT];
export const quarterOfKey = (keyIndex) => Math.floor(keyIndex / KEYS_PER_QUARTER);
export const quarterOfConsumer = (consumerIndex) => consumerIndex % QUARTERS;
export const keysOfQuarter = (q) => keys.slice(q * KEYS_PER_QUARTER, (q + 1) * KEYS_PER_QUARTER);

/** The key of update #seq: a fixed pseudo-random sequence over the key set, so the quarters interleave at random. */
const ORDER_LENGTH = 1 << 16;
const nextKey = xorshift(0x9e3779b9);
const keyOrder = Uint16Array.from({ length: ORDER_LENGTH }, () => nextKey() % KEY_COUNT);
export const keyOfUpdate = (seq) => keyOrder[seq & (ORDER_LENGTH - 1)];

/** How many of the updates [from, to) consumer `consumerIndex` should receive. */
export function expectedFor(consumerIndex, from, to) {
  const q = quarterOfConsumer(consumerIndex);
  let n = 0;
  for (let seq = from; seq < to; seq++) if (quarterOfKey(keyOfUpdate(seq)) === q) n++;
  return n;
}

/** A 1 KiB account-like payload (lamports, owner-ish bytes, data); setSeq() stamps the update number. */
export function makePayload() {
  const payload = new Uint8Array(PAYLOAD_LENGTH);
  for (let i = 0; i < PAYLOAD_LENGTH; i++) payload[i] = (i * 31 + 7) & 0xff;
  return payload;
}
export function setSeq(payload, seq) {
  payload[0] = seq & 0xff;
  payload[1] = (seq >>> 8) & 0xff;
  payload[2] = (seq >>> 16) & 0xff;
  payload[3] = seq >>> 24;
}
const seqOf = (payload) => (payload[0] | (payload[1] << 8) | (payload[2] << 16) | (payload[3] << 24)) >>> 0;

/** Wall-clock ms as the fan-out frame stamp counts it (src/core/clock.ts). */
export const nowMs = () => performance.timeOrigin + performance.now();

/** CPU time (user + system) of a process.cpuUsage() delta, in ms. */
export const cpuMs = (usage) => (usage.user + usage.system) / 1000;

/**
 * One consumer's count of what it received. Updates numbered below `warm` are warm-up: checked
 * but neither counted nor timed. With `latency`, every counted update adds one sample in ns.
 * The CPU the process used from the first counted update to the report is reported too.
 */
export class Tally {
  constructor(warm, latency) {
    this.warm = warm;
    this.samples = latency ? [] : null;
    this.received = 0;
    this.warmReceived = 0;
    this.lastMs = 0;
    this.lastSeq = -1;
    this.outOfOrder = 0;
    this.malformed = 0;
    this.cpu = null;
  }

  onMessage(m) {
    const now = nowMs();
    const payload = m.payload;
    if (m.kind !== KIND_UPDATE || payload.length !== PAYLOAD_LENGTH || m.key?.length !== KEY_LENGTH) {
      this.malformed++;
      return;
    }
    const seq = seqOf(payload);
    if (seq <= this.lastSeq) this.outOfOrder++;
    this.lastSeq = seq;
    if (seq < this.warm) {
      this.warmReceived++;
      return;
    }
    if (this.received++ === 0) this.cpu = process.cpuUsage();
    this.lastMs = now;
    if (this.samples !== null) this.samples.push(Math.round((now - m.senderTimeMs) * 1e6));
  }

  /** The JSON line a consumer prints at the end of the stream. */
  report(index) {
    return {
      done: true,
      index,
      received: this.received,
      warmReceived: this.warmReceived,
      lastMs: this.lastMs,
      outOfOrder: this.outOfOrder,
      malformed: this.malformed,
      cpuMs: this.cpu === null ? 0 : cpuMs(process.cpuUsage(this.cpu)),
      samples: this.samples,
    };
  }
}
