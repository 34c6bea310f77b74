/**
 * The watchdog's thread (see watchdog.ts): every 200 ms it compares the heartbeat with the
 * clock; past `hangMs` without a beat it writes a hang finding to stdout (fd 1, synchronously)
 * and kills the whole process, since the main thread may be stuck in a loop that never yields.
 */
import { writeSync } from 'node:fs';
import { workerData } from 'node:worker_threads';
import {
  BEAT_TIME_OFFSET,
  CASE_WORD,
  OP_LENGTH_WORD,
  OP_OFFSET,
  TARGET_LENGTH_WORD,
  TARGET_OFFSET,
} from './watchdog.js';

const { sab, hangMs, seed } = workerData as { sab: SharedArrayBuffer; hangMs: number; seed: number };
const i32 = new Int32Array(sab, 0, 4);
const f64 = new Float64Array(sab, BEAT_TIME_OFFSET, 1);
const decoder = new TextDecoder();

setInterval(() => {
  const last = f64[0];
  if (last === 0 || Date.now() - last < hangMs) return;
  const index = Atomics.load(i32, CASE_WORD);
  const op = decoder.decode(new Uint8Array(sab, OP_OFFSET, Atomics.load(i32, OP_LENGTH_WORD)).slice());
  const target = decoder.decode(new Uint8Array(sab, TARGET_OFFSET, Atomics.load(i32, TARGET_LENGTH_WORD)).slice());
  const finding = {
    finding: true,
    target,
    seed,
    case: index,
    op,
    kind: 'hang',
    error: `no progress for ${Date.now() - last} ms (limit ${hangMs} ms) in case ${index} at ${op || '(between operations)'}`,
    signature: `${target}|${op}|hang`,
    replay: `node dist/test/fuzz/run.js --target ${target} --seed ${seed} --replay ${index}`,
  };
  writeSync(1, `${JSON.stringify(finding)}\n`);
  process.kill(process.pid, 'SIGKILL');
}, 200);
