/**
 * How names map to files. A segment named `orders` lives at `<dir>/shmbus.orders`, where
 * `dir` is the `dir` option, else the SHMBUS_DIR environment variable, else /dev/shm.
 * Names are 1..200 characters of [A-Za-z0-9._-], not starting with '.'; anything else
 * (a '/', a NUL, '..', spaces) is refused with SHM_ERR_INVALID_NAME, so a name can never
 * reach outside the directory. Files being created carry a `~` (never valid in a name):
 * `shmbus.orders~<pid>.<random>`.
 */
import { join } from 'node:path';
import { ErrorCode, ShmArgumentError } from '../errors.js';

export const FILE_PREFIX = 'shmbus.';
export const MAX_NAME_LENGTH = 200;
export const DEFAULT_DIR = '/dev/shm';
const NAME_PATTERN = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;

export function validateName(name: unknown): string {
  if (typeof name !== 'string')
    throw new ShmArgumentError(ErrorCode.INVALID_NAME, `name must be a string, got ${typeof name}`);
  if (name.length === 0 || name.length > MAX_NAME_LENGTH)
    throw new ShmArgumentError(
      ErrorCode.INVALID_NAME,
      `name must be 1..${MAX_NAME_LENGTH} characters, got ${name.length}`,
      { details: { name } },
    );
  if (!NAME_PATTERN.test(name))
    throw new ShmArgumentError(
      ErrorCode.INVALID_NAME,
      `name ${JSON.stringify(name)} may only use [A-Za-z0-9._-] and may not start with '.'`,
      { details: { name } },
    );
  return name;
}

export function segmentDir(dir?: string): string {
  return dir ?? process.env.SHMBUS_DIR ?? DEFAULT_DIR;
}

export function segmentPath(name: string, dir?: string): string {
  return join(segmentDir(dir), FILE_PREFIX + validateName(name));
}

/** Prefix of the temporary files of segments of `name` being created. */
export function pendingPrefix(name: string): string {
  return `${FILE_PREFIX}${name}~`;
}
