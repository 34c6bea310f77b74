#!/usr/bin/env node
/**
 * The `shmbus` command.
 *
 *   npx shmbus bench [--quick] [--json] [--runs N] [--filter REGEX]
 *   npx shmbus ls [--dir DIR] [--json]
 *   npx shmbus inspect <name> [--dir DIR] [--json]
 *   npx shmbus top [--dir DIR] [--interval MS] [--once] [--json]
 *   npx shmbus clean [--dir DIR] [--dry-run] [--json]
 *   npx shmbus demo [--seconds N] [--consumers K] [--rate R|max] [--json] [--no-live] [--no-compare]
 *   npx shmbus help
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { inspectSegment, listSegments, type SegmentInfo } from '../inspect/inspect.js';
import { type Sample, sample, type TopRow, topRows } from '../inspect/top.js';
import { cleanStale } from '../segment/clean.js';
import { DEMO_USAGE, demo } from './demo.js';

const usage = `usage: shmbus <command> [options]

commands:
  bench [--quick] [--json] [--runs N] [--filter REGEX]
        shmbus against the hardware floor (C programs) and Node's IPC peers
        (unix socket, child_process IPC, worker MessageChannel, zeromq), in one run
  ls [--dir DIR] [--json]
        every shmbus segment of DIR (default $SHMBUS_DIR, else /dev/shm): name, kind,
        size, owner pid, alive or dead, and a summary (fill, peers, counters)
  inspect <name> [--dir DIR] [--json]
        one segment's header, parameters and counters, decoded: ring positions, fill and
        frames in flight per priority class; a fan-out sender's consumers (filter, ring lag,
        latency, evictions); a daemon's clients, command queues and state version; a
        session's or hub's slots per state, owner and size class; a blob store's chunks,
        entries, acknowledgements and ages
  top [--dir DIR] [--interval MS] [--once] [--json]
        every segment of DIR live, refreshed every MS (default 1000): fill, frames/s and
        bytes/s (from counter deltas), drops (full, evictions), end-to-end latency where a
        fan-out consumer publishes it; q or Ctrl-C quits. --once: one sample (two reads MS
        apart) and exit; not a terminal: one plain snapshot per interval; --json: one JSON
        document per sample
  clean [--dir DIR] [--dry-run] [--json]
        remove stale shmbus files (every process that had them is gone) from DIR
        (default $SHMBUS_DIR, else /dev/shm); reports what it removed and kept
${DEMO_USAGE}
  help  this text
`;

function clean(args: string[]): number {
  let dir: string | undefined;
  let dryRun = false;
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--dir' && i + 1 < args.length) dir = args[++i];
    else if (a === '--dry-run') dryRun = true;
    else if (a === '--json') json = true;
    else {
      process.stderr.write(`shmbus clean: unknown option ${JSON.stringify(a)}\n\n${usage}`);
      return 2;
    }
  }
  const report = cleanStale({ dir, dryRun });
  if (json) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
    return 0;
  }
  const verb = dryRun ? 'would remove' : 'removed';
  for (const r of report.removed)
    process.stdout.write(
      `${verb} ${r.file} (${r.kind}, ${r.bytes} B${r.ownerPid > 0 ? `, owner pid ${r.ownerPid}` : ''}): ${r.reason}\n`,
    );
  for (const k of report.kept) process.stdout.write(`kept ${k.file}: ${k.reason}\n`);
  const bytes = report.removed.reduce((a, r) => a + r.bytes, 0);
  process.stdout.write(
    `${report.dir}: ${verb} ${report.removed.length} file(s), ${bytes} B; kept ${report.kept.length}\n`,
  );
  return 0;
}

/** Parses `--dir DIR`, `--json` and the positional arguments; null (after printing why) on a bad option. */
function parseCommon(command: string, args: string[]): { dir?: string; json: boolean; rest: string[] } | null {
  let dir: string | undefined;
  let json = false;
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--dir' && i + 1 < args.length) dir = args[++i];
    else if (a === '--json') json = true;
    else if (a.startsWith('-')) {
      process.stderr.write(`shmbus ${command}: unknown option ${JSON.stringify(a)}\n\n${usage}`);
      return null;
    } else rest.push(a);
  }
  return { dir, json, rest };
}

function human(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows
    .map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  '))
    .join('\n');
}

function ls(args: string[]): number {
  const o = parseCommon('ls', args);
  if (o === null) return 2;
  if (o.rest.length > 0) {
    process.stderr.write(`shmbus ls: unexpected argument ${JSON.stringify(o.rest[0])}\n\n${usage}`);
    return 2;
  }
  const segments = listSegments({ dir: o.dir });
  if (o.json) {
    process.stdout.write(`${JSON.stringify(segments)}\n`);
    return 0;
  }
  if (segments.length === 0) {
    process.stdout.write('no shmbus segments\n');
    return 0;
  }
  const rows = [['NAME', 'KIND', 'SIZE', 'PID', 'STATE', 'SUMMARY']];
  for (const s of segments)
    rows.push([
      s.name,
      s.kind,
      human(s.bytes),
      s.ownerPid === 0 ? '-' : String(s.ownerPid),
      s.problem !== undefined ? '?' : s.alive ? 'alive' : 'dead',
      s.problem ?? s.summary,
    ]);
  process.stdout.write(`${table(rows)}\n`);
  return 0;
}

