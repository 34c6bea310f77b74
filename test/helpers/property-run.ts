/**
 * Runs a fast-check property reproducibly: the seed comes from testSeed() (SHMBUS_SEED, else
 * the clock) and every failure message starts with it. Replay a failure with
 * `SHMBUS_SEED=<seed>`; add `SHMBUS_PATH=<path>` (printed by fast-check as `path`) and
 * `--test-name-pattern=<that test>` to run only the shrunk counterexample (a path belongs to
 * one property).
 *
 * ```ts
 * assertProperty(fc.property(fc.nat(), (n) => n >= 0), { numRuns: 200 });
 * ```
 */
import fc from 'fast-check';
import { testSeed } from './prng.js';

export interface PropertyRunOptions {
  /** Generated cases (keep a file under ~10 s). */
  numRuns: number;
}

export function assertProperty<Ts>(property: fc.IProperty<Ts>, options: PropertyRunOptions): void {
  const seed = testSeed();
  const path = process.env.SHMBUS_PATH;
  try {
    fc.assert(property, {
      seed,
      numRuns: options.numRuns,
      includeErrorInReport: true,
      ...(path !== undefined ? { path, endOnFailure: true } : {}),
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`seed ${seed} (replay with SHMBUS_SEED=${seed}): ${message}`, { cause: err });
  }
}

/** The first index where `actual` and `expected` differ, or -1 when they are equal (lengths included). */
export function firstDifference(actual: Uint8Array, expected: Uint8Array): number {
  const n = Math.min(actual.length, expected.length);
  for (let i = 0; i < n; i++) if (actual[i] !== expected[i]) return i;
  return actual.length === expected.length ? -1 : n;
}
