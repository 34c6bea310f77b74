/**
 * Named segments: create, open, map, liveness, unlink. A Segment is one mapped file with
 * the common header (layout/segment.ts) and the per-role liveness locks.
 *
 * ```ts
 * const seg = Segment.create('orders', Kind.CHANNEL, length, (views) => { ...write params... });
 * const other = Segment.open('orders', Kind.CHANNEL);   // another process
 * other.roleAlive(OWNER_ROLE);                           // true while the creator lives
 * ```
 * Creation is atomic: the file is created under a temporary name, sized and reserved with
 * posix_fallocate (a full tmpfs fails here, never with SIGBUS later), locked, initialised,
 * published (version last), and only then linked to its name. An opener therefore never
 * sees a half-built segment made by this library; it still waits (bounded) on version 0
 * for peers written in other languages.
 *
 * Liveness: role r holds an OFD write lock on file byte r. The kernel releases it when the
 * holder's fd closes, which happens when the process dies, whatever its pid does later.
 *
 * Concurrency: a Segment object belongs to one thread. create/open/close block briefly
 * (filesystem calls); nothing here is on a hot path.
 */
import { randomBytes } from 'node:crypto';
import { linkSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { type SegmentViews, viewsOf } from '../core/spsc-ring.js';
import { STOP_AT, stopAt } from '../core/test-hooks.js';
import { ErrorCode, fromSystemError, ShmArgumentError, ShmError, ShmSegmentError, ShmStateError } from '../errors.js';
import {
  checkHeader,
  HEADER_LENGTH,
  type HeaderFields,
  hasMagic,
  kindName,
  LAYOUT_VERSION,
  OWNER_ROLE,
  publishVersion,
  readHeader,
  writeHeader,
} from '../layout/segment.js';
import { type MappingHandle, native } from '../native/binding.js';
import { pendingPrefix, segmentDir, segmentPath, validateName } from './names.js';
import { selfStartTime } from './process-identity.js';

export interface SegmentOptions {
  /** Directory of segment files (default: $SHMBUS_DIR, else /dev/shm). */
  dir?: string;
  /** File mode of created segments (default 0o600: owner only). */
  mode?: number;
  /** open(): how long to wait for the file to appear (default 0: fail at once). */
  waitMs?: number;
  /** open(): how long to wait for a segment still initialising (default 1000). */
  readyTimeoutMs?: number;
}

function checkSegmentOptions(options: SegmentOptions): void {
  const { mode, waitMs, readyTimeoutMs } = options;
  if (mode !== undefined && (!Number.isInteger(mode) || mode < 0 || mode > 0o777))
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `mode must be a permission mode in 0..0o777, got ${mode}`);
  for (const [key, value] of [
    ['waitMs', waitMs],
    ['readyTimeoutMs', readyTimeoutMs],
  ] as const)
    if (value !== undefined && !(value >= 0))
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `${key} must be a number >= 0, got ${value}`);
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));
/** Blocks this thread for `ms` (only used while waiting for a file or a header). */
function sleepSync(ms: number): void {
  Atomics.wait(sleeper, 0, 0, ms);
}

export interface MappedViews extends SegmentViews {
  readonly dv: DataView;
}

export class Segment {
  readonly views: MappedViews;
  readonly header: HeaderFields;
  private handle: MappingHandle | null;
  private fd: number;
  private readonly roles = new Set<number>();

  private constructor(
    readonly name: string,
    readonly path: string,
    fd: number,
    readonly length: number,
    buffer: ArrayBuffer,
    handle: MappingHandle,
    readonly dev: number,
    readonly ino: number,
  ) {
    this.fd = fd;
    this.handle = handle;
    const base = viewsOf(buffer);
    this.views = { ...base, dv: new DataView(buffer) };
    this.header = readHeader(this.views.dv, this.views.i32);
  }

  get closed(): boolean {
    return this.handle === null;
  }

