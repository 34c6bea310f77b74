/**
 * Base58 (Bitcoin alphabet) as Solana uses it for public keys and signatures, and the
 * pubkey conversions the Solana data frames need. No dependency.
 *
 * ```ts
 * import { decodeBase58, encodeBase58, pubkeyToString, toPubkey } from './base58.js'; // src/solana/
 *
 * const token = toPubkey('TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA'); // Uint8Array(32)
 * pubkeyToString(token); // 'TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA'
 * encodeBase58(new Uint8Array([0, 0, 1])); // '112': each leading zero byte is one '1'
 * decodeBase58('112'); // Uint8Array [0, 0, 1]
 * ```
 *
 * The conversion is the schoolbook base change, O(n²) in the input length: meant for keys
 * and signatures (32 and 64 bytes), not bulk data. Every function is pure, allocates its
 * result, never blocks, and may be called from any thread.
 */
import { ErrorCode, ShmArgumentError } from '../errors.js';

const ALPHABET = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';

/** Length in bytes of a Solana public key. */
export const PUBKEY_LENGTH = 32;

/** Longest base58 text a 32-byte key can have (58^44 > 256^32 > 58^43). */
export const PUBKEY_MAX_BASE58_LENGTH = 44;

/** Digit value of each ASCII code, -1 where the character is not in the alphabet. */
const DIGIT_OF = (() => {
  const table = new Int8Array(128).fill(-1);
  for (let i = 0; i < ALPHABET.length; i++) table[ALPHABET.charCodeAt(i)] = i;
  return table;
})();

/** Encodes bytes as base58; each leading zero byte becomes one leading '1'. Allocates. */
export function encodeBase58(bytes: Uint8Array): string {
  if (!(bytes instanceof Uint8Array)) {
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `encodeBase58 expects a Uint8Array, got ${describe(bytes)}`);
  }
  const n = bytes.length;
  let zeros = 0;
  while (zeros < n && bytes[zeros] === 0) zeros++;
  // log(256) / log(58) = 1.365...; the +1 absorbs rounding.
  const size = Math.floor(((n - zeros) * 138) / 100) + 1;
  const digits = new Uint8Array(size); // big-endian base-58 digits, filled from the right
  let used = 0;
  for (let i = zeros; i < n; i++) {
    let carry = bytes[i];
    let k = size - 1;
    let j = 0;
    for (; (carry !== 0 || j < used) && k >= 0; k--, j++) {
      carry += 256 * digits[k];
      digits[k] = carry % 58;
      carry = Math.floor(carry / 58);
    }
    used = j;
  }
  let out = '1'.repeat(zeros);
  for (let k = size - used; k < size; k++) out += ALPHABET[digits[k]];
  return out;
}

/**
 * Decodes base58 text; each leading '1' becomes one leading zero byte. The empty string
 * decodes to an empty array. Throws SHM_ERR_INVALID_ARGUMENT (naming the character and its
 * position) on any character outside the alphabet, including whitespace. Allocates.
 */
export function decodeBase58(s: string): Uint8Array {
  if (typeof s !== 'string') {
    throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `decodeBase58 expects a string, got ${describe(s)}`);
  }
  const n = s.length;
  let zeros = 0;
  while (zeros < n && s.charCodeAt(zeros) === 0x31 /* '1' */) zeros++;
  // log(58) / log(256) = 0.732...; the +1 absorbs rounding.
  const size = Math.floor(((n - zeros) * 733) / 1000) + 1;
  const bytes = new Uint8Array(size); // big-endian, filled from the right
  let used = 0;
  for (let i = zeros; i < n; i++) {
    const code = s.charCodeAt(i);
    let carry = code < 128 ? DIGIT_OF[code] : -1;
    if (carry < 0) {
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        `invalid base58 character ${JSON.stringify(s[i])} at position ${i}`,
        { details: { position: i } },
      );
    }
    let k = size - 1;
    let j = 0;
    for (; (carry !== 0 || j < used) && k >= 0; k--, j++) {
      carry += 58 * bytes[k];
      bytes[k] = carry & 0xff;
      carry >>>= 8;
    }
    used = j;
  }
  const out = new Uint8Array(zeros + used);
  out.set(bytes.subarray(size - used), zeros);
  return out;
}

/**
 * A 32-byte public key from its base58 text or from the bytes themselves. A Uint8Array is
 * returned as is (not copied) when it is exactly 32 bytes long. Throws
 * SHM_ERR_INVALID_ARGUMENT for anything else: other lengths, bad base58, other types.
 */
export function toPubkey(x: string | Uint8Array): Uint8Array {
  if (x instanceof Uint8Array) {
    if (x.length !== PUBKEY_LENGTH) {
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        `a pubkey must be exactly ${PUBKEY_LENGTH} bytes, got ${x.length}`,
        { details: { length: x.length } },
      );
    }
    return x;
  }
  if (typeof x === 'string') {
    if (x.length === 0 || x.length > PUBKEY_MAX_BASE58_LENGTH) {
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        `a base58 pubkey is 1..${PUBKEY_MAX_BASE58_LENGTH} characters, got ${x.length}`,
        { details: { length: x.length } },
      );
    }
    let bytes: Uint8Array;
    try {
      bytes = decodeBase58(x);
    } catch (err) {
      throw new ShmArgumentError(ErrorCode.INVALID_ARGUMENT, `pubkey ${JSON.stringify(x)}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (bytes.length !== PUBKEY_LENGTH) {
      throw new ShmArgumentError(
        ErrorCode.INVALID_ARGUMENT,
        `pubkey ${JSON.stringify(x)} decodes to ${bytes.length} bytes, expected ${PUBKEY_LENGTH}`,
        { details: { length: bytes.length } },
      );
    }
    return bytes;
  }
  throw new ShmArgumentError(
    ErrorCode.INVALID_ARGUMENT,
    `a pubkey must be a base58 string or a ${PUBKEY_LENGTH}-byte Uint8Array, got ${describe(x)}`,
  );
}

/** The base58 text of a 32-byte public key; throws SHM_ERR_INVALID_ARGUMENT for other lengths. */
export function pubkeyToString(bytes: Uint8Array): string {
  if (!(bytes instanceof Uint8Array)) {
    throw new ShmArgumentError(
      ErrorCode.INVALID_ARGUMENT,
      `pubkeyToString expects a ${PUBKEY_LENGTH}-byte Uint8Array, got ${describe(bytes)}`,
    );
  }
  return encodeBase58(toPubkey(bytes));
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (typeof x === 'object') return (x as object).constructor?.name ?? 'object';
  return typeof x;
}
