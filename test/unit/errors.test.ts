import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { ErrorCode, fromSystemError, type ShmError, ShmSegmentError, ShmSystemError } from '../../src/errors.js';

const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
const documented = [...doc.matchAll(/^\| `(SHM_ERR_[A-Z_]+)` \|/gm)].map((m) => m[1]);

test('docs/errors.md documents every error code, and only those', () => {
  assert.deepEqual([...documented].sort(), Object.values(ErrorCode).sort());
});

test('every code is unique and starts with SHM_ERR_', () => {
  const codes = Object.values(ErrorCode);
  assert.equal(new Set(codes).size, codes.length);
  for (const code of codes) assert.match(code, /^SHM_ERR_[A-Z_]+$/);
});

test('system errors map to their codes and keep the original as cause', () => {
  const table: [string, string, typeof ShmError][] = [
    ['ENOENT', ErrorCode.NOT_FOUND, ShmSegmentError],
    ['EEXIST', ErrorCode.EXISTS, ShmSegmentError],
    ['ENOSPC', ErrorCode.NO_SPACE, ShmSystemError],
    ['EACCES', ErrorCode.PERMISSION, ShmSystemError],
    ['EPERM', ErrorCode.PERMISSION, ShmSystemError],
    ['EIO', ErrorCode.SYSTEM, ShmSystemError],
  ];
  for (const [errno, code, cls] of table) {
    const cause = Object.assign(new Error(`${errno}: boom, open '/x'`), { code: errno, errno: -1, syscall: 'open' });
    const sut = fromSystemError(cause, 'open x');
    assert.ok(sut instanceof cls, errno);
    assert.equal(sut.code, code);
    assert.equal(sut.cause, cause);
    assert.match(sut.message, /open x/);
  }
  const nospace = fromSystemError(Object.assign(new Error('x'), { code: 'ENOSPC', syscall: 'posix_fallocate' }), 'c');
  assert.equal((nospace as ShmSystemError).syscall, 'posix_fallocate');
});