function describe(value: unknown, indent: string): string[] {
  if (typeof value === 'string') return [value];
  if (value === null || typeof value !== 'object') return [`${JSON.stringify(value)}`];
  const lines: string[] = [];
  if (Array.isArray(value)) {
    if (value.every((v) => v === null || typeof v !== 'object')) return [JSON.stringify(value)];
    for (const [i, v] of value.entries()) {
      const inner = describe(v, `${indent}  `);
      lines.push(`${indent}[${i}]${inner.length === 1 ? ` ${inner[0]}` : ''}`, ...(inner.length === 1 ? [] : inner));
    }
    return ['', ...lines];
  }
  for (const [k, v] of Object.entries(value)) {
    const inner = describe(v, `${indent}  `);
    if (inner.length === 1) lines.push(`${indent}${k}: ${inner[0]}`);
    else lines.push(`${indent}${k}:`, ...inner.filter((l) => l !== ''));
  }
  return ['', ...lines];
}

function inspect(args: string[]): number {
  const o = parseCommon('inspect', args);
  if (o === null) return 2;
  if (o.rest.length !== 1) {
    process.stderr.write(`shmbus inspect: give one segment name (see shmbus ls)\n\n${usage}`);
    return 2;
  }
  const info: SegmentInfo | null = inspectSegment(o.rest[0], { dir: o.dir });
  if (info === null) {
    process.stderr.write(`shmbus inspect: no segment ${JSON.stringify(o.rest[0])} (see shmbus ls)\n`);
    return 1;
  }
  if (o.json) {
    process.stdout.write(`${JSON.stringify(info)}\n`);
    return 0;
  }
  const head = {
    name: info.name,
    file: info.file,
    kind: info.kind,
    size: `${info.bytes} B`,
    owner: info.ownerPid === 0 ? '-' : `pid ${info.ownerPid} (${info.alive ? 'alive' : 'dead'})`,
    created: info.createdAtMs > 0 ? new Date(info.createdAtMs).toISOString() : '-',
    ...(info.problem !== undefined ? { problem: info.problem } : {}),
  };
  process.stdout.write(
    `${describe({ ...head, ...info.details }, '')
      .filter((l) => l !== '')
      .join('\n')}\n`,
  );
  return 0;
}

function rateText(v: number | null, unit: string): string {
  if (v === null) return '-';
  if (unit === 'B') return `${human(Math.round(v))}/s`;
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M/s`;
  if (v >= 1e4) return `${(v / 1e3).toFixed(1)}k/s`;
  return `${Math.round(v)}/s`;
}

function latencyText(p50: number | null, p99: number | null): string {
  if (p50 === null || p99 === null) return '-';
  const t = (ns: number) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(1)}ms` : `${Math.round(ns / 1e3)}us`);
  return `${t(p50)}/${t(p99)}`;
}

