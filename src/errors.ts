/**
 * Every error shmbus throws is a ShmError with a stable `code` (documented in
 * docs/errors.md). Subclasses group the families so callers can `instanceof` a family or
 * switch on `code`. Messages carry the offending values; native (errno) failures keep the
 * Node-shaped system error as `cause`.
 *
 * Expected outcomes on hot paths (full, empty) are return values, never throws.
 */
import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';

export const ErrorCode = {
  /** The native addon could not be loaded (not built, wrong platform). */
  NATIVE_UNAVAILABLE: 'SHM_ERR_NATIVE_UNAVAILABLE',
  /** A name that cannot map to a file (empty, '/', too long, bad characters). */
  INVALID_NAME: 'SHM_ERR_INVALID_NAME',
  /** An option or argument outside its documented range. */
  INVALID_ARGUMENT: 'SHM_ERR_INVALID_ARGUMENT',
  /** No segment of that name exists. */
  NOT_FOUND: 'SHM_ERR_NOT_FOUND',
  /** A segment of that name exists and its owner is alive. */
  EXISTS: 'SHM_ERR_EXISTS',
  /** The segment exists but its creator did not finish initialising it in time. */
  NOT_READY: 'SHM_ERR_NOT_READY',
  /** The segment was written by an incompatible layout version. */
  VERSION_MISMATCH: 'SHM_ERR_VERSION_MISMATCH',
  /** The segment is of another kind (e.g. not a channel). */
  KIND_MISMATCH: 'SHM_ERR_KIND_MISMATCH',
  /** The segment's parameters differ from what the opener required. */
  INCOMPATIBLE: 'SHM_ERR_INCOMPATIBLE',
  /** The file is shorter than its header says (or than any header). */
  TRUNCATED: 'SHM_ERR_TRUNCATED',
  /** A header field, counter or record holds a value that cannot be valid. */
  CORRUPT: 'SHM_ERR_CORRUPT',
  /** The role (e.g. the consumer end) is already held by a live process. */
  BUSY: 'SHM_ERR_BUSY',
  /** The filesystem behind the segment directory is full (ENOSPC at creation). */
  NO_SPACE: 'SHM_ERR_NO_SPACE',
  /** The process may not open or create the segment (EACCES/EPERM). */
  PERMISSION: 'SHM_ERR_PERMISSION',
  /** Another system call failed; `cause` holds the system error. */
  SYSTEM: 'SHM_ERR_SYSTEM',
  /** A frame larger than the channel's maximum frame length. */
  TOO_LARGE: 'SHM_ERR_TOO_LARGE',
  /** claim/commit/abort called out of order. */
  CLAIM_STATE: 'SHM_ERR_CLAIM_STATE',
  /** Another receive or wait is already pending on this end (one at a time). */
  PENDING: 'SHM_ERR_PENDING',
  /** A wait ran past its deadline. */
  TIMEOUT: 'SHM_ERR_TIMEOUT',
  /** This end was closed; it can no longer be used. */
  CLOSED: 'SHM_ERR_CLOSED',
  /** The peer process died (its liveness lock is gone) without closing. */
  PEER_DEAD: 'SHM_ERR_PEER_DEAD',
  /** The peer closed its end (e.g. the consumer went away while the producer sends). */
  PEER_CLOSED: 'SHM_ERR_PEER_CLOSED',
  /** A control-plane message broke the protocol (bad length, version, tag or body). */
  PROTOCOL: 'SHM_ERR_PROTOCOL',
  /** Refused: a fan-out sender (maximum consumers, uid not allowed, shutting down) or a daemon with maxClients live clients. */
  REFUSED: 'SHM_ERR_REFUSED',
  /** The sender evicted this consumer (its ring was full, it went silent, or it broke the protocol). */
  EVICTED: 'SHM_ERR_EVICTED',
  /** The connection to the sender was lost (sender exited or crashed) and no reconnect is configured or possible. */
  DISCONNECTED: 'SHM_ERR_DISCONNECTED',
  /** The daemon's handler threw while serving this request; the message is the daemon's. */
  REMOTE: 'SHM_ERR_REMOTE',
  /** A blob store needs a new chunk but maxChunks chunk files are alive; nothing was written. */
  FULL: 'SHM_ERR_FULL',
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface ShmErrorOptions {
  cause?: unknown;
  /** Extra structured fields (name, path, values) exposed on the error. */
  details?: Record<string, unknown>;
}

/** Base class of every shmbus error. */
export class ShmError extends Error {
  readonly code: ErrorCodeValue;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCodeValue, message: string, options: ShmErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details ?? {};
  }
}

