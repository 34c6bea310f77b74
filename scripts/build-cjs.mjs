// The CommonJS build (`require('shmbus')`, `require('shmbus/solana')`): tsc -p tsconfig.cjs.json
// into a fresh dist/cjs/ (no stale files from deleted sources get packed), then a nested
// package.json marking it CommonJS: the package itself is "type": "module", so without it Node
// would parse those .js files as ES modules.
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = new URL('../dist/cjs/', import.meta.url);
rmSync(out, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const result = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.cjs.json'], { cwd: root, stdio: 'inherit' });
if (result.status !== 0) process.exit(result.status ?? 1);
writeFileSync(new URL('package.json', out), '{\n  "type": "commonjs"\n}\n');
