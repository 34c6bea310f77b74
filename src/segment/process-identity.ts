/**
 * Who a process is: pid plus its start time (clock ticks since boot, /proc/<pid>/stat field
 * 22). A pid alone is reused; the pair is not. Used for the header's owner fields and for
 * diagnostics; liveness itself is decided by file locks (segment/segment.ts).
 */
import { readFileSync } from 'node:fs';

/** Start time of `pid` in clock ticks since boot, or -1 if the process does not exist. */
export function processStartTime(pid: number): number {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return -1;
  }
  // Field 2 (comm) is in parentheses and may contain spaces: split after its last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state), so field 22 is rest[19].
  const ticks = Number(rest[19]);
  return Number.isFinite(ticks) ? ticks : -1;
}

let selfStart: number | undefined;

export function selfStartTime(): number {
  selfStart ??= processStartTime(process.pid);
  return selfStart;
}
