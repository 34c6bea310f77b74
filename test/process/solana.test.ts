/**
 * shmbus/solana across real processes: setupSender() in this process, setupShmConsumer()
 * in children (test/fixtures/solana-consumer.ts) that print every update they get.
 *
 * Delivery rules under test: an account update reaches a consumer that subscribed its pubkey
 * OR its owner; transactions only after subscribeTransactions() (sticky); slot updates
 * always. A consumer child obeys commands sent as account updates for the CTL pubkey.
 * Negative checks observe for a while, then prove the consumer alive with a matching update
 * of the same stream published afterwards (each stream is FIFO). Each test has its own
 * socket path and ring directory; every wait has a deadline; nothing asserts a duration.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, test } from 'node:test';
import {
  type AccountUpdateInput,
  encodeBase58,
  type SolanaSender,
  type SolanaSenderConfig,
  setupSender,
  type TransactionUpdateInput,
} from '../../src/solana/index.js';
import { type Child, startFixture } from '../helpers/children.js';
import { prng, testSeed } from '../helpers/prng.js';

const DEADLINE_MS = 20_000;
const U64_MAX = 2n ** 64n - 1n;
const CTL = encodeBase58(new Uint8Array(32).fill(0xcc));
const utf8 = (s: string) => new TextEncoder().encode(s);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  const failures: unknown[] = [];
  for (let cleanup = cleanups.pop(); cleanup !== undefined; cleanup = cleanups.pop()) {
    try {
      await cleanup();
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length > 0) throw failures[0];
});

let sockets = 0;
async function listen(
  config: Partial<SolanaSenderConfig> = {},
): Promise<{ sut: SolanaSender; dir: string; path: string }> {
  sockets += 1;
  const path = join(tmpdir(), `shmbus-sol-${process.pid}-${sockets}.sock`);
  cleanups.push(() => rmSync(path, { force: true }));
  const dir = mkdtempSync('/dev/shm/shmbus-sol-');
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const sut = await setupSender({ path, dir, capacity: 1 << 20, ...config });
  cleanups.push(() => sut.close());
  return { sut, dir, path };
}

interface ChildConfig {
  pubkeys?: string[];
  owners?: string[];
  transactions?: boolean;
  ctl?: boolean;
  mode?: 'iter' | 'poll';
}

async function connected(path: string, dir: string, config: ChildConfig = {}): Promise<Child> {
  const child = startFixture('solana-consumer', [path, JSON.stringify(config)], { SHMBUS_DIR: dir });
  cleanups.push(async () => {
    child.kill('SIGKILL');
    await child.exited(DEADLINE_MS);
  });
  const first = await child.waitFor((m) => m.connected === true || m.connectError !== undefined, DEADLINE_MS);
  assert.equal(first.connected, true, JSON.stringify(first));
  return child;
}

interface GotAccount {
  pubkey: string;
  owner: string;
  lamports: string;
  executable: boolean;
  rentEpoch: string;
  slot: string;
  writeVersion: string;
  dataLength: number;
  data: string | null;
  sha256: string;
  compressed: boolean;
}
const accounts = (c: Child) => c.messages.filter((m) => m.account).map((m) => m.account as GotAccount);
const txs = (c: Child) => c.messages.filter((m) => m.tx).map((m) => m.tx as Record<string, unknown>);
const slots = (c: Child) => c.messages.filter((m) => m.slot !== undefined).map((m) => m.slot as string);

let commands = 0;
async function command(
  sut: SolanaSender,
  child: Child,
  op: string,
  keys: { pubkeys?: string[]; owners?: string[] } = {},
): Promise<Record<string, unknown>> {
  const id = ++commands;
  const reached = sut.publishAccount({
    pubkey: CTL,
    owner: CTL,
    lamports: 0,
    executable: false,
    rentEpoch: 0,
    slot: 0,
    writeVersion: 0,
    data: utf8(JSON.stringify({ id, op, ...keys })),
  });
  assert.equal(reached, 1, `command ${op}`);
  const ack = await child.waitFor((m) => m.ack === id, DEADLINE_MS);
  assert.equal(ack.error, undefined, JSON.stringify(ack.error));
  return ack;
}

/** A pubkey from a seeded PRNG, as base58. */
function pubkeys(random: () => number, n: number): string[] {
  return Array.from({ length: n }, () =>
    encodeBase58(Uint8Array.from({ length: 32 }, () => Math.floor(random() * 256))),
  );
}

function account(
  pubkey: string,
  owner: string,
  writeVersion: number,
  data = utf8(`v${writeVersion}`),
): AccountUpdateInput {
  return {
    pubkey,
    owner,
    lamports: 1000 + writeVersion,
    executable: false,
    rentEpoch: 7,
    slot: 100,
    writeVersion,
    data,
  };
}