/** Bad arguments, options or names, rejected at the public boundary. */
export class ShmArgumentError extends ShmError {}

/** A segment could not be created or opened as asked (missing, taken, wrong version, corrupt, ...). */
export class ShmSegmentError extends ShmError {}

/** A system call failed (no space, permission, other errno); `cause` is the Node-shaped system error. */
export class ShmSystemError extends ShmError {
  get errno(): number | undefined {
    return (this.cause as { errno?: number } | undefined)?.errno;
  }
  get syscall(): string | undefined {
    return (this.cause as { syscall?: string } | undefined)?.syscall;
  }
}

/** A frame or claim was refused by the channel (too large, claim order). */
export class ShmFrameError extends ShmError {}

/** A wait ran past its deadline. */
export class ShmTimeoutError extends ShmError {}

/** This end, or the peer's end, is closed or dead. */
export class ShmStateError extends ShmError {}

/** Wraps a Node-shaped system error from the addon into the matching ShmError. */
function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

/** The free space of the directory of `path` (a segment file), for NO_SPACE messages. */
function freeSpaceOf(path: unknown): { text: string; details: Record<string, unknown> } {
  if (typeof path !== 'string') return { text: '', details: {} };
  const dir = dirname(path);
  try {
    const st = statfsSync(dir);
    const free = st.bavail * st.bsize;
    const total = st.blocks * st.bsize;
    return {
      text: `; ${dir} has ${mib(free)} free of ${mib(total)}`,
      details: { dir, freeBytes: free, totalBytes: total },
    };
  } catch {
    return { text: `; directory ${dir}`, details: { dir } };
  }
}

export function fromSystemError(err: unknown, what: string, details: Record<string, unknown> = {}): ShmError {
  if (err instanceof ShmError) return err;
  const code = (err as { code?: string } | undefined)?.code;
  const message = (err as Error | undefined)?.message ?? String(err);
  switch (code) {
    case 'ENOENT':
      return new ShmSegmentError(ErrorCode.NOT_FOUND, `${what}: not found (${message})`, { cause: err, details });
    case 'EEXIST':
      return new ShmSegmentError(ErrorCode.EXISTS, `${what}: already exists (${message})`, { cause: err, details });
    case 'ENOSPC': {
      const space = freeSpaceOf(details.path);
      return new ShmSystemError(
        ErrorCode.NO_SPACE,
        `${what}: no space left for the segment (${message})${space.text}; free some or raise its size (docker: --shm-size)`,
        { cause: err, details: { ...details, ...space.details } },
      );
    }
    case 'ENOMEM':
      return new ShmSystemError(
        ErrorCode.NO_SPACE,
        `${what}: not enough memory or address space (${message}); use a smaller segment`,
        { cause: err, details },
      );
    case 'EMFILE':
    case 'ENFILE':
      return new ShmSystemError(
        ErrorCode.SYSTEM,
        `${what}: out of file descriptors (${message}); raise the limit (ulimit -n) or close unused segments`,
        { cause: err, details },
      );
    case 'EACCES':
    case 'EPERM':
      return new ShmSystemError(ErrorCode.PERMISSION, `${what}: permission denied (${message})`, {
        cause: err,
        details,
      });
    case 'SHM_ERR_NATIVE_UNAVAILABLE':
      return new ShmSystemError(ErrorCode.NATIVE_UNAVAILABLE, message, { cause: err, details });
    default:
      return new ShmSystemError(ErrorCode.SYSTEM, `${what}: ${message}`, { cause: err, details });
  }
}
