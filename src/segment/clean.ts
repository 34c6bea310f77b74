/**
 * Finds and removes stale shmbus files in a segment directory: segments whose every process
 * is provably gone, files of creations that died half-way, blob-store chunks whose store is
 * gone, and the unix sockets of dead fan-out senders (each sender registers its socket in a
 * `shmbus.sender.<hash>` segment: layout/sender.ts). Nothing a live process holds is touched.
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
import { lstatSync, readdirSync, unlinkSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { Kind, kindName, OWNER_ROLE } from '../layout/segment.js';
import {
  SENDER_SEGMENT_LENGTH,
  SOCKET_PATH_LENGTH_OFFSET,
  SOCKET_PATH_OFFSET,
  SOCKET_PATH_ROOM,
} from '../layout/sender.js';
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
  /** A fan-out sender's registration: the socket it served. */
  socket?: string;
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
    const base = { kind: header.kind, bytes, ownerPid: header.ownerPid, socket: header.socket };
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

function readHeaderOf(fd: number, bytes: number): { kind: string; ownerPid: number; socket?: string } {
  if (bytes < HEADER_BYTES) return { kind: 'truncated', ownerPid: 0 };
  const n = native();
  const length = Math.min(bytes, SENDER_SEGMENT_LENGTH);
  const [buffer, handle] = n.map(fd, length, false);
  try {
    const dv = new DataView(buffer);
    const magic = new Uint8Array(buffer, 0, 6);
    if (String.fromCharCode(...magic) !== 'SHMBUS') return { kind: 'not a shmbus segment', ownerPid: 0 };
    const kind = dv.getUint32(12, true);
    const ownerPid = dv.getUint32(32, true);
    if (kind !== Kind.SENDER || length < SENDER_SEGMENT_LENGTH) return { kind: kindName(kind), ownerPid };
    // Only an absolute path that fits its room; anything else is not trusted as a socket to remove.
    const pathLength = dv.getUint32(SOCKET_PATH_LENGTH_OFFSET, true);
    if (pathLength < 2 || pathLength >= SOCKET_PATH_ROOM) return { kind: kindName(kind), ownerPid };
    const socket = new TextDecoder().decode(new Uint8Array(buffer, SOCKET_PATH_OFFSET, pathLength));
    return { kind: kindName(kind), ownerPid, socket: isAbsolute(socket) ? socket : undefined };
  } finally {
    n.unmap(handle, buffer);
  }
}

/**
 * Removes the socket a dead sender served, if it still is a socket nobody listens on (a new
 * sender may have bound the same path since: then it stays).
 */
function removeStaleSocket(path: string, dryRun: boolean): { removed: boolean; reason: string } {
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    return { removed: false, reason: 'already gone' };
  }
  if (!st.isSocket()) return { removed: false, reason: 'not a socket: left alone' };
  const n = native();
  try {
    n.closeFd(n.unixConnect(path));
    return { removed: false, reason: 'a process listens on it' };
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== 'ECONNREFUSED') return { removed: false, reason: `cannot probe it (${code ?? String(err)})` };
  }
  if (dryRun) return { removed: true, reason: 'its sender is gone and nobody listens on it' };
  try {
    unlinkSync(path);
    return { removed: true, reason: 'its sender is gone and nobody listens on it' };
  } catch (err) {
    return { removed: false, reason: `cannot remove it (${(err as { code?: string }).code ?? String(err)})` };
  }
}

/**
 * Removes the stale shmbus files of `dir` (default: $SHMBUS_DIR, else /dev/shm) and reports
 * what it removed and what it kept. `dryRun` reports without removing.
 */
export function cleanStale(options: { dir?: string; dryRun?: boolean; prefix?: string } = {}): CleanReport {
  const dir = segmentDir(options.dir);
  const report: CleanReport = { dir, removed: [], kept: [] };
  // `prefix` (internal): only files whose name starts with it (a sender sweeps dead senders' rings).
  const prefix = FILE_PREFIX + (options.prefix ?? '');
  let entries: string[];
  try {
    entries = readdirSync(dir).filter((f) => f.startsWith(prefix));
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
    if (removedEntry !== null) {
      report.removed.push(removedEntry);
      if (p.socket !== undefined) {
        const socket = removeStaleSocket(p.socket, options.dryRun === true);
        if (socket.removed)
          report.removed.push({
            file: p.socket,
            kind: 'socket',
            bytes: 0,
            ownerPid: p.ownerPid,
            reason: socket.reason,
          });
        else if (socket.reason !== 'already gone') report.kept.push({ file: p.socket, reason: socket.reason });
      }
    } else {
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
