/** Histogram.windowPercentiles: percentiles of the values since the previous window only. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Histogram } from '../../src/core/histogram.js';

test('window percentiles cover only the values recorded since the previous window', () => {
  const sut = new Histogram();
  const baseline = new Float64Array(Histogram.bucketCount);
  const out = new Float64Array(3);
  assert.equal(sut.windowPercentiles(baseline, [0.5, 0.99, 1], out), 0, 'an empty window');
  for (let i = 0; i < 1000; i++) sut.record(1_000_000); // 1 ms
  assert.equal(sut.windowPercentiles(baseline, [0.5, 0.99, 1], out), 1000);
  assert.ok(Math.abs(out[0] - 1_000_000) / 1_000_000 < 0.07, `p50 ${out[0]}`);
  for (let i = 0; i < 99; i++) sut.record(10_000); // 10 us
  sut.record(5_000_000);
  assert.equal(sut.windowPercentiles(baseline, [0.5, 0.99, 1], out), 100);
  assert.ok(Math.abs(out[0] - 10_000) / 10_000 < 0.07, `p50 ${out[0]}: the 1 ms values are in the previous window`);
  assert.ok(out[1] < 20_000, `p99 ${out[1]}`);
  assert.ok(Math.abs(out[2] - 5_000_000) / 5_000_000 < 0.07, `max ${out[2]}`);
  assert.equal(sut.windowPercentiles(baseline, [0.5], out), 0, 'nothing new');
  sut.reset();
  assert.equal(sut.windowPercentiles(baseline, [0.5], out), 0, 'a reset is not a negative window');
  sut.record(2000);
  assert.equal(sut.windowPercentiles(baseline, [0.5], out), 1);
  assert.equal(out[0], 2000);
});