  /**
   * Creates segment `name` of `kind` and `length` bytes and takes its owner role.
   * `init` writes the kind's parameters and blocks (the header is written around it).
   * Replaces a segment of that name whose owner is provably dead; fails with
   * SHM_ERR_EXISTS when its owner is alive.
   */
  static create(
    name: string,
    kind: number,
    length: number,
    paramsLength: number,
    init: (views: MappedViews) => void,
    options: SegmentOptions = {},
  ): Segment {
    validateName(name);
    checkSegmentOptions(options);
    const path = segmentPath(name, options.dir);
    const dir = segmentDir(options.dir);
    removeAbandonedPending(dir, name);
    const temporary = join(dir, `${pendingPrefix(name)}${process.pid}.${randomBytes(6).toString('hex')}`);
    const n = native();
    let fd: number;
    try {
      fd = n.createFile(temporary, length, options.mode ?? 0o600);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT')
        throw new ShmSegmentError(
          ErrorCode.NOT_FOUND,
          `cannot create segment ${JSON.stringify(name)}: directory ${dir} does not exist`,
          {
            cause: err,
            details: { name, dir },
          },
        );
      throw fromSystemError(err, `create segment ${JSON.stringify(name)} at ${path} (${length} B)`, { name, path });
    }
    let mapping: [ArrayBuffer, MappingHandle] | undefined;
    try {
      if (!n.lockTry(fd, OWNER_ROLE)) throw new Error(`could not lock the new file ${temporary}`);
      mapping = n.map(fd, length, true);
      const buffer = mapping[0];
      const u8 = new Uint8Array(buffer);
      const dv = new DataView(buffer);
      const i32 = new Int32Array(buffer, 0, length >> 2);
      writeHeader(u8, dv, {
        kind,
        headerLength: HEADER_LENGTH,
        flags: 0,
        segmentLength: length,
        ownerPid: process.pid,
        ownerStart: Math.max(0, selfStartTime()),
        createdAtMs: Date.now(),
        paramsLength,
      });
      init({ ...viewsOf(buffer), dv });
      publishVersion(i32);
      if (STOP_AT !== null) stopAt('segment.before-link');
      linkIntoPlace(temporary, path, name);
      if (STOP_AT !== null) stopAt('segment.after-link');
      unlinkSync(temporary);
    } catch (err) {
      if (mapping) n.unmap(mapping[1], mapping[0]);
      n.closeFd(fd);
      try {
        unlinkSync(temporary);
      } catch {}
      if (err instanceof ShmError) throw err;
      throw fromSystemError(err, `create segment ${JSON.stringify(name)}`, { name, path });
    }
    const [, dev, ino] = n.fstat(fd);
    const seg = new Segment(name, path, fd, length, mapping[0], mapping[1], dev, ino);
    seg.roles.add(OWNER_ROLE);
    return seg;
  }

  /**
   * Opens segment `name`, which must be of `kind`, and validates its header. `via` opens
   * another path to the same file instead of the name's (`/proc/self/fd/N` for a file
   * descriptor received over a socket: a new open file description, so this process's
   * liveness locks are its own); the name's path is still the one unlinkIfCurrent() checks.
   */
  static open(name: string, kind: number, options: SegmentOptions = {}, via?: string): Segment {
    validateName(name);
    checkSegmentOptions(options);
    const path = segmentPath(name, options.dir);
    const n = native();
    const deadline = Date.now() + (options.waitMs ?? 0);
    let fd: number;
    for (;;) {
      try {
        fd = n.openFile(via ?? path, true);
        break;
      } catch (err) {
        if ((err as { code?: string }).code === 'ENOENT' && Date.now() < deadline) {
          sleepSync(5);
          continue;
        }
        throw fromSystemError(err, `open segment ${JSON.stringify(name)} at ${path}`, { name, path });
      }
    }
    let mapping: [ArrayBuffer, MappingHandle] | undefined;
    try {
      const [size, dev, ino] = n.fstat(fd);
      if (size < HEADER_LENGTH)
        throw new ShmSegmentError(
          ErrorCode.TRUNCATED,
          `segment ${JSON.stringify(name)} is truncated: ${size} bytes, less than the ${HEADER_LENGTH}-byte header`,
          { details: { name, path, size } },
        );
      mapping = n.map(fd, size, true);
      const seg = new Segment(name, path, fd, size, mapping[0], mapping[1], dev, ino);
      seg.validate(kind, options.readyTimeoutMs ?? 1000);
      return seg;
    } catch (err) {
      if (mapping) n.unmap(mapping[1], mapping[0]);
      n.closeFd(fd);
      if (err instanceof ShmError) throw err;
      throw fromSystemError(err, `open segment ${JSON.stringify(name)}`, { name, path });
    }
  }

