/**
 * The fan-out control protocol's codec (layout in src/layout/fanout.ts): length-prefixed
 * frames on a unix stream socket, built with ControlWriter, parsed with ControlReader, and
 * cut out of the byte stream by ControlSplitter.
 *
 * ```ts
 * const frame = new ControlWriter(Tag.SUBSCRIBE).u32(7).u16(0).u32(0).u32(0).finish();
 * const splitter = new ControlSplitter(MAX_CONTROL_FRAME);
 * for (const body of splitter.push(frame)) {
 *   const r = new ControlReader(body);   // r.tag === Tag.SUBSCRIBE
 *   r.u32();                            // 7
 * }
 * ```
 * Hostile input: every read is bounds-checked and every failure is a ShmStateError with
 * code SHM_ERR_PROTOCOL naming what was wrong; nothing here throws anything else. Not
 * hot-path code (control messages are rare): it allocates freely.
 */
import { ErrorCode, ShmStateError } from '../errors.js';
import { CONTROL_LENGTH_PREFIX, CONTROL_VERSION, MAX_KEY_LENGTH, Tag } from '../layout/fanout.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
const TAG_NAMES = new Map<number, string>(Object.entries(Tag).map(([k, v]) => [v, k]));

export function tagName(tag: number): string {
  return TAG_NAMES.get(tag) ?? `unknown(${tag})`;
}

export function protocolError(message: string, details: Record<string, unknown> = {}): ShmStateError {
  return new ShmStateError(ErrorCode.PROTOCOL, message, { details });
}

/** Builds one control frame: length prefix, version, tag, then the fields in call order. */
export class ControlWriter {
  private buf = new Uint8Array(64);
  private dv = new DataView(this.buf.buffer);
  private at = CONTROL_LENGTH_PREFIX;

  constructor(readonly tag: number) {
    this.u8(CONTROL_VERSION).u8(tag);
  }

  private room(n: number): void {
    if (this.at + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.at + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.at));
    this.buf = next;
    this.dv = new DataView(next.buffer);
  }

  u8(v: number): this {
    this.room(1);
    this.dv.setUint8(this.at, v);
    this.at += 1;
    return this;
  }

  u16(v: number): this {
    this.room(2);
    this.dv.setUint16(this.at, v, true);
    this.at += 2;
    return this;
  }

  u32(v: number): this {
    this.room(4);
    this.dv.setUint32(this.at, v, true);
    this.at += 4;
    return this;
  }

  /** u16 length + bytes. */
  bytes(v: Uint8Array): this {
    if (v.length > 0xffff) throw protocolError(`a byte string of ${v.length} bytes does not fit a u16 length`);
    this.u16(v.length);
    this.room(v.length);
    this.buf.set(v, this.at);
    this.at += v.length;
    return this;
  }

  /** u16 length + UTF-8. */
  string(v: string): this {
    return this.bytes(encoder.encode(v));
  }

  /** The finished frame (length prefix filled in). */
  finish(): Uint8Array {
    this.dv.setUint32(0, this.at - CONTROL_LENGTH_PREFIX, true);
    return this.buf.slice(0, this.at);
  }
}

/** Reads one control frame body (version, tag, fields); every read is bounds-checked. */
export class ControlReader {
  readonly tag: number;
  private readonly dv: DataView;
  private at = 0;

  constructor(private readonly body: Uint8Array) {
    this.dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
    if (body.length < 2) throw protocolError(`control frame of ${body.length} bytes is shorter than version + tag`);
    const version = this.u8();
    if (version !== CONTROL_VERSION)
      throw protocolError(`control protocol version ${version}; this shmbus speaks version ${CONTROL_VERSION}`, {
        version,
        expected: CONTROL_VERSION,
      });
    this.tag = this.u8();
  }

  private need(n: number, what: string): void {
    if (this.at + n > this.body.length)
      throw protocolError(
        `${tagName(this.tag)} frame truncated: ${what} needs ${n} bytes at offset ${this.at}, frame has ${this.body.length}`,
      );
  }

  u8(what = 'u8'): number {
    this.need(1, what);
    return this.dv.getUint8(this.at++);
  }

  u16(what = 'u16'): number {
    this.need(2, what);
    const v = this.dv.getUint16(this.at, true);
    this.at += 2;
    return v;
  }

  u32(what = 'u32'): number {
    this.need(4, what);
    const v = this.dv.getUint32(this.at, true);
    this.at += 4;
    return v;
  }

  /** A u16-length byte string (a copy). */
  bytes(what = 'bytes'): Uint8Array {
    const n = this.u16(what);
    this.need(n, what);
    const v = this.body.slice(this.at, this.at + n);
    this.at += n;
    return v;
  }

  string(what = 'string'): string {
    const b = this.bytes(what);
    try {
      return decoder.decode(b);
    } catch {
      throw protocolError(`${tagName(this.tag)} frame: ${what} is not valid UTF-8`);
    }
  }

