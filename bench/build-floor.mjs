// Compiles the C floor programs (bench/c/*.c) into bench/build/<name>. Runs as bench's
// `install` script; bench/cases/floor.mjs runs the results.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));

try {
  execFileSync('cc', ['--version'], { stdio: 'ignore' });
} catch (err) {
  console.error(
    `build-floor: cannot run the C compiler 'cc' (${err.code ?? err.message}); ` +
      'install gcc or clang (e.g. apt-get install build-essential) to build the C floor benchmarks',
  );
  process.exit(1);
}

mkdirSync(`${here}build`, { recursive: true });
for (const file of readdirSync(`${here}c`).filter((f) => f.endsWith('.c'))) {
  const name = file.slice(0, -2);
  const args = ['-O2', '-std=gnu11', '-pthread', '-Wall', '-o', `build/${name}`, `c/${file}`];
  console.log(`cc ${args.join(' ')}`);
  try {
    execFileSync('cc', args, { cwd: here, stdio: 'inherit' }); // paths relative to bench/
  } catch {
    console.error(`build-floor: compiling ${file} failed`);
    process.exit(1);
  }
}
