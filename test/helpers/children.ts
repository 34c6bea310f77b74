/**
 * Real child processes for cross-process tests. Fixtures are compiled .ts files under
 * test/fixtures; children talk to the parent with JSON lines on stdout (and may read stdin).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const fixturesDir = fileURLToPath(new URL('../fixtures/', import.meta.url));

export interface Child {
  proc: ChildProcess;
  /** Every JSON line printed so far. */
  messages: Record<string, unknown>[];
  stderr: string[];
  /** Resolves with the first message for which `match` is true (rejects after `timeoutMs`). */
  waitFor(match: (m: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code / signal (rejects after `timeoutMs`). */
  exited(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const proc of live) proc.kill('SIGKILL');
});

/** `as`: run the child as another user (the test process must be root). */
export function startFixture(
  name: string,
  args: string[],
  env: Record<string, string> = {},
  as?: { uid: number; gid: number },
): Child {
  const proc = spawn(process.execPath, [`${fixturesDir}${name}.js`, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
    ...(as ?? {}),
  });
  live.add(proc);
  const messages: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  const listeners = new Set<() => void>();
  let buffered = '';
  proc.stdout?.setEncoding('utf8');
  proc.stdout?.on('data', (chunk: string) => {
    buffered += chunk;
    let nl = buffered.indexOf('\n');
    while (nl >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.trim() !== '') {
        try {
          messages.push(JSON.parse(line));
        } catch {
          stderr.push(`(non-JSON stdout) ${line}`);
        }
      }
      nl = buffered.indexOf('\n');
    }
    for (const listener of listeners) listener();
  });
  proc.stderr?.setEncoding('utf8');
  proc.stderr?.on('data', (chunk: string) => stderr.push(chunk));
  let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  proc.on('exit', (code, signal) => {
    exit = { code, signal };
    live.delete(proc);
    for (const listener of listeners) listener();
  });
  return {
    proc,
    messages,
    stderr,
    waitFor(match, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = messages.find(match);
          if (found) {
            done();
            resolve(found);
          } else if (exit) {
            done();
            reject(new Error(`${name} exited (${JSON.stringify(exit)}) first; stderr: ${stderr.join('')}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(
              `${name}: no matching message within ${timeoutMs} ms; got ${JSON.stringify(messages.slice(-3))}; stderr: ${stderr.join('')}`,
            ),
          );
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      });
    },
    exited(timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        if (exit) return resolve(exit);
        const timer = setTimeout(
          () => reject(new Error(`${name} did not exit within ${timeoutMs} ms; stderr: ${stderr.join('')}`)),
          timeoutMs,
        );
        proc.once('exit', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal });
        });
      });
    },
    kill(signal = 'SIGKILL') {
      proc.kill(signal);
    },
  };
}

let counter = 0;
/** A segment name unique to this test process. */
export function uniqueName(prefix: string): string {
  return `test-${prefix}-${process.pid}-${++counter}`;
}

/** shmbus files of this test process left in `dir` (default /dev/shm). */
export function leftovers(dir = '/dev/shm'): string[] {
  return readdirSync(dir).filter((f) => f.startsWith(`shmbus.test-`) && f.includes(`-${process.pid}-`));
}

/**
 * Waits until a child started with SHMBUS_TEST_STOP_AT (src/core/test-hooks.ts) says it
 * stopped at `point` (`point` or `point:N`) and is in the stopped state, then SIGKILLs it
 * there and waits for its exit. Fails after `timeoutMs`, or if the child exits first.
 */
export async function killAtStop(child: Child, point: string, timeoutMs = 20_000): Promise<void> {
  await waitStopped(child, point, timeoutMs);
  child.kill('SIGKILL');
  const exit = await child.exited(timeoutMs);
  if (exit.signal !== 'SIGKILL') throw new Error(`the stopped child exited with ${JSON.stringify(exit)}`);
}

/** The first half of killAtStop(): resolves once the child is stopped at `point`. */
export async function waitStopped(child: Child, point: string, timeoutMs = 20_000): Promise<void> {
  const line = `STOPPED ${point.split(':')[0]}\n`;
  const deadline = Date.now() + timeoutMs;
  const pause = () => new Promise((r) => setTimeout(r, 2));
  while (!child.stderr.join('').includes(line)) {
    if (child.proc.exitCode !== null || child.proc.signalCode !== null || Date.now() > deadline)
      throw new Error(
        `the child never stopped at ${point}: ${JSON.stringify(child.messages.slice(-3))} ${child.stderr.join('')}`,
      );
    await pause();
  }
  // 'T': stopped by the SIGSTOP it sent itself, exactly there.
  for (let state = ''; state !== 'T'; await pause()) {
    state = readFileSync(`/proc/${child.proc.pid}/stat`, 'utf8').replace(/^.*\) /, '')[0];
    if (Date.now() > deadline) throw new Error(`the child said it stopped at ${point}, but its state is ${state}`);
  }
}
