/**
 * The bounded subset of the live fuzzers: the control socket of a real Sender process, and
 * channel / session / daemon / blob segments rewritten under live ends (test/fuzz/*.ts).
 * Each target runs in its own child (`dist/test/fuzz/run.js`), so a crash or a hang (the
 * runner's watchdog kills it) fails only that target, with the seed and case to replay.
 *
 * Findings that are instances of the open bugs in test/fuzz/known.ts are reported but do
 * not fail these tests; each of those bugs has a `todo` test below running its minimal
 * reproduction, which starts passing once the bug is fixed (then delete its known.ts entry).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Finding, TargetReport } from '../fuzz/harness.js';
import { KNOWN, knownBug } from '../fuzz/known.js';
import { testSeed } from '../helpers/prng.js';

const runner = fileURLToPath(new URL('../fuzz/run.js', import.meta.url));
const seed = testSeed();
/** A child that is neither done nor killed by its own watchdog by then is killed here. */
const CHILD_DEADLINE_MS = 120_000;

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  reports: TargetReport[];
  findings: (Finding & { known?: string })[];
  lines: Record<string, unknown>[];
  stderr: string;
}

function runChild(args: string[]): Promise<ChildResult> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [runner, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    proc.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => proc.kill('SIGKILL'), CHILD_DEADLINE_MS);
    proc.on('exit', (code, signal) => {
      clearTimeout(timer);
      const lines: Record<string, unknown>[] = [];
      for (const line of stdout.split('\n'))
        if (line.trim() !== '')
          try {
            lines.push(JSON.parse(line));
          } catch {
            stderr += `(non-JSON stdout) ${line}\n`;
          }
      resolve({
        code,
        signal,
        reports: lines.filter((l) => 'cases' in l) as unknown as TargetReport[],
        findings: lines.filter((l) => l.finding === true) as unknown as ChildResult['findings'],
        lines,
        stderr,
      });
    });
  });
}

const TARGETS: readonly [string, number][] = [
  ['control-socket', 200],
  ['segment-channel', 300],
  ['segment-session', 300],
  ['segment-daemon', 300],
  ['segment-blob', 300],
];

describe(`live fuzzing, bounded (seed ${seed})`, () => {
  for (const [target, cases] of TARGETS)
    test(`${target}: ${cases} hostile cases end without a crash, a hang, or any error but a ShmError`, async (t) => {
      const sut = await runChild(['--target', target, '--cases', String(cases), '--seed', String(seed)]);
      const replay = `node dist/test/fuzz/run.js --target ${target} --seed ${seed}`;
      assert.equal(
        sut.signal,
        null,
        `${target} died of ${sut.signal} (${replay} --trace): ${JSON.stringify(sut.findings)}\n${sut.stderr}`,
      );
      const report = sut.reports.find((r) => r.target === target);
      assert.ok(report !== undefined, `no summary from ${replay}: ${JSON.stringify(sut.lines)}\n${sut.stderr}`);
      assert.equal(report.cases, cases);
      const unknown = sut.findings.filter((f) => knownBug(f) === undefined);
      assert.deepEqual(
        unknown,
        [],
        `${unknown.length} new findings (${replay}):\n${unknown.map((f) => JSON.stringify(f)).join('\n')}`,
      );
      // Instances of open bugs: reported, not failed (see the todo tests below).
      const known = report.known ?? {};
      for (const [id, count] of Object.entries(known)) t.diagnostic(`${count} findings of known bug ${id}`);
      t.diagnostic(`${report.casesPerSecond} cases/s, outcomes ${JSON.stringify(report.codes)}`);
    });
});

describe('bugs found by the fuzzers (minimal reproductions: regression tests once fixed, todo while open)', () => {
  let reproductions: Promise<ChildResult> | null = null;
  for (const bug of KNOWN)
    test(`${bug.id}: ${bug.fixed ?? bug.summary}`, bug.fixed === undefined ? { todo: bug.where } : {}, async () => {
      reproductions ??= runChild(['--known']);
      const sut = await reproductions;
      const line = sut.lines.find((l) => l.known === bug.id) as { fixed: boolean; observed: string } | undefined;
      assert.ok(line !== undefined, `no reproduction result for ${bug.id}: ${sut.stderr}`);
      assert.ok(line.fixed, line.observed);
    });
});
