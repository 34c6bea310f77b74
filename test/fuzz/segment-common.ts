/**
 * What the segment targets (segment-channel, -session, -daemon, -blob) share: a private
 * directory under /dev/shm, a patcher that writes bytes into a live segment file through its
 * own file descriptor (pwrite: on tmpfs every mapping sees the write at once, exactly as if a
 * hostile or buggy peer process had stored them), regions of a layout to aim at, and the
 * loop that runs cases against a "world" (the segments and their ends) recreated every
 * CASES_PER_WORLD cases.
 *
 * ```ts
 * const patcher = new Patcher();
 * const regions: Region[] = [{ name: 'tail', path, start: 128, end: 140, weight: 3, limits: [ringLength] }];
 * const log = applyPatches(rng, regions, patcher);   // 1..4 writes; ['tail@132=ffffffff', ...]
 * ```
 * Patch values: interesting u32s (0, 1, 0x7fffffff, 0x80000000, 0xffffffff, ...), the region's
 * limits (ring length, capacity, slot count, file length, ...) -1 / +0 / +1, the current
 * value with bits flipped or nudged by +-1..16 (+-8 for ring positions), single bytes set to
 * 0x00 / 0xff / 0x7f / 0x80, and runs of random, zero or 0xff bytes. 80 % of offsets are
 * 4-byte aligned (the layouts are u32/i32 fields). Patches never change a file's length (a
 * peer that truncates a mapped file causes SIGBUS by design of mmap, not a parsing bug).
 *
 * Leak checks after each world is closed: the process's fds and its mappings of files in
 * the fuzz directory must come back to where they were.
 */
