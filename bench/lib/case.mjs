/**
 * The contract every benchmark case follows.
 *
 * A case module (bench/cases/*.mjs) default-exports an array of cases:
 *   { id: 'rtt.uds.64', unit: 'ns' | 'msg/s' | 'GB/s' | '%', title: 'unix socket ping-pong, 64 B',
 *     run: async (ctx) => Result }
 * ctx: { quick: boolean, scale(n): n or a quick fraction of it, log(msg): progress line on stderr }
 * Result: { value: number, p99?: number, p999?: number, n?: number (samples), note?: string }
 * - Latency cases (unit 'ns'): value is the p50 round trip of ALL samples (no outlier
 *   deletion), p99 and p999 too; n is the sample count.
 * - Throughput cases: value in msg/s or GB/s of payload actually copied out by the consumer
 *   (unless the id says "inplace").
 * Every case runs its two sides as two real processes (worker MessageChannel, the in-process
 * reference, is the only exception) and cleans up everything it started or created, even on error.
 */

/** Percentiles of all samples (sorted copy), nearest-rank. */
export function percentiles(samples) {
  const sorted = Float64Array.from(samples).sort();
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
  return { p50: at(0.5), p99: at(0.99), p999: at(0.999), n: sorted.length };
}

/** A latency Result from round-trip samples in ns. */
export function latencyResult(samplesNs) {
  const { p50, p99, p999, n } = percentiles(samplesNs);
  return { value: p50, p99, p999, n };
}

export const SIZES = { 16: 16, 64: 64, '1k': 1024, '64k': 64 * 1024, '1m': 1024 * 1024 };
