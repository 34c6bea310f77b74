/**
 * The fuzz runner: every target (or one), deterministic from the seed, one JSON line per
 * target on stdout, one JSON line per finding before it, exit status 1 on any finding.
 *
 * ```sh
 * node dist/test/fuzz/run.js                                   # every target, default case counts
 * node dist/test/fuzz/run.js --cases 1000000 --seed 7          # the stress run
 * node dist/test/fuzz/run.js --target frame-decode --seconds 60
 * node dist/test/fuzz/run.js --target segment-blob --seed 7 --replay 1234   # one finding again
 * ```
 * Options: --cases N, --seconds S (with --cases: whichever ends first), --target NAME (a
 * target, or `segment-contents` for the four segment targets), --seed S (default
 * SHMBUS_SEED, else the clock), --replay N (only case N; printed with every finding),
 * --max-findings N (kept in full per target, default 20), --hang-ms N (watchdog, default
 * 30000), --trace (each case index to stderr, to locate a native crash), --verbose (every
 * typed error with its operation, to stderr), --list.
 *
 * Summary line: {target, cases, typedErrors, accepted, findings, seconds, seed,
 * casesPerSecond, codes, signatures, known?, notes?}. Finding line: {finding: true, target,
 * seed, case, op, kind, error, signature, stack?, input? (hex, first 256 bytes), inputLength?,
 * detail?, replay, known? (the id of the open bug in known.ts it is an instance of)}.
 * `--known` instead runs the minimal reproduction of every open bug in known.ts. Targets and what they mutate: control-codec.ts, frame-decode.ts,
 * control-socket.ts, segment-*.ts (each module's doc).
 */
import { testSeed } from '../helpers/prng.js';
import * as controlCodec from './control-codec.js';
import * as controlSocket from './control-socket.js';
import * as frameDecode from './frame-decode.js';
import { Run, type RunOptions, type TargetResult } from './harness.js';
import { KNOWN, knownBug, reproduce } from './known.js';
import * as segmentBlob from './segment-blob.js';
import * as segmentChannel from './segment-channel.js';
import * as segmentDaemon from './segment-daemon.js';
import * as segmentSession from './segment-session.js';
import { startWatchdog } from './watchdog.js';

interface TargetModule {
  NAME: string;
  DEFAULT_CASES: number;
  run(options: RunOptions): TargetResult | Promise<TargetResult>;
}

export const TARGETS: readonly TargetModule[] = [
  controlCodec,
  frameDecode,
  controlSocket,
  segmentChannel,
  segmentSession,
  segmentDaemon,
  segmentBlob,
];

const GROUPS: Record<string, readonly string[]> = {
  'segment-contents': [segmentChannel.NAME, segmentSession.NAME, segmentDaemon.NAME, segmentBlob.NAME],
};

