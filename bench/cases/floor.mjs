/**
 * The physical floor: C programs (bench/c, built into bench/build by build-floor.mjs) that do
 * what shmbus does with no JS in the way. Cross-process round trips by busy-spin, futex and
 * eventfd, and memcpy bandwidth per frame size.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { SIZES } from '../lib/case.mjs';

const buildDir = fileURLToPath(new URL('../build/', import.meta.url));
const DEADLINE_MS = 60_000; // every program finishes in a few seconds; a hang is killed

/** Runs bench/build/<name> and parses the one JSON line it prints. */
function runProgram(name, args) {
  const file = buildDir + name;
  if (!existsSync(file)) {
    return Promise.reject(new Error(`${file} is missing: run \`npm install\` (or \`node build-floor.mjs\`) in bench/`));
  }
  return new Promise((resolve, reject) => {
    // timeout kills the program with SIGTERM; the forked C child dies with it (PR_SET_PDEATHSIG).
    execFile(file, args.map(String), { timeout: DEADLINE_MS }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${name} ${args.join(' ')} failed: ${err.message} ${stderr}`.trim()));
      else resolve(JSON.parse(stdout));
    });
  });
}

function pingPong(id, program, iterations, title) {
  return {
    id,
    unit: 'ns',
    title,
    run: async (ctx) => {
      const { p50, p99, p999, n } = await runProgram(program, [ctx.scale(iterations)]);
      return { value: p50, p99, p999, n };
    },
  };
}

/** The C memcpy floor for `size` bytes (id memcpy.<label>); blob.mjs adds sizes of its own. */
export function memcpyCase(label, size = SIZES[label]) {
  return {
    id: `memcpy.${label}`,
    unit: 'GB/s',
    title: `C memcpy, ${label} B, in cache (best of 5)`,
    run: async (ctx) => {
      // Calibrate with ~16 MiB per repetition, then size the run so its 5 repetitions take ~0.3 s.
      const probe = await runProgram('memcpy', [size, Math.ceil(2 ** 24 / size)]);
      const iterations = ctx.scale(Math.ceil((probe.gbps * 1e9 * (0.3 / 5)) / size));
      const { gbps } = await runProgram('memcpy', [size, iterations]);
      return { value: gbps, note: `${iterations} copies per repetition` };
    },
  };
}

export default [
  pingPong('rtt.floor.spin.c', 'spin-pingpong', 200_000, 'C busy-spin ping-pong, two processes (hardware floor)'),
  pingPong('rtt.floor.futex.c', 'futex-pingpong', 20_000, 'C futex ping-pong, two processes, always parked'),
  pingPong('rtt.floor.eventfd.c', 'eventfd-pingpong', 20_000, 'C eventfd ping-pong, two processes, blocking'),
  ...Object.keys(SIZES).map((label) => memcpyCase(label)),
];
