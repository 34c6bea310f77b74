/**
 * Fuzz target `control-codec`: the fan-out control protocol's codec (src/fanout/control.ts),
 * everything a hostile peer's bytes reach before any socket logic.
 *
 * Each case builds a byte stream: 15 % purely random bytes, else one to four valid frames made
 * by the real encoders (ControlWriter for HELLO / PING / BYE / READY / ACK / REFUSED / EVICTED /
 * CLOSING, encodeFilterRequest for SUBSCRIBE / UNSUBSCRIBE) and then mutated (mutate.ts), with
 * the length prefix, version and tag of every frame named as fields so they get interesting
 * values (0, 1, maxFrame - 1 .. maxFrame + 1, 0x7fffffff, 0xffffffff, ...). The stream is cut
 * into one to eight chunks (some empty, some Buffers with a non-zero byteOffset, as a socket
 * delivers them) and pushed through a ControlSplitter whose maxFrame is the real default
 * (16 MiB) or a small one (16, 64, 1024, 65536) so that over-limit prefixes are common.
 *
 * Checks, besides "only SHM_ERR_ errors are thrown":
 * - differential: the splitter's bodies, the push that throws, and its buffered byte count
 *   match a reference model of the framing rule computed over the whole stream;
 * - a declared length over maxFrame throws on the push that completes its 4-byte prefix, and
 *   nothing over 3 + maxFrame bytes is ever buffered;
 * - every body then goes through ControlReader and the decoder its tag has on either side
 *   (HELLO, SUBSCRIBE / UNSUBSCRIBE via decodeFilterRequest with a random maxItems, PING, BYE,
 *   READY, ACK, REFUSED / EVICTED, CLOSING; unknown tags get a random sequence of reads);
 *   an accepted body re-encodes to the same bytes, lists stay within maxItems, every key is
 *   1..MAX_KEY_LENGTH bytes, and what a body decodes to is never larger than the body;
 * - accepted SUBSCRIBE deltas are applied to a SubscriptionFilter and matched (the sender's path).
 */
import {
  ControlReader,
  ControlSplitter,
  ControlWriter,
  decodeFilterRequest,
  encodeFilterRequest,
  type FilterDelta,
  tagName,
} from '../../src/fanout/control.js';
import { MessageKey, SubscriptionFilter } from '../../src/fanout/filter.js';
import {
  CONTROL_LENGTH_PREFIX,
  CONTROL_VERSION,
  MAX_CONTROL_FRAME,
  MAX_KEY_LENGTH,
  Tag,
} from '../../src/layout/fanout.js';
import { type CaseContext, Run, type RunOptions, resultOf, type TargetResult } from './harness.js';
import { caseRng, concat, type Field, mutate, type Rng } from './mutate.js';

export const NAME = 'control-codec';
export const DEFAULT_CASES = 20_000;

const TAGS = Object.values(Tag) as number[];
const SPLITTER_LIMITS = [MAX_CONTROL_FRAME, 16, 64, 1024, 65536] as const;

/** A short string: ASCII, multi-byte UTF-8, empty, or (rarely) long. */
export function randomString(rng: Rng): string {
  const r = rng.float();
  if (r < 0.1) return '';
  if (r < 0.6) {
    let s = '';
    for (let n = rng.range(1, 24); n > 0; n--) s += String.fromCharCode(rng.range(0x20, 0x7e));
    return s;
  }
  if (r < 0.9) return rng.pick(['consumer-1', 'pid 1234', 'é', '日本語', '😀x', 'a\u0000b', 'ring-ä']);
  return 'x'.repeat(rng.range(100, 3000));
}

function randomKey(rng: Rng): Uint8Array {
  const r = rng.float();
  const n = r < 0.05 ? MAX_KEY_LENGTH : r < 0.7 ? 32 : rng.range(1, 80);
  return rng.bytes(n);
}

export function randomDelta(rng: Rng): FilterDelta {
  const many = rng.chance(0.05);
  const count = () => (many ? rng.range(20, 300) : rng.int(5));
  const kinds: number[] = [];
  for (let n = rng.int(4); n > 0; n--) kinds.push(rng.int(256));
  const keys: Uint8Array[] = [];
  for (let n = count(); n > 0; n--) keys.push(randomKey(rng));
  const groups: Uint8Array[] = [];
  for (let n = count(); n > 0; n--) groups.push(randomKey(rng));
  return { kinds, keys, groups };
}