function expectAccount(u: AccountUpdateInput, compressed = false): GotAccount {
  return {
    pubkey: typeof u.pubkey === 'string' ? u.pubkey : encodeBase58(u.pubkey),
    owner: typeof u.owner === 'string' ? u.owner : encodeBase58(u.owner),
    lamports: BigInt(u.lamports).toString(),
    executable: u.executable,
    rentEpoch: BigInt(u.rentEpoch).toString(),
    slot: BigInt(u.slot).toString(),
    writeVersion: BigInt(u.writeVersion).toString(),
    dataLength: u.data.length,
    data: u.data.length <= 4096 ? hex(u.data) : null,
    sha256: sha256(u.data),
    compressed,
  };
}

function transaction(slot: number, index: number, random: () => number): TransactionUpdateInput {
  return {
    slot,
    index,
    signature: Uint8Array.from({ length: 64 }, () => Math.floor(random() * 256)),
    isVote: index % 2 === 1,
    payload: Uint8Array.from({ length: 50 + index }, (_, i) => (i * 13 + index) & 0xff),
  };
}

function expectTx(t: TransactionUpdateInput): Record<string, unknown> {
  return {
    slot: BigInt(t.slot).toString(),
    index: t.index,
    signature: encodeBase58(t.signature as Uint8Array),
    isVote: t.isVote,
    payload: hex(t.payload),
  };
}