  private validate(kind: number, readyTimeoutMs: number): void {
    const { u8, dv, i32 } = this.views;
    const where = `segment ${JSON.stringify(this.name)} (${this.path})`;
    const details = { name: this.name, path: this.path };
    if (!hasMagic(u8)) {
      const found = Buffer.from(u8.subarray(0, 8)).toString('hex');
      throw new ShmSegmentError(ErrorCode.CORRUPT, `${where} is not a shmbus segment (bad magic: ${found})`, {
        details: { ...details, magic: found },
      });
    }
    let header = readHeader(dv, i32);
    const readyBy = Date.now() + readyTimeoutMs;
    while (header.version === 0 && Date.now() < readyBy) {
      sleepSync(2);
      header = readHeader(dv, i32);
    }
    if (header.version === 0)
      throw new ShmSegmentError(
        ErrorCode.NOT_READY,
        `${where} is still initialising after ${readyTimeoutMs} ms (creator pid ${header.ownerPid})`,
        { details: { ...details, ownerPid: header.ownerPid } },
      );
    if (header.version !== LAYOUT_VERSION)
      throw new ShmSegmentError(
        ErrorCode.VERSION_MISMATCH,
        `${where} has layout version ${header.version}; this shmbus reads version ${LAYOUT_VERSION}`,
        { details: { ...details, version: header.version, expected: LAYOUT_VERSION } },
      );
    if (header.kind !== kind)
      throw new ShmSegmentError(
        ErrorCode.KIND_MISMATCH,
        `${where} is a ${kindName(header.kind)} segment, not a ${kindName(kind)}`,
        { details: { ...details, kind: header.kind, expected: kind } },
      );
    const problems = checkHeader(header, this.length);
    if (problems.length > 0)
      throw new ShmSegmentError(ErrorCode.CORRUPT, `${where} has a corrupt header: ${problems.join('; ')}`, {
        details: { ...details, problems },
      });
    if (header.segmentLength > this.length)
      throw new ShmSegmentError(
        ErrorCode.TRUNCATED,
        `${where} is truncated: the header says ${header.segmentLength} bytes, the file has ${this.length}`,
        { details: { ...details, segmentLength: header.segmentLength, size: this.length } },
      );
    (this as { header: HeaderFields }).header = header;
  }

  private liveFd(): number {
    if (this.handle === null)
      throw new ShmStateError(ErrorCode.CLOSED, `segment ${JSON.stringify(this.name)} is closed`);
    return this.fd;
  }

  /** Takes role `role` (its liveness lock). False if a live process holds it. */
  tryAcquireRole(role: number): boolean {
    const ok = native().lockTry(this.liveFd(), role);
    if (ok) this.roles.add(role);
    return ok;
  }

  releaseRole(role: number): void {
    if (!this.roles.delete(role)) return;
    native().lockRelease(this.liveFd(), role);
  }

  holdsRole(role: number): boolean {
    return this.roles.has(role);
  }

  /** True if another open file description (a live process, or another thread) holds `role`. */
  roleAlive(role: number): boolean {
    if (this.roles.has(role)) return true;
    return native().lockHeld(this.liveFd(), role);
  }