interface Args {
  cases?: number;
  seconds?: number;
  targets: string[];
  seed: number;
  replay?: number;
  maxFindings: number;
  hangMs: number;
  trace: boolean;
  verbose: boolean;
  list: boolean;
  known: boolean;
}

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: run.js [--cases N] [--seconds S] [--target NAME] [--seed S] [--replay N]\n`);
  process.exit(2);
}

function number(flag: string, value: string | undefined): number {
  const n = Number(value);
  if (value === undefined || !Number.isFinite(n) || n < 0) usage(`${flag} needs a number >= 0, got ${value}`);
  return n;
}

function parse(argv: string[]): Args {
  const args: Args = {
    targets: [],
    seed: testSeed(),
    maxFindings: 20,
    hangMs: 30_000,
    trace: false,
    verbose: false,
    list: false,
    known: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    switch (flag) {
      case '--cases':
        args.cases = Math.floor(number(flag, argv[++i]));
        break;
      case '--seconds':
        args.seconds = number(flag, argv[++i]);
        break;
      case '--target': {
        const name = argv[++i];
        const names = GROUPS[name] ?? [name];
        for (const n of names)
          if (!TARGETS.some((t) => t.NAME === n))
            usage(`unknown target ${name}; targets: ${TARGETS.map((t) => t.NAME).join(', ')}, segment-contents`);
        args.targets.push(...names);
        break;
      }
      case '--seed':
        args.seed = Math.floor(number(flag, argv[++i])) >>> 0;
        break;
      case '--replay':
        args.replay = Math.floor(number(flag, argv[++i]));
        break;
      case '--max-findings':
        args.maxFindings = Math.floor(number(flag, argv[++i]));
        break;
      case '--hang-ms':
        args.hangMs = number(flag, argv[++i]);
        break;
      case '--trace':
        args.trace = true;
        break;
      case '--verbose':
        args.verbose = true;
        break;
      case '--list':
        args.list = true;
        break;
      case '--known':
        args.known = true;
        break;
      default:
        usage(`unknown option ${flag}`);
    }
  }
  if (args.replay !== undefined && args.targets.length !== 1) usage('--replay needs exactly one --target');
  return args;
}

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  if (args.list) {
    for (const t of TARGETS) process.stdout.write(`${t.NAME}\t(default ${t.DEFAULT_CASES} cases)\n`);
    return;
  }
  if (args.known) {
    // The minimal reproductions of the open bugs (known.ts): one JSON line each.
    for (const bug of KNOWN) {
      const r = await reproduce(bug);
      process.stdout.write(`${JSON.stringify({ known: bug.id, where: bug.where, ...r })}\n`);
      if (!r.fixed) process.exitCode = 1;
    }
    return;
  }
  const watchdog = startWatchdog({ hangMs: args.hangMs, seed: args.seed });
  // Anything that escapes a case (a rejected promise nobody holds, a throw in a timer) is a finding of the target running.
  const escaped = (kind: string) => (err: unknown) => {
    if (Run.active !== null) Run.active.escaped(kind, err);
    else {
      process.stdout.write(`${JSON.stringify({ finding: true, kind: 'crash', error: `${kind}: ${String(err)}` })}\n`);
      process.exitCode = 1;
    }
  };
  process.on('uncaughtException', escaped('uncaughtException'));
  process.on('unhandledRejection', escaped('unhandledRejection'));
  const selected = args.targets.length > 0 ? TARGETS.filter((t) => args.targets.includes(t.NAME)) : TARGETS;
  let findings = 0;
  for (const target of selected) {
    const options: RunOptions = {
      seed: args.seed,
      cases: args.cases,
      seconds: args.seconds,
      replay: args.replay,
      maxFindings: args.maxFindings,
      trace: args.trace,
      verbose: args.verbose,
      watchdog,
    };
    const { report, findings: list, examples } = await target.run(options);
    // Rejections surface a turn after the code that made them: let them in before the report.
    await new Promise((resolve) => setTimeout(resolve, 20));
    const late = Run.active?.target === target.NAME ? Run.active : null;
    if (late !== null && late.findings.count > report.findings) {
      report.findings = late.findings.count;
      report.signatures = Object.fromEntries(late.findings.bySignature);
      list.splice(0, list.length, ...late.findingList);
      examples.splice(0, examples.length, ...late.findings.examples.values());
    }
    Run.active = null;
    const known: Record<string, number> = {};
    for (const [signature, count] of Object.entries(report.signatures)) {
      const example = examples.find((f) => f.signature === signature);
      const bug = example === undefined ? undefined : knownBug(example);
      if (bug !== undefined) known[bug.id] = (known[bug.id] ?? 0) + count;
    }
    if (Object.keys(known).length > 0) report.known = known;
    for (const f of list) process.stdout.write(`${JSON.stringify({ finding: true, ...f, known: knownBug(f)?.id })}\n`);
    process.stdout.write(`${JSON.stringify(report)}\n`);
    findings += report.findings;
  }
  watchdog.stop();
  if (findings > 0) process.exitCode = 1;
}

await main();
