#!/usr/bin/env node
/** Renders `node run.mjs --json` output as the Markdown tables of BENCHMARKS.md: node report.mjs result.json */
import { readFileSync } from 'node:fs';

const report = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const fmt = (v, unit) => {
  if (v === undefined) return '';
  if (unit === 'ns')
    return v >= 1e6 ? `${(v / 1e6).toFixed(2)} ms` : v >= 1e3 ? `${(v / 1e3).toFixed(1)} µs` : `${Math.round(v)} ns`;
  if (unit === 'msg/s') return `${(v / 1e6).toFixed(2)} M/s`;
  if (unit === 'GB/s') return `${v.toFixed(2)} GB/s`;
  if (unit === '%') return `${v.toFixed(3)} %`;
  return String(v);
};
const m = report.machine;
const out = [
  `Machine: ${m.cpu}, ${m.cores} vCPU, ${m.memoryGiB} GiB, ${m.kernel}, Node ${m.node} (${m.arch}); ${m.date}; medians of ${m.runs} run(s) per case; total ${report.seconds} s.`,
  '',
  '| id | p50 / value | p99 | p99.9 | compared with | ratio |',
  '|---|---|---|---|---|---|',
];
for (const r of report.results) {
  if (r.error) {
    out.push(`| ${r.id} | failed: ${r.error} | | | | |`);
    continue;
  }
  const ratio = r.ratio === undefined ? '' : `${r.ratio >= 100 ? r.ratio.toFixed(0) : r.ratio.toFixed(2)}×`;
  out.push(
    `| ${r.id} | ${fmt(r.value, r.unit)} | ${fmt(r.p99, r.unit)} | ${fmt(r.p999, r.unit)} | ${r.baseline?.id ?? ''} | ${ratio} |`,
  );
}
out.push('', '| target | measured | limit | |', '|---|---|---|---|');
for (const t of report.targets)
  out.push(
    `| ${t.name} | ${t.value === undefined ? '—' : t.value.toFixed(3)} | ${t.sense === 'max' ? '≤' : '≥'} ${t.limit} | ${t.met ? 'met' : '**not met**'} |`,
  );
process.stdout.write(`${out.join('\n')}\n`);
