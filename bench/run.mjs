#!/usr/bin/env node
/**
 * shmbus benchmark: the hardware floor (small C programs), Node's IPC peers and shmbus,
 * side by side in one run, with ratios.
 *
 *   node bench/run.mjs [--quick] [--json] [--runs N] [--filter REGEX]
 *
 * --quick     smaller counts (under a minute), and without the cases marked `skipQuick`; numbers
 *             are for smoke tests, not for quoting
 * --json      one JSON object on stdout: { machine, results: [{ id, unit, value, p99?, p999?, baseline?, ratio? }], targets }
 * --runs N    run every case N times and report the median of each figure (default 1)
 * --filter R  only cases whose id matches R (baselines of a filtered run may be missing)
 * Progress goes to stderr.
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import blob from './cases/blob.mjs';
import fanout from './cases/fanout.mjs';
import floor from './cases/floor.mjs';
import peers from './cases/peers.mjs';
import rpc from './cases/rpc.mjs';
import session from './cases/session.mjs';
import shmbus from './cases/shmbus.mjs';

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const quick = flag('--quick');
const json = flag('--json');
const runs = Number(option('--runs', '1'));
const filter = new RegExp(option('--filter', '.'));
if (flag('--help') || flag('-h')) {
  process.stdout.write(
    'usage: shmbus bench [--quick] [--json] [--runs N] [--filter REGEX]\n' +
      '  --quick    smaller counts, under a minute (smoke run)\n' +
      '  --json     one JSON object on stdout instead of the table\n' +
      '  --runs N   run each case N times, report medians\n' +
      '  --filter R only cases whose id matches R\n',
  );
  process.exit(0);
}

/** Which result each result is compared with (ratio = value / baseline value). */
function baselineOf(id) {
  const [kind, impl, size] = id.split('.');
  if (kind === 'rtt') {
    if (impl === 'spin' || impl === 'adaptive') return 'rtt.floor.spin.c';
    if (impl === 'park') return 'rtt.floor.futex.c';
    if (impl === 'async') return 'rtt.floor.eventfd.c';
    if (impl !== 'floor') return `rtt.adaptive.${size}`;
  }
  if (kind === 'tput') {
    if (impl === 'copy') return size === '64k' || size === '1m' ? `memcpy.${size}` : `tput.udscork.${size}`;
    if (impl === 'inplace') return `tput.copy.${size}`;
    return `tput.copy.${size}`;
  }
  // rpc.adaptive.64 vs rpc.uds.64 (p50: below 1 is shmbus ahead), rpc.adaptive.64.rps vs
  // rpc.uds.64.rps (round trips/s: above 1 is shmbus ahead; the adaptive one is a target below).
  if (kind === 'rpc' && impl !== 'uds') return ['rpc', 'uds', ...id.split('.').slice(2)].join('.');
  // Snapshot reads of the 1 MiB state (GB/s copied out) against the copy floor.
  if (kind === 'state') return 'memcpy.1m';
  // session.tput.1m vs the Channel's copy-out throughput at the same size (above 1: session ahead).
  if (kind === 'session' && impl === 'tput') return `tput.copy.${size}`;
  // blob.append.4k / blob.resolve.4k vs memcpy.4k (bandwidth against the copy floor);
  // blob.fanout.blob.8[.cpu] vs blob.fanout.ring.8[.cpu] (GB/s: above 1 blob ahead; CPU: below 1).
  if (kind === 'blob' && (impl === 'append' || impl === 'resolve')) return `memcpy.${size}`;
  if (kind === 'blob' && impl === 'fanout' && size === 'blob')
    return ['blob', 'fanout', 'ring', ...id.split('.').slice(3)].join('.');
  // fanout.shmbus.8 vs fanout.uds.8 (throughput: above 1 is shmbus ahead), fanout.shmbus.8.latency
  // vs fanout.uds.8.latency (p50: below 1 is shmbus ahead; the p99 ratio is a target below).
  if (kind === 'fanout' && impl === 'shmbus') return ['fanout', 'uds', ...id.split('.').slice(2)].join('.');
  return undefined;
}

