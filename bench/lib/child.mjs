/** Spawns a bench child (a real process) that prints JSON lines; waits for messages with deadlines. */
import { spawn } from 'node:child_process';

export function startChild(script, args, { timeoutMs = 120_000 } = {}) {
  const proc = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const messages = [];
  let stderr = '';
  let exited = null;
  const waiters = new Set();
  let buffered = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (chunk) => {
    buffered += chunk;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.trim()) messages.push(JSON.parse(line));
    }
    for (const w of waiters) w();
  });
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (c) => {
    stderr += c;
  });
  proc.on('exit', (code, signal) => {
    exited = { code, signal };
    for (const w of waiters) w();
  });
  const killer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  killer.unref();
  return {
    proc,
    /** Resolves with the first message matching `match`; rejects if the child exits first or after the deadline. */
    waitFor(match, ms = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => finish(new Error(`child ${script}: no message in ${ms} ms; stderr: ${stderr}`)),
          ms,
        );
        const check = () => {
          const m = messages.find(match);
          if (m) finish(null, m);
          else if (exited) finish(new Error(`child ${script} exited ${JSON.stringify(exited)}; stderr: ${stderr}`));
        };
        const finish = (err, m) => {
          clearTimeout(timer);
          waiters.delete(check);
          if (err) reject(err);
          else resolve(m);
        };
        waiters.add(check);
        check();
      });
    },
    /** Resolves when the child exits (kills it after `ms`). */
    exit(ms = 30_000) {
      if (exited) return Promise.resolve(exited);
      return new Promise((resolve) => {
        const timer = setTimeout(() => proc.kill('SIGKILL'), ms);
        proc.once('exit', (code, signal) => {
          clearTimeout(timer);
          clearTimeout(killer);
          resolve({ code, signal });
        });
      });
    },
    kill() {
      clearTimeout(killer);
      if (!exited) proc.kill('SIGKILL');
    },
  };
}