describe('Solana streams across processes', () => {
  test('an account update reaches a consumer by pubkey or owner with every field intact; others never', async () => {
    const seed = testSeed();
    const random = prng(seed);
    const [p1, p2, p3, o1, o2, o3] = pubkeys(random, 6);
    const { sut, dir, path } = await listen();
    const child = await connected(path, dir, { pubkeys: [p1], owners: [o1] });

    const misses = [account(p2, o2, 1), account(p3, o3, 2), account(o1, p1, 3)]; // o1/p1 swapped roles
    for (const u of misses) assert.equal(sut.publishAccount(u), 0, `seed ${seed}`);
    await sleep(300);
    assert.deepEqual(accounts(child), []);

    const hits: AccountUpdateInput[] = [
      {
        pubkey: p1,
        owner: o3,
        lamports: U64_MAX,
        executable: true,
        rentEpoch: 2n ** 63n,
        slot: 2n ** 40n + 3n,
        writeVersion: U64_MAX - 1n,
        data: Uint8Array.from({ length: 300 }, (_, i) => (i * 7 + 1) & 0xff),
      },
      {
        pubkey: p3,
        owner: o1,
        lamports: 0,
        executable: false,
        rentEpoch: 0,
        slot: 1,
        writeVersion: 0,
        data: new Uint8Array(0),
      },
      { ...account(p1, o1, 9), data: new Uint8Array(10_000).fill(0x5a) }, // both match: once
    ];
    for (const u of hits) assert.equal(sut.publishAccount(u), 1, `seed ${seed}`);
    await child.waitFor(() => accounts(child).length >= hits.length, DEADLINE_MS);
    await sleep(100);
    assert.deepEqual(
      accounts(child),
      hits.map((u) => expectAccount(u)),
      `seed ${seed}`,
    );
    const ack = await command(sut, child, 'metrics');
    assert.equal((ack.metrics as { accounts: number }).accounts, hits.length + 1); // + the command itself
    assert.ok(sut.metrics.dispatches >= misses.length + hits.length);
    assert.equal(sut.senderMetrics().unmatched, misses.length);
  });

  test('transactions arrive only after subscribeTransactions(), which stays in force through later subscribe calls', async () => {
    const seed = testSeed();
    const random = prng(seed);
    const [p1, p2, o1] = pubkeys(random, 3);
    const { sut, dir, path } = await listen();
    const child = await connected(path, dir, { pubkeys: [p1] });
    const t = Array.from({ length: 6 }, (_, i) => transaction(500 + i, i, random));

    assert.equal(sut.publishTransaction(t[0]), 0, 'not opted in');
    await sleep(300);
    await command(sut, child, 'subscribeTransactions');
    assert.equal(sut.publishTransaction(t[1]), 1);
    await command(sut, child, 'subscribe', { pubkeys: [p2] });
    await command(sut, child, 'subscribe', { owners: [o1] });
    await command(sut, child, 'unsubscribe', { pubkeys: [p1, p2] });
    await command(sut, child, 'subscribe', { pubkeys: [p1] });
    assert.equal(sut.publishTransaction(t[2]), 1, 'still opted in after four subscription changes');
    assert.equal(sut.publishTransaction(t[3]), 1);
    await command(sut, child, 'unsubscribeTransactions');
    assert.equal(sut.publishTransaction(t[4]), 0, 'opted out');
    await sleep(300);
    await command(sut, child, 'subscribeTransactions');
    assert.equal(sut.publishTransaction(t[5]), 1);
    await child.waitFor(() => txs(child).length >= 4, DEADLINE_MS);
    await sleep(100);
    assert.deepEqual(txs(child), [t[1], t[2], t[3], t[5]].map(expectTx), `seed ${seed}`);
  });

  test('slot updates reach every consumer without any subscription, in order, with either reading style', async () => {
    const { sut, dir, path } = await listen();
    const iter = await connected(path, dir, { ctl: false });
    const poll = await connected(path, dir, { ctl: false, mode: 'poll' });
    const random = prng(testSeed());
    const [p, o] = pubkeys(random, 2);
    assert.equal(sut.publishAccount(account(p, o, 1)), 0, 'no account subscriptions');
    assert.equal(sut.publishTransaction(transaction(1, 0, random)), 0, 'no transaction opt-in');
    const expected = ['0', '1', '250000000', '18446744073709551615'];
    for (const s of [0n, 1n, 250_000_000n, U64_MAX]) assert.equal(sut.publishSlot({ slot: s }), 2);
    for (const c of [iter, poll]) {
      await c.waitFor(() => slots(c).length >= expected.length, DEADLINE_MS);
      await sleep(100);
      assert.deepEqual(slots(c), expected);
      assert.deepEqual(accounts(c), []);
      assert.deepEqual(txs(c), []);
    }
  });

  test('two consumers with disjoint pubkeys and owners never see each other’s accounts', async () => {
    const seed = testSeed();
    const random = prng(seed);
    const [pa, pb, oa, ob, px, ox] = pubkeys(random, 6);
    const { sut, dir, path } = await listen();
    const a = await connected(path, dir, { pubkeys: [pa], owners: [oa], ctl: false });
    const b = await connected(path, dir, { pubkeys: [pb], owners: [ob], ctl: false, transactions: true });
    const shapes = [
      { pubkey: pa, owner: ox, toA: true, toB: false },
      { pubkey: px, owner: oa, toA: true, toB: false },
      { pubkey: pb, owner: ox, toA: false, toB: true },
      { pubkey: px, owner: ob, toA: false, toB: true },
      { pubkey: pa, owner: ob, toA: true, toB: true },
      { pubkey: px, owner: ox, toA: false, toB: false },
    ];
    const expectA: string[] = [];
    const expectB: string[] = [];
    for (let i = 0; i < 200; i++) {
      const s = shapes[Math.floor(random() * shapes.length)];
      assert.equal(sut.publishAccount(account(s.pubkey, s.owner, i)), Number(s.toA) + Number(s.toB), `seed ${seed}`);
      if (s.toA) expectA.push(String(i));
      if (s.toB) expectB.push(String(i));
    }
    assert.equal(sut.publishTransaction(transaction(9, 0, random)), 1, 'only B opted in to transactions');
    assert.equal(sut.publishSlot({ slot: 42 }), 2);
    for (const c of [a, b]) await c.waitFor((m) => m.slot === '42', DEADLINE_MS);
    await sleep(200);
    assert.deepEqual(
      accounts(a).map((x) => x.writeVersion),
      expectA,
      `seed ${seed}: A`,
    );
    assert.deepEqual(
      accounts(b).map((x) => x.writeVersion),
      expectB,
      `seed ${seed}: B`,
    );
    assert.equal(txs(a).length, 0);
    assert.equal(txs(b).length, 1);
  });

  test('account data is LZ4-compressed exactly from 512,000 compressible bytes and arrives identical', async () => {
    const seed = testSeed();
    const random = prng(seed);
    const [p, o] = pubkeys(random, 2);
    const { sut, dir, path } = await listen({ capacity: 1 << 22 });
    const child = await connected(path, dir, { pubkeys: [p] });
    const line = utf8('{"mint":"So11111111111111111111111111111111111111112","amount":1}\n');
    const compressible = (n: number) => Uint8Array.from({ length: n }, (_, i) => line[i % line.length]);
    const noise = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(random() * 256));
    const cases = [
      { data: compressible(511_999), compressed: false },
      { data: compressible(512_000), compressed: true },
      { data: noise(512_000), compressed: false },
      { data: compressible(1_500_000), compressed: true },
    ];
    for (const [i, c] of cases.entries()) {
      assert.equal(sut.publishAccount(account(p, o, i, c.data)), 1);
      await child.waitFor(() => accounts(child).length === i + 1, DEADLINE_MS);
      assert.deepEqual(accounts(child)[i], expectAccount(account(p, o, i, c.data), c.compressed), `seed ${seed}: ${i}`);
    }
    const dirFiles = readdirSync(dir).filter((f) => f.startsWith('shmbus.fanout-'));
    assert.equal(dirFiles.length, 1, 'one ring for the one consumer');
    assert.equal(readdirSync(dir).filter((f) => f.startsWith('shmbus.sender.')).length, 1, "the sender's registration");
  });
});
