/**
 * The fuzz harness shared by every target: the case loop and its budget (cases and/or
 * seconds), the verdict of each operation (a ShmError whose code starts with SHM_ERR_ is an
 * expected outcome; anything else thrown, and any broken invariant, is a finding), finding
 * records that can be replayed, and the per-target report.
 *
 * ```ts
 * const run = new Run('control-codec', { seed: 42, cases: 1000 }, 20_000);
 * for (const index of run.indices()) {
 *   const ctx = run.begin(index);
 *   ctx.input = bytes;                                    // printed (hex, truncated) with any finding
 *   ctx.attempt('ControlReader', () => new ControlReader(bytes));
 *   ctx.check(ok, 'splitter', 'buffered 5000 bytes over the limit');
 *   run.end(ctx);
 * }
 * const report = run.report();   // { target, cases, typedErrors, accepted, findings, seconds, seed, ... }
 * ```
 * One Run per target per process; not shared between threads.
 */
import { ShmError } from '../../src/errors.js';
import { slow } from '../helpers/slow.js';
import { hex } from './mutate.js';
import type { Watchdog } from './watchdog.js';

export interface RunOptions {
  seed: number;
  /** Stop after this many cases. */
  cases?: number;
  /** Stop after this many seconds (with `cases`: whichever comes first). */
  seconds?: number;
  /** Run only this case (stateful targets also run the cases before it in its segment's life). */
  replay?: number;
  /** Findings kept in full (the rest are only counted); default 20. */
  maxFindings?: number;
  /** Print each case index to stderr before it runs (to locate a native crash). */
  trace?: boolean;
  /** Print every operation's typed error (code and message) to stderr: for replays. */
  verbose?: boolean;
  /** Hang detector fed by the case loop (run.ts starts one). */
  watchdog?: Watchdog | null;
}

export type FindingKind = 'throw' | 'invariant' | 'hang' | 'crash' | 'leak' | 'memory' | 'unavailable';

export interface Finding {
  target: string;
  seed: number;
  case: number;
  op: string;
  kind: FindingKind;
  error: string;
  /** Same target, operation, error class and throwing source line: one bug. */
  signature: string;
  stack?: string;
  input?: string;
  inputLength?: number;
  detail?: string;
  replay: string;
}

export interface TargetReport {
  target: string;
  cases: number;
  typedErrors: number;
  accepted: number;
  findings: number;
  seconds: number;
  seed: number;
  casesPerSecond: number;
  /** How often each SHM_ERR_ code was the outcome (per operation). */
  codes: Record<string, number>;
  /** Distinct finding signatures and how often each was hit. */
  signatures: Record<string, number>;
  /** Findings that are instances of bugs listed in known.ts, by bug id. */
  known?: Record<string, number>;
  /** Extra per-target measurements (memory, fds, ...). */
  notes?: Record<string, unknown>;
}

/**
 * One synchronous operation may take this long before it counts as a stall (a hang finding):
 * every wait the fuzz targets start has a timeout of at most a few ms, so only a wait the
 * caller cannot bound (or a loop that runs far too long) gets near it. Scaled by
 * SHMBUS_TEST_SLOW (test/helpers/slow.ts): under the sanitizers on a loaded machine an append
 * to a corrupted blob store that creates and maps chunk files took 700 ms (100 ms plain).
 */
export const STALL_MS = slow(500);
/** The same for operations that wait on the event loop (timers, wake-ups, another end's work). */
export const STALL_ASYNC_MS = slow(2000);

/** True for the errors shmbus is allowed to throw at hostile input. */
export function isTyped(err: unknown): err is ShmError {
  return err instanceof ShmError && typeof err.code === 'string' && err.code.startsWith('SHM_ERR_');
}

function errorName(err: unknown): string {
  if (err instanceof Error) return err.constructor?.name ?? err.name;
  return typeof err;
}

function errorMessage(err: unknown): string {
  if (err instanceof Error) return `${errorName(err)}: ${err.message}`;
  return `non-Error thrown: ${String(err)}`;
}

/** The first stack frame inside the library (dist/src), else the first frame at all. */
function sourceFrame(err: unknown): string {
  const stack = err instanceof Error ? (err.stack ?? '') : '';
  const frames = stack.split('\n').filter((l) => l.trim().startsWith('at '));
  const inLib = frames.find((l) => l.includes('/dist/src/')) ?? frames[0] ?? '';
  const m = /\/dist\/(src\/[^:)]+:\d+)/.exec(inLib) ?? /\(([^)]+)\)/.exec(inLib);
  return m ? m[1] : inLib.trim();
}

function shortStack(err: unknown): string | undefined {
  if (!(err instanceof Error) || err.stack === undefined) return undefined;
  return err.stack.split('\n').slice(0, 8).join('\n');
}