/** The `top` table: a header line and one row per segment. */
function topTable(rows: TopRow[], intervalMs: number, dir: string | undefined): string {
  const when = new Date().toISOString().replace('T', ' ').slice(0, 19);
  const head = `shmbus top - ${when} UTC - ${dir ?? process.env.SHMBUS_DIR ?? '/dev/shm'} - ${rows.length} segment(s), rates over ${intervalMs} ms`;
  if (rows.length === 0) return `${head}\nno shmbus segments`;
  const cells = [['NAME', 'KIND', 'PID', 'STATE', 'FILL', 'FRAMES/S', 'BYTES/S', 'DROPS', 'LAT p50/p99', 'PEERS']];
  for (const r of rows)
    cells.push([
      r.name,
      r.kind,
      r.pid === 0 ? '-' : String(r.pid),
      r.problem !== undefined ? '?' : r.alive ? 'alive' : 'dead',
      r.fill === null ? '-' : `${Math.round(r.fill * 100)}%`,
      rateText(r.framesPerSec, 'frames'),
      rateText(r.bytesPerSec, 'B'),
      r.drops === null ? '-' : String(r.drops),
      latencyText(r.latencyP50Ns, r.latencyP99Ns),
      r.problem ?? r.peers,
    ]);
  return `${head}\n${table(cells)}`;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * `shmbus top`: samples every interval and redraws. On a terminal: the alternate screen,
 * cleared and redrawn each time, q or Ctrl-C (or SIGINT/SIGTERM) restores the terminal and
 * exits. Not a terminal: one plain snapshot per interval until killed. --once: two samples
 * an interval apart, one table (or JSON document), exit.
 */
async function top(args: string[]): Promise<number> {
  let dir: string | undefined;
  let json = false;
  let once = false;
  let intervalMs = 1000;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--dir' && i + 1 < args.length) dir = args[++i];
    else if (a === '--json') json = true;
    else if (a === '--once') once = true;
    else if (a === '--interval' && i + 1 < args.length) {
      intervalMs = Number(args[++i]);
      if (!Number.isInteger(intervalMs) || intervalMs < 10 || intervalMs > 3_600_000) {
        process.stderr.write(
          `shmbus top: --interval takes milliseconds in 10..3600000, got ${JSON.stringify(args[i])}\n`,
        );
        return 2;
      }
    } else {
      process.stderr.write(`shmbus top: unknown option ${JSON.stringify(a)}\n\n${usage}`);
      return 2;
    }
  }
  const render = (previous: Sample, current: Sample): string => {
    const rows = topRows(previous, current);
    if (json) return JSON.stringify({ atMs: current.atMs, intervalMs: current.atMs - previous.atMs, rows });
    return topTable(rows, current.atMs - previous.atMs, dir);
  };
  let previous = sample({ dir });
  if (once) {
    await sleep(intervalMs);
    process.stdout.write(`${render(previous, sample({ dir }))}\n`);
    return 0;
  }
  const tty = process.stdout.isTTY === true && !json;
  let stop: (code: number) => void = () => {};
  const stopped = new Promise<number>((resolve) => {
    stop = resolve;
  });
  const restore = () => {
    if (!tty) return;
    // Show the cursor, leave the alternate screen, give the terminal back its line discipline.
    process.stdout.write('\x1b[?25h\x1b[?1049l');
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
  };
  process.once('SIGINT', () => stop(0));
  process.once('SIGTERM', () => stop(0));
  process.stdout.on('error', () => stop(0)); // e.g. EPIPE: the reader went away
  if (tty) {
    process.stdout.write('\x1b[?1049h\x1b[?25l');
    if (process.stdin.isTTY) {
      process.stdin.setRawMode(true);
      process.stdin.resume();
      process.stdin.on('data', (key: Buffer) => {
        // q, Q, Ctrl-C (raw mode delivers it as a byte, not as SIGINT), Ctrl-D
        if (key.includes(0x71) || key.includes(0x51) || key.includes(0x03) || key.includes(0x04)) stop(0);
      });
    }
  }
  let last = '';
  const draw = (text: string) => {
    if (!tty) {
      process.stdout.write(`${text}\n${json ? '' : '\n'}`);
      return;
    }
    const width = process.stdout.columns || 200;
    const height = process.stdout.rows || 50;
    const lines = text.split('\n').slice(0, height - 1);
    lines.push('q: quit');
    process.stdout.write(`\x1b[H\x1b[2J${lines.map((l) => l.slice(0, width)).join('\r\n')}`);
  };
  if (tty) {
    draw(`shmbus top - sampling for ${intervalMs} ms...`);
    process.stdout.on('resize', () => draw(last));
  }
  let timer: NodeJS.Timeout | null = null;
  const tick = () => {
    const current = sample({ dir });
    last = render(previous, current);
    previous = current;
    draw(last);
    timer = setTimeout(tick, intervalMs);
  };
  timer = setTimeout(tick, intervalMs);
  try {
    return await stopped;
  } finally {
    if (timer !== null) clearTimeout(timer);
    restore();
    process.stdin.pause();
  }
}

/** The benchmark package ships in the repository (bench/), not in the published library. */
function runBench(args: string[]): number {
  const script = fileURLToPath(new URL('../../../bench/run.mjs', import.meta.url));
  if (!existsSync(script)) {
    process.stderr.write(
      'shmbus bench: the benchmark package is not here (it lives in the repository, bench/). ' +
        'Clone the repository, run `npm install`, then `npx shmbus bench`.\n',
    );
    return 2;
  }
  const result = spawnSync(process.execPath, [script, ...args], { stdio: 'inherit' });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function main(argv: string[]): number | Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'bench':
      return runBench(rest);
    case 'clean':
      return clean(rest);
    case 'ls':
      return ls(rest);
    case 'inspect':
      return inspect(rest);
    case 'top':
      return top(rest);
    case 'demo':
      return demo(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(usage);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`shmbus: unknown command ${JSON.stringify(command)}\n\n${usage}`);
      return 2;
  }
}

const code = main(process.argv.slice(2));
if (typeof code === 'number') process.exitCode = code;
else
  code.then(
    (c) => {
      process.exitCode = c;
    },
    (err) => {
      process.stderr.write(`shmbus: ${(err as Error).stack ?? err}\n`);
      process.exitCode = 1;
    },
  );
