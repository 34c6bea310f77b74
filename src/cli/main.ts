#!/usr/bin/env node
/**
 * The `shmbus` command.
 *
 *   npx shmbus bench [--quick] [--json] [--runs N] [--filter REGEX]
 *   npx shmbus ls [--dir DIR] [--json]
 *   npx shmbus inspect <name> [--dir DIR] [--json]
 *   npx shmbus clean [--dir DIR] [--dry-run] [--json]
 *   npx shmbus demo [--seconds N] [--consumers K] [--rate R|max] [--json] [--no-live] [--no-compare]
 *   npx shmbus help
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { inspectSegment, listSegments, type SegmentInfo } from '../inspect/inspect.js';
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
        one segment's header, parameters and counters, decoded
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
    process.stdout.write(`${verb} ${r.file} (${r.kind}, ${r.bytes} B, owner pid ${r.ownerPid}): ${r.reason}\n`);
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

void Promise.resolve(main(process.argv.slice(2))).then((code) => {
  process.exitCode = code;
});
