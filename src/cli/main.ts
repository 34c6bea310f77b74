#!/usr/bin/env node
/**
 * The `shmbus` command.
 *
 *   npx shmbus bench [--quick] [--json] [--runs N] [--filter REGEX]
 *   npx shmbus clean [--dir DIR] [--dry-run] [--json]
 *   npx shmbus help
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cleanStale } from '../segment/clean.js';

const usage = `usage: shmbus <command> [options]

commands:
  bench [--quick] [--json] [--runs N] [--filter REGEX]
        shmbus against the hardware floor (C programs) and Node's IPC peers
        (unix socket, child_process IPC, worker MessageChannel, zeromq), in one run
  clean [--dir DIR] [--dry-run] [--json]
        remove stale shmbus files (every process that had them is gone) from DIR
        (default $SHMBUS_DIR, else /dev/shm); reports what it removed and kept
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

function main(argv: string[]): number {
  const [command, ...rest] = argv;
  switch (command) {
    case 'bench':
      return runBench(rest);
    case 'clean':
      return clean(rest);
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

process.exitCode = main(process.argv.slice(2));
