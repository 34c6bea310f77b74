/**
 * The bounded subset of the codec fuzzers (test/fuzz/control-codec.ts, frame-decode.ts):
 * 20,000 hostile inputs each, seeded (SHMBUS_SEED replays a run; the seed is in every
 * failure message). No addon, no files: a few seconds. The stress run is
 * `node dist/test/fuzz/run.js --cases 1000000`.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as controlCodec from '../fuzz/control-codec.js';
import * as frameDecode from '../fuzz/frame-decode.js';
import type { TargetResult } from '../fuzz/harness.js';
import { testSeed } from '../helpers/prng.js';

const CASES = 20_000;
const seed = testSeed();

function findingsOf(result: TargetResult): string {
  return result.findings.map((f) => JSON.stringify(f)).join('\n');
}

describe(`codec fuzzing, ${CASES} cases per target (seed ${seed})`, () => {
  test('the control codec frames every stream as the reference model and throws nothing but SHM_ERR_ errors', () => {
    const sut = controlCodec.run({ seed, cases: CASES });
    assert.equal(sut.report.cases, CASES);
    assert.equal(sut.report.findings, 0, `seed ${seed}: ${sut.report.findings} findings\n${findingsOf(sut)}`);
    // The generator must reach the decoders, not only the framing errors.
    const counts = (sut.report.notes?.counts ?? {}) as Record<string, number>;
    assert.ok((counts['accepted SUBSCRIBE'] ?? 0) > 0, `no SUBSCRIBE was ever accepted: ${JSON.stringify(counts)}`);
    assert.ok((counts['accepted HELLO'] ?? 0) > 0, `no HELLO was ever accepted: ${JSON.stringify(counts)}`);
  });

  test('the generic and Solana frame decoders accept only consistent frames and throw nothing but SHM_ERR_ errors', () => {
    const sut = frameDecode.run({ seed, cases: CASES });
    assert.equal(sut.report.cases, CASES);
    assert.equal(sut.report.findings, 0, `seed ${seed}: ${sut.report.findings} findings\n${findingsOf(sut)}`);
    assert.ok(sut.report.accepted > 0 && sut.report.typedErrors > 0, JSON.stringify(sut.report));
  });
});