/** The figures the benchmark issue asks for: [name, computed value, limit, 'max' | 'min']. */
function targets(byId) {
  const v = (id) => byId.get(id)?.value;
  const ratio = (a, b) => (v(a) !== undefined && v(b) !== undefined ? v(a) / v(b) : undefined);
  const p99 = (id) => byId.get(id)?.p99;
  const p99Ratio = (a, b) => (p99(a) !== undefined && p99(b) !== undefined ? p99(a) / p99(b) : undefined);
  const list = [
    ['rtt.spin.64 p50 / rtt.floor.spin.c', ratio('rtt.spin.64', 'rtt.floor.spin.c'), 1.8, 'max'],
    ['rtt.adaptive.64 p50 / rtt.floor.spin.c', ratio('rtt.adaptive.64', 'rtt.floor.spin.c'), 2.0, 'max'],
    ['rtt.park.64 p50 / rtt.floor.futex.c', ratio('rtt.park.64', 'rtt.floor.futex.c'), 1.15, 'max'],
    ['rtt.async.64 p50 / rtt.floor.eventfd.c', ratio('rtt.async.64', 'rtt.floor.eventfd.c'), 1.25, 'max'],
    ['tput.copy.64 (M msg/s)', v('tput.copy.64') === undefined ? undefined : v('tput.copy.64') / 1e6, 20, 'min'],
    ['tput.copy.64 / tput.udscork.64', ratio('tput.copy.64', 'tput.udscork.64'), 2.5, 'min'],
    ['tput.copy.64 / tput.zeromq.64', ratio('tput.copy.64', 'tput.zeromq.64'), 30, 'min'],
    [
      'tput.inplace.64 (M msg/s)',
      v('tput.inplace.64') === undefined ? undefined : v('tput.inplace.64') / 1e6,
      40,
      'min',
    ],
    ['tput.copy.1m / memcpy.1m', ratio('tput.copy.1m', 'memcpy.1m'), 0.6, 'min'],
    ['tput.copy.1m / tput.zeromq.1m', ratio('tput.copy.1m', 'tput.zeromq.1m'), 5, 'min'],
    ['idle.cpu.parked (% of a core)', v('idle.cpu.parked'), 1, 'max'],
    ['fanout.shmbus.8 / fanout.uds.8 (delivered)', ratio('fanout.shmbus.8', 'fanout.uds.8'), 10, 'min'],
    ['fanout.shmbus.8.latency p99 / uds p99', p99Ratio('fanout.shmbus.8.latency', 'fanout.uds.8.latency'), 1, 'max'],
    ['rpc round trips/s (default wait) / unix socket', ratio('rpc.adaptive.64.rps', 'rpc.uds.64.rps'), 100, 'min'],
    ['state.read.1m / memcpy.1m', ratio('state.read.1m', 'memcpy.1m'), 0.7, 'min'],
    ['session.tput.1m / tput.copy.1m (Channel)', ratio('session.tput.1m', 'tput.copy.1m'), 1.5, 'min'],
    ['session.tput.1m / tput.uds.1m', ratio('session.tput.1m', 'tput.uds.1m'), 10, 'min'],
    ['session.allocfree (ns)', v('session.allocfree'), 150, 'max'],
    ['blob.append.4k / memcpy.4k', ratio('blob.append.4k', 'memcpy.4k'), 0.7, 'min'],
    ['blob.append.64k / memcpy.64k', ratio('blob.append.64k', 'memcpy.64k'), 0.7, 'min'],
    ['blob.append.1m / memcpy.1m', ratio('blob.append.1m', 'memcpy.1m'), 0.7, 'min'],
    [
      'blob fan-out sender CPU / per-ring copy (8 consumers)',
      ratio('blob.fanout.blob.8.cpu', 'blob.fanout.ring.8.cpu'),
      0.25,
      'max',
    ],
  ];
  return list.map(([name, value, limit, sense]) => ({
    name,
    value,
    limit,
    sense,
    met: value === undefined ? null : sense === 'max' ? value <= limit : value >= limit,
  }));
}

function machine() {
  const cpus = os.cpus();
  let kernel = os.release();
  try {
    kernel = execFileSync('uname', ['-sr'], { encoding: 'utf8' }).trim();
  } catch {}
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel,
    node: process.version,
    arch: process.arch,
    date: new Date().toISOString(),
    quick,
    runs,
  };
}

const median = (xs) => {
  const s = xs.filter((x) => x !== undefined).sort((a, b) => a - b);
  return s.length === 0 ? undefined : s[Math.floor((s.length - 1) / 2)];
};