/** Findings of one target: all counted, at most `max` kept (and at most 3 per signature). */
class FindingList {
  readonly kept: Finding[] = [];
  readonly bySignature = new Map<string, number>();
  /** The first finding of every signature (kept whatever the cap). */
  readonly examples = new Map<string, Finding>();
  count = 0;
  constructor(private readonly max: number) {}

  add(f: Finding): void {
    this.count++;
    const seen = this.bySignature.get(f.signature) ?? 0;
    this.bySignature.set(f.signature, seen + 1);
    if (seen === 0) this.examples.set(f.signature, f);
    if (seen < 3 && this.kept.length < this.max) this.kept.push(f);
  }
}

/** One case: its operations, their outcomes, and the input to print if something is found. */
export class CaseContext {
  readonly codes: string[] = [];
  readonly findings: Finding[] = [];
  /** The case's input (printed as hex with any finding). */
  input: Uint8Array | null = null;
  /** A short description of the input for findings (e.g. the patches of a segment case). */
  detail = '';

  constructor(
    private readonly run: Run,
    readonly index: number,
  ) {}

  get target(): string {
    return this.run.target;
  }

  /** Runs one operation; returns its result, or undefined if it threw (typed: an outcome; else a finding). */
  attempt<T>(op: string, fn: () => T): T | undefined {
    this.run.watchdog?.beat(this.index, op);
    const started = performance.now();
    try {
      return fn();
    } catch (err) {
      this.caught(op, err);
      return undefined;
    } finally {
      this.timed(op, started, STALL_MS);
    }
  }

  /** attempt() for an operation that returns a promise (its own timeouts are at most a few ms). */
  async attemptAsync<T>(op: string, fn: () => Promise<T>): Promise<T | undefined> {
    this.run.watchdog?.beat(this.index, op);
    const started = performance.now();
    try {
      return await fn();
    } catch (err) {
      this.caught(op, err);
      return undefined;
    } finally {
      this.timed(op, started, STALL_ASYNC_MS);
    }
  }

  /** A single operation that blocks (or waits) far longer than any timeout it was given is a stall. */
  private timed(op: string, started: number, limit: number): void {
    const ms = performance.now() - started;
    if (ms > limit) this.fail('hang', op, `${op} took ${Math.round(ms)} ms (limit ${limit} ms)`, 'stall');
  }

  /** Counts an event in the target's notes (coverage: frames received, views checked, ...). */
  tally(key: string, n = 1): void {
    this.run.tally(key, n);
  }

  /** Records what `op` threw: its code if typed, else a finding. */
  caught(op: string, err: unknown): void {
    if (this.run.options.verbose)
      process.stderr.write(
        `case ${this.index} ${op}: ${err instanceof Error ? `${errorName(err)} ${err.message}` : String(err)}\n`,
      );
    if (isTyped(err)) this.codes.push(err.code);
    else this.fail('throw', op, errorMessage(err), `${errorName(err)} at ${sourceFrame(err)}`, shortStack(err));
  }

  /** An invariant: false is a finding named by `message`. */
  check(ok: boolean, op: string, message: string | (() => string)): boolean {
    if (!ok) {
      const text = typeof message === 'function' ? message() : message;
      this.fail('invariant', op, text, `invariant ${op}: ${text.replace(/[0-9]+/g, 'N').slice(0, 80)}`);
    }
    return ok;
  }

  fail(kind: FindingKind, op: string, error: string, signatureTail: string, stack?: string): void {
    const input = this.input;
    this.findings.push({
      target: this.run.target,
      seed: this.run.options.seed,
      case: this.index,
      op,
      kind,
      error: error.length > 600 ? `${error.slice(0, 600)}…` : error,
      signature: `${this.run.target}|${op}|${signatureTail}`,
      stack,
      input: input === null ? undefined : hex(input),
      inputLength: input === null ? undefined : input.length,
      detail: this.detail === '' ? undefined : this.detail.slice(0, 2000),
      replay: `node dist/test/fuzz/run.js --target ${this.run.target} --seed ${this.run.options.seed} --replay ${this.index}`,
    });
  }
}

/** The case loop and the tallies of one target. */
export class Run {
  /** The run whose cases are executing now (the runner's unhandledRejection hook reports into it). */
  static active: Run | null = null;

  cases = 0;
  /** Cases begun (ahead of `cases` while a batch of them runs concurrently). */
  private begun = 0;
  typedErrors = 0;
  accepted = 0;
  readonly findings: FindingList;
  readonly codes = new Map<string, number>();
  readonly notes: Record<string, unknown> = {};
  private readonly started = performance.now();
  private readonly limit: number;
  private readonly deadline: number;
  private targetIndexSeen = 0;