import {
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { CaseContext, type Run } from './harness.js';
import { caseRng, caseSeed, INTERESTING_U32, Rng } from './mutate.js';

/** Cases run against one world before it is closed and created afresh. */
export const CASES_PER_WORLD = 32;

let dir: string | null = null;

/** This process's fuzz directory under /dev/shm (created on first use, removed at exit). */
export function fuzzDir(): string {
  if (dir === null) {
    dir = mkdtempSync('/dev/shm/shmbus-fuzz-');
    const made = dir;
    process.on('exit', () => {
      try {
        rmSync(made, { recursive: true, force: true });
      } catch {}
    });
  }
  return dir;
}

/** A byte range of one file to aim patches at. */
export interface Region {
  name: string;
  path: string;
  start: number;
  /** Exclusive. */
  end: number;
  weight: number;
  /** Values that matter here (lengths, counts, positions): tried at -1 / +0 / +1. */
  limits?: readonly number[];
  /** Aim at multiples of 8 from `start` (record headers, positions). */
  stride8?: boolean;
}

/** Writes into segment files through its own descriptors (one per file, kept until close()). */
export class Patcher {
  private readonly fds = new Map<string, number>();

  private fd(path: string): number | null {
    let fd = this.fds.get(path);
    if (fd === undefined) {
      try {
        fd = openSync(path, 'r+');
      } catch {
        return null; // removed meanwhile (a freed chunk): nothing to patch
      }
      this.fds.set(path, fd);
    }
    return fd;
  }

  /** The bytes at [at, at + n) (fewer at the end of the file). */
  read(path: string, at: number, n: number): Uint8Array {
    const fd = this.fd(path);
    const out = new Uint8Array(n);
    if (fd === null) return out;
    const got = readSync(fd, out, 0, n, at);
    return out.subarray(0, got);
  }

  u32(path: string, at: number): number {
    const b = this.read(path, at, 4);
    return b.length < 4 ? 0 : (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  }

  /** Writes `bytes` at `at`, clipped so the file never grows. Returns the bytes written. */
  write(path: string, at: number, bytes: Uint8Array, fileLength: number): number {
    const fd = this.fd(path);
    if (fd === null || at >= fileLength) return 0;
    const n = Math.min(bytes.length, fileLength - at);
    return writeSync(fd, bytes, 0, n, at);
  }

  /** Forgets a file (it was removed) so a new file of the same name is reopened. */
  forget(path: string): void {
    const fd = this.fds.get(path);
    if (fd !== undefined) closeSync(fd);
    this.fds.delete(path);
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

function le32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

function fileLength(path: string, cache: Map<string, number>): number {
  let n = cache.get(path);
  if (n === undefined) {
    try {
      n = statSync(path).size;
    } catch {
      n = 0; // removed meanwhile: nothing to patch
    }
    cache.set(path, n);
  }
  return n;
}

/** The bytes of one patch at a region offset whose current u32 is `current`. */
function patchValue(rng: Rng, region: Region, current: number, length: number): Uint8Array {
  const r = rng.float();
  if (r < 0.3) return le32(rng.pick(INTERESTING_U32));
  if (r < 0.45) {
    const limits = [...(region.limits ?? []), length];
    return le32(rng.pick(limits) + rng.range(-1, 1));
  }
  if (r < 0.55) {
    let v = current;
    for (let k = rng.range(1, 3); k > 0; k--) v ^= 1 << rng.int(32);
    return le32(v);
  }
  if (r < 0.7) {
    const step = region.stride8 ? 8 * rng.range(1, 4) : rng.range(1, 16);
    return le32(current + (rng.chance(0.5) ? step : -step));
  }
  if (r < 0.8) return Uint8Array.of(rng.pick([0x00, 0xff, 0x7f, 0x80]));
  if (r < 0.9) return rng.bytes(rng.range(1, 16));
  return new Uint8Array(rng.range(1, 32)).fill(rng.chance(0.5) ? 0 : 0xff);
}

/** Writes 1..4 patches into the regions (chosen by weight); returns them as `region+offset=hex` for reports. */
export function applyPatches(
  rng: Rng,
  regions: readonly Region[],
  patcher: Patcher,
  count = rng.range(1, 4),
): string[] {
  const usable = regions.filter((r) => r.end > r.start && r.weight > 0);
  const log: string[] = [];
  if (usable.length === 0) return log;
  let total = 0;
  for (const r of usable) total += r.weight;
  const lengths = new Map<string, number>();
  for (let k = 0; k < count; k++) {
    let pick = rng.float() * total;
    let region = usable[usable.length - 1];
    for (const r of usable) {
      pick -= r.weight;
      if (pick < 0) {
        region = r;
        break;
      }
    }
    const span = region.end - region.start;
    let offset: number;
    if (region.stride8)
      offset = region.start + 8 * rng.int(Math.max(1, Math.floor(span / 8))) + (rng.chance(0.7) ? 0 : 4);
    else if (rng.chance(0.8)) offset = region.start + 4 * rng.int(Math.max(1, Math.floor(span / 4)));
    else offset = region.start + rng.int(span);
    const length = fileLength(region.path, lengths);
    const bytes = patchValue(rng, region, patcher.u32(region.path, offset), length);
    const written = patcher.write(region.path, offset, bytes, length);
    if (written > 0) log.push(`${region.name}@${offset}=${Buffer.from(bytes.subarray(0, written)).toString('hex')}`);
  }
  return log;
}

/** Open descriptors of this process. */
export function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

/** This process's mappings of files in `path` (a directory). */
export function mappingsUnder(path: string): number {
  const maps = readFileSync('/proc/self/maps', 'latin1');
  let n = 0;
  for (const line of maps.split('\n')) if (line.includes(path)) n++;
  return n;
}

/** A world: the segments of one target and the ends the cases act through. */
export interface World {
  /** Regions to patch now (positions move as the ends work, so computed per case; `patcher` reads current values). */
  regions(patcher: Patcher): Region[];
  /** Closes every end (errors are the world's to report through `ctx`). */
  close(ctx: CaseContext): Promise<void> | void;
}

export interface WorldTarget<W extends World> {
  create(rng: Rng, name: string, ctx: CaseContext): Promise<W | null> | W | null;
  /** Runs the operations of one case after the patches were written. */
  exercise(world: W, rng: Rng, ctx: CaseContext): Promise<void> | void;
}

let worldCounter = 0;

/**
 * Runs the cases of `run` against worlds of `target`: world w serves cases
 * [w * CASES_PER_WORLD, (w + 1) * CASES_PER_WORLD); each case writes its patches, then
 * exercises the world. A replay runs the replayed case's world from its first case.
 */
export async function runWorlds<W extends World>(run: Run, target: WorldTarget<W>, prefix: string): Promise<void> {
  const seed = run.options.seed;
  const replay = run.options.replay;
  const first = replay === undefined ? 0 : replay - (replay % CASES_PER_WORLD);
  const patcher = new Patcher();
  const dirPath = fuzzDir();
  let world: W | null = null;
  let worldIndex = -1;
  let patchesInWorld = 0;
  let baseline: { fds: number; maps: number } | null = null;
  let lastDetail = '';
  const closeWorld = async (index: number) => {
    const ctx = new CaseContext(run, index);
    run.watchdog?.beat(index, 'close world');
    if (world !== null) await world.close(ctx);
    run.absorb(ctx);
    world = null;
    patcher.close();
    const fds = openFds();
    const maps = mappingsUnder(dirPath);
    baseline ??= { fds, maps: 0 };
    // A leak stays: report it when it grows, not at every later world.
    if (maps > baseline.maps)
      run.finding(
        'leak',
        'world close',
        `${maps} mappings of closed segments are still mapped after world ${worldIndex} was closed (${baseline.maps} before)`,
        lastDetail,
      );
    if (fds > baseline.fds + 16)
      run.finding(
        'leak',
        'world close',
        `open fds grew from ${baseline.fds} to ${fds} by world ${worldIndex}`,
        lastDetail,
      );
    baseline.maps = Math.max(baseline.maps, maps);
    if (fds > baseline.fds + 16) baseline.fds = fds;
  };
  for (let index = first; replay !== undefined ? index <= replay : run.more(); index++) {
    const ctx = run.begin(index);
    const w = Math.floor(index / CASES_PER_WORLD);
    if (w !== worldIndex || world === null) {
      if (world !== null) await closeWorld(index);
      worldIndex = w;
      patchesInWorld = 0;
      const name = `${prefix}-${process.pid}-${++worldCounter}`;
      world = (await ctx.attemptAsync('create world', async () =>
        target.create(new Rng(caseSeed(seed ^ 0x5eed5eed, w)), name, ctx),
      )) as W | null;
      if (world === null || world === undefined) {
        world = null;
        run.end(ctx);
        continue;
      }
    }
    const rng = caseRng(seed, index);
    const current = world as W;
    const log = applyPatches(rng, current.regions(patcher), patcher);
    ctx.detail = `world ${w} (case ${index - w * CASES_PER_WORLD} of it, ${patchesInWorld} earlier patches): ${log.join(' ')}`;
    patchesInWorld += log.length;
    lastDetail = ctx.detail;
    ctx.input = null;
    await target.exercise(current, rng, ctx);
    run.end(ctx);
  }
  await closeWorld(first);
}

/** Picks `n` distinct-ish operations from a weighted table and runs them in order. */
export async function runOps<T>(
  rng: Rng,
  ops: ReadonlyArray<readonly [number, (t: T) => unknown]>,
  t: T,
  count = rng.range(2, 8),
): Promise<void> {
  let total = 0;
  for (const [w] of ops) total += w;
  for (let k = 0; k < count; k++) {
    let pick = rng.float() * total;
    for (const [w, op] of ops) {
      pick -= w;
      if (pick < 0) {
        await op(t);
        break;
      }
    }
  }
}

/** True if `view` lies inside [start, end) of `buffer`, with exactly `length` bytes when given. */
export function inside(view: Uint8Array, start: number, end: number, length?: number): boolean {
  return (
    view.byteOffset >= start && view.byteOffset + view.length <= end && (length === undefined || view.length === length)
  );
}