/** One valid control frame of a random tag, made by the real encoders. */
export function validFrame(rng: Rng, tag = rng.pick(TAGS)): Uint8Array {
  switch (tag) {
    case Tag.HELLO:
      return new ControlWriter(Tag.HELLO)
        .u32(rng.chance(0.9) ? 0 : rng.u32())
        .string(randomString(rng))
        .finish();
    case Tag.SUBSCRIBE:
    case Tag.UNSUBSCRIBE:
      return encodeFilterRequest(tag, rng.u32(), randomDelta(rng));
    case Tag.READY:
      return new ControlWriter(Tag.READY)
        .u32(rng.u32())
        .u32(rng.pick([0, 30_000, rng.u32()]))
        .u32(rng.pick([1024, 1 << 25, rng.u32()]))
        .string(`fanout-${rng.u32()}`)
        .string('/dev/shm')
        .string(rng.chance(0.5) ? '' : 'store')
        .string(rng.chance(0.5) ? '' : '/dev/shm')
        .finish();
    case Tag.ACK:
      return new ControlWriter(Tag.ACK).u32(rng.u32()).finish();
    case Tag.REFUSED:
    case Tag.EVICTED:
      return new ControlWriter(tag)
        .string(rng.pick(['protocol', 'uid', 'max-consumers', 'ring-full', 'idle', 'too-many-keys']))
        .string(randomString(rng))
        .finish();
    default:
      return new ControlWriter(tag).finish();
  }
}

/** The prefix, version and tag fields of the frames laid end to end in a stream. */
function frameFields(frames: Uint8Array[]): Field[] {
  const fields: Field[] = [];
  let at = 0;
  for (const f of frames) {
    fields.push({ at, width: 4 }, { at: at + 4, width: 1 }, { at: at + 5, width: 1 });
    // The first count / length field of the body is a u32 or u16 right after the tag.
    fields.push({ at: at + 6, width: 4 }, { at: at + 6, width: 2 }, { at: at + 10, width: 2 });
    at += f.length;
  }
  return fields;
}

/** A byte stream for one case: random, or valid frames mutated. */
export function streamFor(rng: Rng, maxFrame: number): Uint8Array {
  if (rng.chance(0.15)) return rng.bytes(rng.size(512));
  const frames: Uint8Array[] = [];
  for (let n = rng.range(1, 4); n > 0; n--) frames.push(validFrame(rng));
  const valid = concat(...frames);
  if (rng.chance(0.1)) return valid;
  return mutate(rng, valid, {
    fields: frameFields(frames),
    limits: [maxFrame, MAX_CONTROL_FRAME, MAX_KEY_LENGTH, 0xffff],
    others: [validFrame(rng), validFrame(rng)],
  });
}

/** Cut points: 1..8 chunks, some empty; some chunks are Buffers at a non-zero byteOffset. */
function chunksOf(rng: Rng, stream: Uint8Array): Uint8Array[] {
  const cuts = [0, stream.length];
  for (let n = rng.int(8); n > 0; n--) cuts.push(rng.int(stream.length + 1));
  cuts.sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i + 1 < cuts.length; i++) {
    const part = stream.subarray(cuts[i], cuts[i + 1]);
    if (rng.chance(0.3)) {
      // As a socket delivers it: a Buffer view into a larger allocation.
      const pad = rng.range(1, 9);
      const big = Buffer.alloc(part.length + pad + 3, 0xee);
      big.set(part, pad);
      chunks.push(big.subarray(pad, pad + part.length));
    } else chunks.push(part);
  }
  return chunks;
}

interface ModelFrame {
  start: number;
  end: number;
}

