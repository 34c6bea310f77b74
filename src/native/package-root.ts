/**
 * Where the shmbus package lives on disk, for the two things that are found relative to it: the
 * native addon (build/, prebuilds/) and lz4-napi (node_modules/).
 *
 * ```ts
 * import { packageRequire, packageRoot } from './package-root.js';
 * packageRoot();                 // '/app/node_modules/shmbus'
 * packageRequire()('lz4-napi');  // resolved as from shmbus's own package.json
 * ```
 *
 * This file is compiled twice: to ES modules (dist/src/native/) and to CommonJS
 * (dist/cjs/native/). Neither `import.meta.url` nor `__filename` exists in both (each is a syntax
 * or reference error in the other format), so the module asks V8 for the file of its own stack
 * frame (a CallSite: a `file://` URL under ESM, a path under CommonJS) and walks up to the
 * package.json named `shmbus`. Runs once, on first use; synchronous file reads. Safe from any
 * thread (each worker computes its own).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE_NAME = 'shmbus';

/** The file this module was loaded from, from V8's structured stack trace (not the formatted text, which source maps may rewrite). */
function thisFile(): string {
  const savedPrepare = Error.prepareStackTrace;
  const savedLimit = Error.stackTraceLimit;
  let file: string | undefined;
  try {
    Error.stackTraceLimit = 1;
    Error.prepareStackTrace = (_error, frames) => frames;
    const frames = new Error().stack as unknown as NodeJS.CallSite[] | undefined;
    file = frames?.[0]?.getFileName() ?? undefined;
  } finally {
    Error.prepareStackTrace = savedPrepare;
    Error.stackTraceLimit = savedLimit;
  }
  if (file === undefined) throw new Error('shmbus: cannot tell where its own module file is (no stack frame)');
  return file.startsWith('file:') ? fileURLToPath(file) : file;
}

function isShmbusRoot(dir: string): boolean {
  const manifest = join(dir, 'package.json');
  if (!existsSync(manifest)) return false;
  try {
    return (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: unknown }).name === PACKAGE_NAME;
  } catch {
    return false;
  }
}

let root: string | undefined;

/**
 * The directory holding shmbus's package.json: the nearest ancestor of this module's file whose
 * package.json is named `shmbus` (dist/cjs/package.json, which only sets the module type, is
 * skipped). Throws if there is none (the files were copied out of their package).
 */
export function packageRoot(): string {
  if (root !== undefined) return root;
  const start = dirname(thisFile());
  for (let dir = start; ; dir = dirname(dir)) {
    if (isShmbusRoot(dir)) {
      root = dir;
      return dir;
    }
    if (dirname(dir) === dir) break;
  }
  throw new Error(`shmbus: no package.json named "${PACKAGE_NAME}" above ${start}`);
}

/** A require() that resolves as from shmbus's package.json (dependencies, absolute paths). */
export function packageRequire(): NodeJS.Require {
  return createRequire(join(packageRoot(), 'package.json'));
}
