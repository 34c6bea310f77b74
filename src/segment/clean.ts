/**
 * Finds and removes stale shmbus files in a segment directory: segments whose every process
 * is provably gone, files of creations that died half-way, and blob-store chunks whose store
 * is gone. Nothing a live process holds is touched.
 *
 * ```ts
 * const report = cleanStale();              // the default directory ($SHMBUS_DIR or /dev/shm)
 * report.removed;                           // [{ file, kind, bytes, ownerPid, reason }]
 * report.kept;                              // [{ file, reason }]: alive, not ours, or not shmbus
 * ```
 * "Provably gone" is the liveness rule of every segment (layout/segment.ts): each role holds
 * an OFD lock on one byte of the file while its process lives (the kernel drops it when the
 * process dies, even as a zombie or in another pid namespace). A file is stale when its owner
 * lock is free and no other role byte is locked either. The check holds the owner lock while
 * it unlinks, and unlinks only the inode it checked, so a creator that just replaced the file
 * is never hit. Blob-store chunk files live and die with their store's control segment.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { kindName, OWNER_ROLE } from '../layout/segment.js';
import { native } from '../native/binding.js';
import { FILE_PREFIX, segmentDir } from './names.js';

export interface CleanedFile {
  file: string;
  kind: string;
  bytes: number;
  ownerPid: number;
  reason: string;
}

export interface KeptFile {
  file: string;
  reason: string;
}

export interface CleanReport {
  dir: string;
  removed: CleanedFile[];
  kept: KeptFile[];
}

/** Role bytes checked besides the owner's: every kind uses fewer (a daemon: 1 + 1024 clients). */
const ROLE_BYTES = 1100;
const HEADER_BYTES = 128;
const CHUNK_FILE = /^(.*)\.b[0-9]+(~.*)?$/;

interface Probe {
  alive: boolean;
  reason: string;
  kind: string;
  bytes: number;
  ownerPid: number;
}

/** Opens `path`, takes its owner lock if free and checks every role byte; calls `act` while holding it. */
function probe(path: string, act: ((p: Probe) => boolean) | null): Probe | null {
  const n = native();
  let fd: number;
  try {
    fd = n.openFile(path, true);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT') return null;
    return { alive: true, reason: `cannot open it (${code ?? String(err)})`, kind: '?', bytes: 0, ownerPid: 0 };
  }
  try {
    const [bytes, dev, ino] = n.fstat(fd);
    const header = readHeaderOf(fd, bytes);
    const base = { kind: header.kind, bytes, ownerPid: header.ownerPid };
    // A file under its final name always has a header (creation links it only when complete):
    // one without is somebody else's, not ours to remove. Half-made ones carry a `~`.
    if (header.kind === 'truncated' || header.kind === 'not a shmbus segment')
      if (!path.includes('~')) return { ...base, alive: true, reason: `${header.kind}: left alone` };
    if (!n.lockTry(fd, OWNER_ROLE))
      return { ...base, alive: true, reason: `its owner (pid ${header.ownerPid}) is alive` };
    for (let role = 1; role <= ROLE_BYTES; role++)
      if (n.lockHeld(fd, role)) return { ...base, alive: true, reason: `a peer (role ${role}) is alive` };
    const p: Probe = { ...base, alive: false, reason: 'every process that had it open is gone' };
    if (act !== null) {
      const st = n.stat(path);
      if (st === null || st[1] !== dev || st[2] !== ino) return { ...p, alive: true, reason: 'replaced meanwhile' };
      if (!act(p)) return { ...p, alive: true, reason: 'kept' };
    }
    return p;
  } finally {
    n.closeFd(fd);
  }
}

function readHeaderOf(fd: number, bytes: number): { kind: string; ownerPid: number } {
  if (bytes < HEADER_BYTES) return { kind: 'truncated', ownerPid: 0 };
  const n = native();
  const [buffer, handle] = n.map(fd, HEADER_BYTES, false);
  try {
    const dv = new DataView(buffer);
    const magic = new Uint8Array(buffer, 0, 6);
    if (String.fromCharCode(...magic) !== 'SHMBUS') return { kind: 'not a shmbus segment', ownerPid: 0 };
    return { kind: kindName(dv.getUint32(12, true)), ownerPid: dv.getUint32(32, true) };
  } finally {
    n.unmap(handle, buffer);
  }
}

/**
 * Removes the stale shmbus files of `dir` (default: $SHMBUS_DIR, else /dev/shm) and reports
 * what it removed and what it kept. `dryRun` reports without removing.
 */
export function cleanStale(options: { dir?: string; dryRun?: boolean } = {}): CleanReport {
  const dir = segmentDir(options.dir);
  const report: CleanReport = { dir, removed: [], kept: [] };
  let entries: string[];
  try {
    entries = readdirSync(dir).filter((f) => f.startsWith(FILE_PREFIX));
  } catch {
    return report;
  }
  const n = native();
  const remove = (path: string) => () => {
    if (options.dryRun) return true;
    return n.unlink(path);
  };
  // Chunks last: their store's control file decides for them.
  const chunks = entries.filter((f) => CHUNK_FILE.test(f) && entries.includes(f.replace(CHUNK_FILE, '$1')));
  const liveStores = new Set<string>();
  for (const file of entries) {
    if (chunks.includes(file)) continue;
    const path = join(dir, file);
    let removedEntry: CleanedFile | null = null;
    const p = probe(path, (q) => {
      if (!remove(path)()) return false;
      removedEntry = { file, kind: q.kind, bytes: q.bytes, ownerPid: q.ownerPid, reason: q.reason };
      return true;
    });
    if (p === null) continue;
    if (removedEntry !== null) report.removed.push(removedEntry);
    else {
      report.kept.push({ file, reason: p.reason });
      liveStores.add(file);
    }
  }
  for (const file of chunks) {
    const store = file.replace(CHUNK_FILE, '$1');
    const path = join(dir, file);
    if (liveStores.has(store)) {
      report.kept.push({ file, reason: `its blob store ${store} is alive` });
      continue;
    }
    // The store is gone: nobody can reach this chunk by name any more (a process that still
    // maps it keeps its pages until it unmaps), whoever created it.
    const st = n.stat(path);
    if (st === null) continue;
    if (remove(path)())
      report.removed.push({
        file,
        kind: 'blob chunk',
        bytes: st[0],
        ownerPid: 0,
        reason: `its blob store ${store} is gone`,
      });
    else report.kept.push({ file, reason: 'could not remove it' });
  }
  return report;
}