/** The framing rule over the whole stream: complete frames in order, then the first over-limit prefix (or -1). */
function model(stream: Uint8Array, maxFrame: number): { frames: ModelFrame[]; badAt: number } {
  const dv = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  const frames: ModelFrame[] = [];
  let at = 0;
  while (stream.length - at >= CONTROL_LENGTH_PREFIX) {
    const length = dv.getUint32(at, true);
    if (length > maxFrame) return { frames, badAt: at };
    if (stream.length - at - CONTROL_LENGTH_PREFIX < length) break;
    frames.push({ start: at + CONTROL_LENGTH_PREFIX, end: at + CONTROL_LENGTH_PREFIX + length });
    at += CONTROL_LENGTH_PREFIX + length;
  }
  return { frames, badAt: -1 };
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The body of an encoded frame (without its length prefix). */
function bodyOf(frame: Uint8Array): Uint8Array {
  return frame.subarray(CONTROL_LENGTH_PREFIX);
}

function hasBom(b: Uint8Array): boolean {
  return b.length >= 3 && b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf;
}

/** Reads a u16-length string as the decoder does, keeping its raw bytes for the round trip. */
function stringField(r: ControlReader, body: Uint8Array, what: string): { text: string; bom: boolean } {
  const at = body.length - r.remaining;
  const text = r.string(what);
  const raw = body.subarray(at + 2, body.length - r.remaining);
  return { text, bom: hasBom(raw) };
}

/** Runs `body` through the decoder of its tag on either side; checks what it accepts. */
export function decodeBody(ctx: CaseContext, rng: Rng, body: Uint8Array): void {
  const r = ctx.attempt('ControlReader', () => new ControlReader(body));
  if (r === undefined) return;
  const codes = ctx.codes.length;
  const findings = ctx.findings.length;
  ctx.check(body[0] === CONTROL_VERSION, 'ControlReader', `accepted version ${body[0]}`);
  decodeTag(ctx, rng, body, r);
  if (ctx.codes.length === codes && ctx.findings.length === findings)
    ctx.tally(`accepted ${TAGS.includes(r.tag) ? tagName(r.tag) : 'unknown tags'}`);
}

function decodeTag(ctx: CaseContext, rng: Rng, body: Uint8Array, r: ControlReader): void {
  switch (r.tag) {
    case Tag.HELLO:
      ctx.attempt('decode HELLO', () => {
        const flags = r.u32('flags');
        const name = stringField(r, body, 'clientName');
        r.end();
        if (!name.bom) {
          const again = new ControlWriter(Tag.HELLO).u32(flags).string(name.text).finish();
          ctx.check(
            equalBytes(bodyOf(again), body),
            'decode HELLO',
            'an accepted HELLO does not re-encode to its bytes',
          );
        }
      });
      return;
    case Tag.SUBSCRIBE:
    case Tag.UNSUBSCRIBE: {
      const maxItems = rng.pick([Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 0, 1, 4, 1000]);
      const decoded = ctx.attempt('decodeFilterRequest', () => decodeFilterRequest(r, maxItems));
      if (decoded === undefined) return;
      const { requestId, delta } = decoded;
      let bytes = 0;
      for (const list of [delta.keys, delta.groups]) {
        ctx.check(list.length <= maxItems, 'decodeFilterRequest', `${list.length} items over maxItems=${maxItems}`);
        for (const k of list) {
          bytes += k.length;
          ctx.check(k.length >= 1 && k.length <= MAX_KEY_LENGTH, 'decodeFilterRequest', `a key of ${k.length} bytes`);
        }
      }
      ctx.check(
        bytes + delta.kinds.length <= body.length,
        'decodeFilterRequest',
        () => `decoded ${bytes + delta.kinds.length} bytes out of a ${body.length}-byte body`,
      );
      ctx.check(
        delta.kinds.every((k) => Number.isInteger(k) && k >= 0 && k <= 255),
        'decodeFilterRequest',
        'a kind outside 0..255',
      );
      const again = ctx.attempt('encodeFilterRequest', () => encodeFilterRequest(r.tag, requestId, delta));
      if (again !== undefined)
        ctx.check(
          equalBytes(bodyOf(again), body),
          'decodeFilterRequest',
          'an accepted SUBSCRIBE does not re-encode to its bytes',
        );
      // The sender's path for an accepted request.
      ctx.attempt('SubscriptionFilter', () => {
        const f = new SubscriptionFilter();
        f.add(delta);
        const m = new MessageKey();
        for (const k of delta.keys.slice(0, 8)) {
          m.set(k, null);
          ctx.check(f.matches('filtered', 1, m), 'SubscriptionFilter', 'a subscribed key does not match');
        }
        m.set(rng.bytes(33), rng.bytes(33));
        f.matches('filtered', 1, m);
        if (r.tag === Tag.UNSUBSCRIBE) f.remove(delta);
      });
      return;
    }
    case Tag.READY:
      ctx.attempt('decode READY', () => {
        const ids = [r.u32('consumerId'), r.u32('idleTimeoutMs'), r.u32('capacity')];
        const strings = [
          stringField(r, body, 'ringName'),
          stringField(r, body, 'ringDir'),
          stringField(r, body, 'blobStore'),
          stringField(r, body, 'blobDir'),
        ];
        r.end();
        if (strings.some((s) => s.bom)) return;
        const w = new ControlWriter(Tag.READY).u32(ids[0]).u32(ids[1]).u32(ids[2]);
        for (const s of strings) w.string(s.text);
        ctx.check(equalBytes(bodyOf(w.finish()), body), 'decode READY', 'an accepted READY does not re-encode');
      });
      return;
    case Tag.ACK:
      ctx.attempt('decode ACK', () => {
        r.u32('requestId');
        r.end();
      });
      return;
    case Tag.REFUSED:
    case Tag.EVICTED:
      ctx.attempt('decode verdict', () => {
        r.string('reason');
        r.string('message');
      });
      return;
    case Tag.PING:
    case Tag.BYE:
    case Tag.CLOSING:
      ctx.attempt('decode empty', () => r.end());
      return;
    default:
      // An unknown tag: any sequence of reads must stay in bounds.
      ctx.attempt('random reads', () => {
        for (let n = rng.range(1, 8); n > 0; n--) {
          const before = r.remaining;
          switch (rng.int(6)) {
            case 0:
              r.u8();
              break;
            case 1:
              r.u16();
              break;
            case 2:
              r.u32();
              break;
            case 3: {
              const b = r.bytes();
              ctx.check(b.length <= before - 2, 'random reads', 'bytes() returned more than the body had');
              break;
            }
            case 4:
              r.string();
              break;
            default:
              r.end();
          }
          ctx.check(
            r.remaining >= 0 && r.remaining <= before,
            'random reads',
            `remaining went ${before} -> ${r.remaining}`,
          );
        }
      });
  }
}

/** One case: split the stream, compare with the model, decode every body. */
export function runCase(ctx: CaseContext, rng: Rng): void {
  const maxFrame = rng.pick(SPLITTER_LIMITS);
  const stream = streamFor(rng, maxFrame);
  ctx.input = stream;
  ctx.detail = `maxFrame=${maxFrame}`;
  const chunks = chunksOf(rng, stream);
  const expected = model(stream, maxFrame);
  const sut = new ControlSplitter(maxFrame);
  let received = 0;
  let next = 0; // next model frame to be emitted
  const bodies: Uint8Array[] = [];
  for (const chunk of chunks) {
    received += chunk.length;
    const mustThrow = expected.badAt >= 0 && expected.badAt + CONTROL_LENGTH_PREFIX <= received;
    let out: Uint8Array[] | undefined;
    let threw = false;
    try {
      out = sut.push(chunk);
    } catch (err) {
      threw = true;
      ctx.caught('ControlSplitter.push', err);
    }
    if (!ctx.check(threw === mustThrow, 'ControlSplitter.push', () => `threw=${threw}, model says ${mustThrow}`))
      return;
    if (threw || out === undefined) break;
    let endOfLast = next > 0 ? expected.frames[next - 1].end : 0;
    for (const body of out) {
      const f = expected.frames[next++];
      if (!ctx.check(f !== undefined && f.end <= received, 'ControlSplitter.push', 'emitted a frame the model has not'))
        return;
      if (!ctx.check(equalBytes(body, stream.subarray(f.start, f.end)), 'ControlSplitter.push', 'a body differs'))
        return;
      endOfLast = f.end;
      bodies.push(body);
    }
    ctx.check(
      next >= expected.frames.length || expected.frames[next].end > received,
      'ControlSplitter.push',
      'held back a complete frame',
    );
    ctx.check(sut.buffered === received - endOfLast, 'ControlSplitter.buffered', () => {
      return `buffered ${sut.buffered}, model says ${received - endOfLast}`;
    });
    ctx.check(sut.buffered <= CONTROL_LENGTH_PREFIX - 1 + maxFrame, 'ControlSplitter.buffered', () => {
      return `buffered ${sut.buffered} bytes with maxFrame=${maxFrame}`;
    });
  }
  ctx.tally('bodies', bodies.length);
  for (const body of bodies) decodeBody(ctx, rng, body);
  // Now and then the reader straight over the raw stream (no framing) too.
  if (stream.length > 0 && rng.chance(0.2)) decodeBody(ctx, rng, stream.subarray(rng.int(Math.min(stream.length, 8))));
}

export function run(options: RunOptions): TargetResult {
  const sut = new Run(NAME, options, DEFAULT_CASES);
  options.watchdog?.target(NAME);
  for (const index of sut.indices()) {
    const ctx = sut.begin(index);
    runCase(ctx, caseRng(options.seed, index));
    sut.end(ctx);
  }
  options.watchdog?.idle();
  return resultOf(sut);
}
