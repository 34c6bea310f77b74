/**
 * A log-linear latency histogram (HdrHistogram-like, fixed memory): values in ns from 1 ns
 * to ~2^40 ns (18 min) in buckets of at most 1/16 (~6 %) relative width; percentiles within that error.
 *
 * ```ts
 * const h = new Histogram();
 * h.record(1500);
 * h.percentile(0.99);   // ~1500
 * h.snapshot();         // { count, min, max, mean, p50, p90, p99, p999 }
 * ```
 * One writer (the thread that records); record() allocates nothing.
 */

/** Values below 2^SUB_BITS are exact; above, each power of two splits into SUB/2 = 16 buckets (width <= 1/16 of the value). */
const SUB_BITS = 5;
const SUB = 1 << SUB_BITS;
const MAX_EXPONENT = 40;

export interface HistogramSnapshot {
  count: number;
  min: number;
  max: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
}

export class Histogram {
  private readonly counts = new Float64Array((MAX_EXPONENT + 1) * SUB);
  count = 0;
  min = Number.POSITIVE_INFINITY;
  max = 0;
  private sum = 0;

  private static indexOf(value: number): number {
    if (value < SUB) return value < 0 ? 0 : Math.floor(value);
    const exponent = Math.min(MAX_EXPONENT, Math.floor(Math.log2(value)) - SUB_BITS + 1);
    const sub = Math.min(SUB - 1, Math.floor(value / 2 ** exponent) - SUB / 2) + SUB / 2;
    return exponent * (SUB / 2) + sub;
  }

  private static lowerBound(index: number): number {
    if (index < SUB) return index;
    const exponent = Math.floor((index - SUB / 2) / (SUB / 2));
    const sub = index - exponent * (SUB / 2);
    return sub * 2 ** exponent;
  }

  record(value: number): void {
    const v = Math.max(value, 0);
    this.counts[Histogram.indexOf(v)]++;
    this.count++;
    this.sum += v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
  }

  /** The value at quantile q (0..1): the lower bound of the bucket that holds it, clamped to [min, max]. */
  percentile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(this.max, Math.max(this.min, Histogram.lowerBound(i)));
    }
    return this.max;
  }

  snapshot(): HistogramSnapshot {
    return {
      count: this.count,
      min: this.count === 0 ? 0 : this.min,
      max: this.max,
      mean: this.count === 0 ? 0 : this.sum / this.count,
      p50: this.percentile(0.5),
      p90: this.percentile(0.9),
      p99: this.percentile(0.99),
      p999: this.percentile(0.999),
    };
  }

  /** Buckets a window baseline (windowPercentiles) needs. */
  static get bucketCount(): number {
    return (MAX_EXPONENT + 1) * SUB;
  }

  /**
   * Percentiles of the values recorded since the previous call with the same `baseline`
   * (a Float64Array of Histogram.bucketCount, zero at first), written into `out` in the order
   * of `qs`; the baseline then catches up. Returns how many values the window holds (0: `out`
   * untouched). Each is a bucket's lower bound (within ~6 %), clamped to the all-time
   * [min, max]. Walks every bucket (~1300): for a periodic publication, not per value.
   * Allocates nothing.
   */
  windowPercentiles(baseline: Float64Array, qs: readonly number[], out: Float64Array): number {
    const counts = this.counts;
    let total = 0;
    for (let i = 0; i < counts.length; i++) total += counts[i] - baseline[i];
    if (total <= 0) {
      if (total < 0) baseline.set(counts); // reset() since the last window
      return 0;
    }
    let q = 0;
    let seen = 0;
    for (let i = 0; i < counts.length && q < qs.length; i++) {
      seen += counts[i] - baseline[i];
      while (q < qs.length && seen >= Math.max(1, Math.ceil(qs[q] * total))) {
        out[q] = Math.min(this.max, Math.max(this.min, Histogram.lowerBound(i)));
        q++;
      }
    }
    for (; q < qs.length; q++) out[q] = this.max;
    baseline.set(counts);
    return total;
  }

  reset(): void {
    this.counts.fill(0);
    this.count = 0;
    this.sum = 0;
    this.min = Number.POSITIVE_INFINITY;
    this.max = 0;
  }
}