  /** Unlinks the segment's name if it still refers to this file. True if removed. */
  unlinkIfCurrent(): boolean {
    const n = native();
    const st = n.stat(this.path);
    if (st === null || st[1] !== this.dev || st[2] !== this.ino) return false;
    return n.unlink(this.path);
  }

  /**
   * Makes the mapping read-only from byte `offset` to its end, so a stray write there kills
   * this process (SIGSEGV) instead of corrupting what other processes read. Readers use it
   * on the areas only the producer writes. False (and nothing changed) when `offset` is not
   * on a page boundary or past the end, or the segment is closed.
   */
  protectReadOnly(offset: number): boolean {
    const handle = this.handle;
    if (handle === null || offset % pageSize() !== 0 || offset >= this.length) return false;
    return native().protect(handle, offset, this.length - offset, false);
  }

  /**
   * Releases every role, detaches the views (they then read as length 0), unmaps and
   * closes the file. Idempotent. Does not unlink.
   */
  close(): void {
    const handle = this.handle;
    if (handle === null) return;
    this.handle = null;
    const n = native();
    n.unmap(handle, this.views.buffer as ArrayBuffer);
    this.roles.clear();
    n.closeFd(this.fd); // drops every OFD lock of this file description
    this.fd = -1;
  }
}

let page = 0;
/** The system's page size (what mprotect works in). */
export function pageSize(): number {
  if (page === 0) page = native().constants().PAGE_SIZE;
  return page;
}

/**
 * Links the fully initialised temporary file to its name. If the name exists and its
 * owner is provably dead (its lock is free), the stale file is removed first; if the owner
 * is alive, fails with SHM_ERR_EXISTS.
 */
function linkIntoPlace(temporary: string, path: string, name: string): void {
  for (let attempt = 0; attempt < 8; attempt++) {
    try {
      linkSync(temporary, path);
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err;
    }
    const owner = removeIfOwnerDead(path);
    if (owner !== null)
      throw new ShmSegmentError(
        ErrorCode.EXISTS,
        `segment ${JSON.stringify(name)} already exists at ${path} and its owner (pid ${owner}) is alive`,
        { details: { name, path, ownerPid: owner } },
      );
  }
  throw new ShmSegmentError(ErrorCode.EXISTS, `segment ${JSON.stringify(name)} keeps reappearing at ${path}`, {
    details: { name, path },
  });
}

/**
 * Removes `path` if no live process holds its owner lock. Returns null when the path is
 * gone (removed or never there), or the owner pid from the header when the owner is alive.
 * The remover holds the owner lock itself while it checks and unlinks, so two removers
 * cannot both act, and a live owner is never touched.
 */
export function removeIfOwnerDead(path: string): number | null {
  const n = native();
  let fd: number;
  try {
    // Writable: a write lock needs it (and unlinking another user's file fails anyway).
    fd = n.openFile(path, true);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return null;
    throw err;
  }
  try {
    if (!n.lockTry(fd, OWNER_ROLE)) return ownerPidOf(fd);
    const [, dev, ino] = n.fstat(fd);
    const st = n.stat(path);
    if (st !== null && st[1] === dev && st[2] === ino) n.unlink(path);
    return null;
  } finally {
    n.closeFd(fd);
  }
}

function ownerPidOf(fd: number): number {
  const n = native();
  const [size] = n.fstat(fd);
  if (size < HEADER_LENGTH) return 0;
  const [buffer, handle] = n.map(fd, HEADER_LENGTH, false);
  try {
    return readHeader(new DataView(buffer), new Int32Array(buffer)).ownerPid;
  } finally {
    n.unmap(handle, buffer);
  }
}

/** Removes temporary files of `name` left by creators that died mid-creation. */
function removeAbandonedPending(dir: string, name: string): void {
  const prefix = pendingPrefix(name);
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const entry of entries) if (entry.startsWith(prefix)) removeIfOwnerDead(join(dir, entry));
}