  constructor(
    readonly target: string,
    readonly options: RunOptions,
    defaultCases: number,
  ) {
    this.findings = new FindingList(options.maxFindings ?? 20);
    this.limit = options.cases ?? (options.seconds !== undefined ? Number.POSITIVE_INFINITY : defaultCases);
    this.deadline = options.seconds !== undefined ? this.started + options.seconds * 1000 : Number.POSITIVE_INFINITY;
  }

  get watchdog(): Watchdog | null {
    return this.options.watchdog ?? null;
  }

  /** True while the budget (cases, seconds) allows another case. */
  more(): boolean {
    if (this.options.replay !== undefined) return false;
    if (this.begun >= this.limit) return false;
    // The clock is read every 16 cases: cheap enough for the fast targets.
    if (this.deadline !== Number.POSITIVE_INFINITY && (this.begun & 15) === 0 && performance.now() >= this.deadline)
      return false;
    return true;
  }

  /** Case indices to run: 0, 1, 2, ... within the budget, or only the replayed one. */
  *indices(): Generator<number> {
    if (this.options.replay !== undefined) {
      yield this.options.replay;
      return;
    }
    for (let i = 0; this.more(); i++) yield i;
  }

  begin(index: number): CaseContext {
    Run.active = this;
    this.begun++;
    if (this.options.trace) process.stderr.write(`${this.target} case ${index}\n`);
    this.watchdog?.beat(index, '');
    this.targetIndexSeen = index;
    return new CaseContext(this, index);
  }

  end(ctx: CaseContext): void {
    this.cases++;
    for (const code of ctx.codes) this.codes.set(code, (this.codes.get(code) ?? 0) + 1);
    if (ctx.findings.length > 0) for (const f of ctx.findings) this.findings.add(f);
    else if (ctx.codes.length > 0) this.typedErrors++;
    else this.accepted++;
  }

  tally(key: string, n = 1): void {
    if (this.notes.counts === undefined) this.notes.counts = {};
    const counts = this.notes.counts as Record<string, number>;
    counts[key] = (counts[key] ?? 0) + n;
  }

  /** Takes the findings and codes of work done outside a case (closing a world) without counting a case. */
  absorb(ctx: CaseContext): void {
    for (const code of ctx.codes) this.codes.set(code, (this.codes.get(code) ?? 0) + 1);
    for (const f of ctx.findings) this.findings.add(f);
  }

  /**
   * An error that escaped every case: a promise the library rejected that nobody holds, or a
   * throw in one of its timers. A default Node process dies of either (unhandled rejections
   * are fatal since Node 15), so each is a `crash` finding, charged to the case running when it
   * surfaced (the cause may be a little earlier: replay a few cases before it).
   */
  escaped(kind: string, err: unknown): void {
    const ctx = new CaseContext(this, this.targetIndexSeen);
    ctx.fail(
      'crash',
      kind,
      `${kind}: ${errorMessage(err)}`,
      `${errorName(err)} at ${sourceFrame(err)}`,
      shortStack(err),
    );
    for (const f of ctx.findings) this.findings.add(f);
  }

  /** A finding outside any case (a leak or a crash seen between cases). */
  finding(kind: FindingKind, op: string, error: string, detail?: string): void {
    const ctx = new CaseContext(this, this.targetIndexSeen);
    ctx.detail = detail ?? '';
    ctx.fail(kind, op, error, `${kind} ${op}`);
    for (const f of ctx.findings) this.findings.add(f);
  }

  get seconds(): number {
    return (performance.now() - this.started) / 1000;
  }

  report(): TargetReport {
    const seconds = this.seconds;
    return {
      target: this.target,
      cases: this.cases,
      typedErrors: this.typedErrors,
      accepted: this.accepted,
      findings: this.findings.count,
      seconds: Math.round(seconds * 1000) / 1000,
      seed: this.options.seed,
      casesPerSecond: seconds > 0 ? Math.round(this.cases / seconds) : 0,
      codes: Object.fromEntries([...this.codes.entries()].sort((a, b) => b[1] - a[1])),
      signatures: Object.fromEntries(this.findings.bySignature),
      ...(Object.keys(this.notes).length > 0 ? { notes: this.notes } : {}),
    };
  }

  /** The findings kept in full. */
  get findingList(): Finding[] {
    return this.findings.kept;
  }
}

/** A target's result: its report plus the findings kept in full, and one example per signature. */
export interface TargetResult {
  report: TargetReport;
  findings: Finding[];
  examples: Finding[];
}

export function resultOf(run: Run): TargetResult {
  return { report: run.report(), findings: run.findingList, examples: [...run.findings.examples.values()] };
}