async function main() {
  const all = [...floor, ...peers, ...shmbus, ...fanout, ...rpc, ...session, ...blob].filter(
    (c) => filter.test(c.id) && !(quick && c.skipQuick),
  );
  const ctx = {
    quick,
    scale: (n) => (quick ? Math.max(1, Math.ceil(n / 10)) : n),
    log: (msg) => process.stderr.write(`  ${msg}\n`),
  };
  const started = Date.now();
  // Runs are interleaved (every case once, then every case again): this machine's speed
  // drifts for minutes at a time, so each case's runs should not all land in one phase.
  const attemptsById = new Map(all.map((c) => [c.id, []]));
  for (let r = 0; r < runs; r++) {
    for (const [index, c] of all.entries()) {
      process.stderr.write(`[${index + 1}/${all.length}] ${c.id}${runs > 1 ? ` (run ${r + 1}/${runs})` : ''} ... `);
      const t0 = Date.now();
      try {
        const result = await c.run(ctx);
        attemptsById.get(c.id).push(result);
        process.stderr.write(`${format(result.value, c.unit)} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
      } catch (err) {
        process.stderr.write(`FAILED: ${err?.message ?? err}\n`);
        attemptsById.get(c.id).push({ error: String(err?.message ?? err) });
      }
    }
  }
  const results = [];
  for (const c of all) {
    const attempts = attemptsById.get(c.id);
    const ok = attempts.filter((a) => a.error === undefined);
    if (ok.length === 0) {
      results.push({ id: c.id, unit: c.unit, title: c.title, error: attempts[0].error });
      continue;
    }
    const entry = { id: c.id, unit: c.unit, title: c.title, value: median(ok.map((a) => a.value)) };
    if (ok.some((a) => a.p99 !== undefined)) {
      entry.p99 = median(ok.map((a) => a.p99));
      entry.p999 = median(ok.map((a) => a.p999));
    }
    if (ok[0].n !== undefined) entry.n = ok[0].n;
    if (ok[0].note !== undefined) entry.note = ok[0].note;
    if (ok.length < attempts.length) entry.note = `${attempts.length - ok.length} of ${attempts.length} runs failed`;
    results.push(entry);
  }
  const byId = new Map(results.filter((r) => r.value !== undefined).map((r) => [r.id, r]));
  for (const r of results) {
    const base = baselineOf(r.id);
    const b = base && byId.get(base);
    if (b && r.value !== undefined) {
      r.baseline = { id: b.id, value: b.value };
      r.ratio = r.value / b.value;
    }
  }
  const report = {
    machine: machine(),
    seconds: Math.round((Date.now() - started) / 1000),
    results,
    targets: targets(byId),
  };
  if (json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else process.stdout.write(table(report));
  if (results.some((r) => r.error)) process.exitCode = 1;
}

function format(value, unit) {
  if (value === undefined) return '-';
  if (unit === 'ns')
    return value >= 1e6
      ? `${(value / 1e6).toFixed(2)} ms`
      : value >= 1e3
        ? `${(value / 1e3).toFixed(1)} us`
        : `${value.toFixed(0)} ns`;
  if (unit === 'msg/s') return `${(value / 1e6).toFixed(value < 1e5 ? 3 : 2)} M/s`;
  if (unit === 'GB/s') return `${value.toFixed(2)} GB/s`;
  if (unit === '%') return `${value.toFixed(3)} %`;
  return String(value);
}

function table(report) {
  const m = report.machine;
  const lines = [
    `shmbus bench — ${m.cpu}, ${m.cores} cores, ${m.kernel}, Node ${m.node}, ${m.date}${m.quick ? ' (QUICK: smoke numbers)' : ''}`,
    '',
  ];
  const rows = [['id', 'p50 / value', 'p99', 'p99.9', 'vs', 'ratio']];
  for (const r of report.results) {
    if (r.error) {
      rows.push([r.id, `FAILED: ${r.error}`, '', '', '', '']);
      continue;
    }
    rows.push([
      r.id,
      format(r.value, r.unit),
      r.p99 === undefined ? '' : format(r.p99, r.unit),
      r.p999 === undefined ? '' : format(r.p999, r.unit),
      r.baseline?.id ?? '',
      r.ratio === undefined ? '' : `${r.ratio >= 100 ? r.ratio.toFixed(0) : r.ratio.toFixed(2)}x`,
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const row of rows)
    lines.push(
      row
        .map((cell, i) => cell.padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    );
  lines.push('', 'targets (benchmark issue):');
  const nameWidth = Math.max(42, ...report.targets.map((t) => t.name.length));
  for (const t of report.targets) {
    const value = t.value === undefined ? 'not measured' : t.value.toFixed(3);
    const verdict = t.met === null ? '' : t.met ? 'met' : 'NOT met';
    lines.push(
      `  ${t.name.padEnd(nameWidth)} ${value.padStart(12)}  ${t.sense === 'max' ? '<=' : '>='} ${t.limit}  ${verdict}`,
    );
  }
  lines.push('', `total ${report.seconds} s`);
  return `${lines.join('\n')}\n`;
}

await main();
