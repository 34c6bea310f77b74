/**
 * The addon loader (src/native/binding.ts load(), src/native/package-root.ts) over copies of the
 * compiled loader in a scratch package: which file it picks among build/ and prebuilds/, and the
 * SHM_ERR_NATIVE_UNAVAILABLE message when nothing loads. Both builds: dist/src (ES modules) and
 * dist/cjs (CommonJS, `npm run build:ts`). Each case runs in a child process (the loader caches
 * the addon per process) and reads the loaded file back from the module cache.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { libcFlavor } from '../../src/native/binding.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const child = fileURLToPath(new URL('../fixtures/load-addon.js', import.meta.url));
const built = join(repo, 'build', 'Release', 'shmbus.node');
const report = process.report.getReport() as { header: { glibcVersionRuntime?: string } };
const libc = report.header.glibcVersionRuntime !== undefined ? 'glibc' : 'musl';
const otherLibc = libc === 'glibc' ? 'musl' : 'glibc';
const formats = ['esm', 'cjs'] as const;

let scratch: string | undefined;
afterEach(() => {
  if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
  scratch = undefined;
});

/** A package named shmbus holding only the compiled loader of both builds; returns its root. */
function scratchPackage(): string {
  assert.ok(existsSync(join(repo, 'dist/cjs/native/binding.js')), 'dist/cjs is missing: npm run build:ts');
  scratch = mkdtempSync(join(tmpdir(), 'shmbus-loader-'));
  const root = join(scratch, 'node_modules', 'shmbus');
  cpSync(join(repo, 'dist/src/native'), join(root, 'dist/src/native'), { recursive: true });
  cpSync(join(repo, 'dist/cjs/native'), join(root, 'dist/cjs/native'), { recursive: true });
  // The loader throws a ShmSystemError (src/errors.ts: no further imports).
  for (const build of ['dist/src', 'dist/cjs']) cpSync(join(repo, build, 'errors.js'), join(root, build, 'errors.js'));
  writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'shmbus', type: 'module' }));
  writeFileSync(join(root, 'dist/cjs/package.json'), JSON.stringify({ type: 'commonjs' }));
  return root;
}

function place(root: string, relative: string, from?: string): string {
  const file = join(root, relative);
  mkdirSync(join(file, '..'), { recursive: true });
  if (from === undefined) writeFileSync(file, 'not an ELF file\n'.repeat(100));
  else copyFileSync(from, file);
  return file;
}

function load(
  root: string,
  format: 'esm' | 'cjs',
  env: NodeJS.ProcessEnv = {},
): { addon?: string; code?: string; message?: string; name?: string } {
  const binding = join(root, format === 'esm' ? 'dist/src/native/binding.js' : 'dist/cjs/native/binding.js');
  const { SHMBUS_ADDON: _, ...inherited } = process.env;
  const out = execFileSync(process.execPath, [child, binding, format], {
    env: { ...inherited, ...env },
    encoding: 'utf8',
    timeout: 30_000,
  });
  return JSON.parse(out);
}

const prebuildDir = `prebuilds/${process.platform}-${process.arch}`;

test('libcFlavor() agrees with process.report (glibc builds of node report their glibc version)', () => {
  assert.equal(libcFlavor(), libc);
});

for (const format of formats) {
  test(`${format}: without build/ it loads the prebuild for this platform and libc, never the other libc's`, () => {
    const root = scratchPackage();
    const prebuild = place(root, `${prebuildDir}/shmbus.${libc}.node`, built);
    place(root, `${prebuildDir}/shmbus.${otherLibc}.node`);
    assert.deepEqual(load(root, format), { addon: prebuild });
  });

  test(`${format}: a source build in build/Release wins over a prebuild`, () => {
    const root = scratchPackage();
    place(root, `${prebuildDir}/shmbus.${libc}.node`, built);
    const release = place(root, 'build/Release/shmbus.node', built);
    assert.deepEqual(load(root, format), { addon: release });
  });

  test(`${format}: when nothing loads, the error names the platform tuple and every file tried with why`, () => {
    const root = scratchPackage();
    const broken = place(root, `${prebuildDir}/shmbus.${libc}.node`);
    const sut = load(root, format);
    assert.equal(sut.code, 'SHM_ERR_NATIVE_UNAVAILABLE');
    assert.equal(sut.name, 'ShmSystemError');
    const tuple =
      `os=${process.platform} arch=${process.arch} libc=${libc} ` +
      `node=${process.versions.node} napi=${process.versions.napi}`;
    assert.ok(sut.message?.includes(tuple), sut.message);
    assert.ok(sut.message?.includes(`${join(root, 'build/Release/shmbus.node')} (absent)`), sut.message);
    assert.ok(sut.message?.includes(`${join(root, 'build/Debug/shmbus.node')} (absent)`), sut.message);
    assert.match(sut.message ?? '', new RegExp(`${broken.replaceAll('.', '\\.')} \\(.*invalid ELF header`));
    assert.ok(sut.message?.includes('npm rebuild shmbus'), sut.message);
  });

  test(`${format}: SHMBUS_ADDON is the only file tried`, () => {
    const root = scratchPackage();
    place(root, `${prebuildDir}/shmbus.${libc}.node`, built);
    const missing = join(root, 'elsewhere.node');
    const sut = load(root, format, { SHMBUS_ADDON: missing });
    assert.equal(sut.code, 'SHM_ERR_NATIVE_UNAVAILABLE');
    assert.ok(sut.message?.includes(`Tried: ${missing} (absent).`), sut.message);
    assert.ok(!sut.message?.includes('prebuilds'), sut.message);
  });
}