  /** Bytes not read yet. */
  get remaining(): number {
    return this.body.length - this.at;
  }

  /** Throws unless every byte was consumed (trailing garbage is a protocol error). */
  end(): void {
    if (this.at !== this.body.length)
      throw protocolError(`${tagName(this.tag)} frame has ${this.body.length - this.at} unexpected trailing bytes`);
  }
}

/** A subscription change as it travels: opt-in kinds, keys, groups. */
export interface FilterDelta {
  kinds: number[];
  keys: Uint8Array[];
  groups: Uint8Array[];
}

/** SUBSCRIBE / UNSUBSCRIBE frame. */
export function encodeFilterRequest(tag: number, requestId: number, delta: FilterDelta): Uint8Array {
  const w = new ControlWriter(tag).u32(requestId).u16(delta.kinds.length);
  for (const k of delta.kinds) w.u8(k);
  w.u32(delta.keys.length);
  for (const k of delta.keys) w.bytes(k);
  w.u32(delta.groups.length);
  for (const g of delta.groups) w.bytes(g);
  return w.finish();
}

/** Parses a SUBSCRIBE / UNSUBSCRIBE body (after the tag); `maxItems` bounds each list. */
export function decodeFilterRequest(r: ControlReader, maxItems: number): { requestId: number; delta: FilterDelta } {
  const requestId = r.u32('requestId');
  const kindCount = r.u16('kindCount');
  const kinds: number[] = [];
  for (let i = 0; i < kindCount; i++) kinds.push(r.u8('kind'));
  const list = (what: string): Uint8Array[] => {
    const count = r.u32(`${what}Count`);
    // Each item takes at least 3 bytes (u16 length + 1): a larger count is a lie, refused
    // before anything is allocated for it.
    if (count * 3 > r.remaining)
      throw protocolError(`${tagName(r.tag)} frame lists ${count} ${what}s in ${r.remaining} bytes`);
    if (count > maxItems)
      throw protocolError(`${tagName(r.tag)} frame lists ${count} ${what}s; the limit is ${maxItems}`, {
        count,
        limit: maxItems,
      });
    const out: Uint8Array[] = [];
    for (let i = 0; i < count; i++) {
      const b = r.bytes(what);
      if (b.length === 0 || b.length > MAX_KEY_LENGTH)
        throw protocolError(`${tagName(r.tag)} frame: a ${what} of ${b.length} bytes (1..${MAX_KEY_LENGTH} allowed)`);
      out.push(b);
    }
    return out;
  };
  const keys = list('key');
  const groups = list('group');
  r.end();
  return { requestId, delta: { kinds, keys, groups } };
}

/**
 * Cuts a byte stream into control frame bodies (version + tag + body). A length prefix over
 * `maxFrame` throws SHM_ERR_PROTOCOL at once, before any of that frame is buffered.
 */
export class ControlSplitter {
  /** Buffered bytes are buf[start..end); the buffer grows by doubling, so a large frame
   * arriving in many small reads costs linear time, not a re-copy per read. */
  private buf: Uint8Array = new Uint8Array(0);
  private start = 0;
  private end = 0;

  constructor(private readonly maxFrame: number) {}

  push(chunk: Uint8Array): Uint8Array[] {
    this.append(chunk);
    const frames: Uint8Array[] = [];
    const buf = this.buf;
    while (this.end - this.start >= CONTROL_LENGTH_PREFIX) {
      const at = this.start;
      const length = (buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16) | (buf[at + 3] << 24)) >>> 0;
      if (length > this.maxFrame)
        throw protocolError(`control frame length ${length} is over the limit of ${this.maxFrame} bytes`, {
          length,
          limit: this.maxFrame,
        });
      if (this.end - at - CONTROL_LENGTH_PREFIX < length) break;
      frames.push(buf.slice(at + CONTROL_LENGTH_PREFIX, at + CONTROL_LENGTH_PREFIX + length));
      this.start = at + CONTROL_LENGTH_PREFIX + length;
    }
    if (this.start === this.end) {
      this.start = this.end = 0;
      // Do not keep a big frame's buffer for a connection that now sends small ones.
      if (this.buf.length > 1 << 16) this.buf = new Uint8Array(0);
    }
    return frames;
  }

  private append(chunk: Uint8Array): void {
    const held = this.end - this.start;
    if (this.end + chunk.length > this.buf.length) {
      if (held + chunk.length <= this.buf.length) {
        // Room once the consumed prefix is dropped.
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        let size = Math.max(64, this.buf.length);
        while (size < held + chunk.length) size *= 2;
        const next = new Uint8Array(size);
        next.set(this.buf.subarray(this.start, this.end));
        this.buf = next;
      }
      this.start = 0;
      this.end = held;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  /** Bytes of an incomplete frame still buffered. */
  get buffered(): number {
    return this.end - this.start;
  }
}
