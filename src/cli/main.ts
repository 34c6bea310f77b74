#!/usr/bin/env node
/**
 * The `shmbus` command.
 *
 *   npx shmbus bench [--quick] [--json] [--runs N] [--filter REGEX]
 *   npx shmbus help
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const usage = `usage: shmbus <command> [options]

commands:
  bench [--quick] [--json] [--runs N] [--filter REGEX]
        shmbus against the hardware floor (C programs) and Node's IPC peers
        (unix socket, child_process IPC, worker MessageChannel, zeromq), in one run
  help  this text
`;

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
