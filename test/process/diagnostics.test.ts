/**
 * diagnostics_channel events (src/diagnostics.ts), with real processes: a fan-out consumer
 * that connects and is SIGKILLed, one that stops reading until its ring is full, a session
 * peer and a hub peer killed while holding slots.
 */
import assert from 'node:assert/strict';
import diagnostics_channel from 'node:diagnostics_channel';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, test } from 'node:test';
import { DIAGNOSTICS_CHANNELS, ErrorCode, Hub, Sender, Session, ShmError } from '../../src/index.js';
import { type Child, killAtStop, startFixture, uniqueName } from '../helpers/children.js';

const dir = mkdtempSync('/dev/shm/shmbus-diagnostics-test-');
process.env.SHMBUS_DIR = dir;
after(() => rmSync(dir, { recursive: true, force: true }));
const children: Child[] = [];
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (let c = cleanups.pop(); c !== undefined; c = cleanups.pop()) await c();
  for (const child of children.splice(0)) {
    child.kill('SIGKILL');
    await child.exited(20_000);
  }
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Collects every message of every shmbus channel while subscribed. */
function record(): { events: { channel: string; message: Record<string, unknown> }[]; stop: () => void } {
  const events: { channel: string; message: Record<string, unknown> }[] = [];
  const handlers = Object.values(DIAGNOSTICS_CHANNELS).map((channel) => {
    const handler = (message: unknown) => events.push({ channel, message: message as Record<string, unknown> });
    diagnostics_channel.subscribe(channel, handler);
    return [channel, handler] as const;
  });
  const stop = () => {
    for (const [channel, handler] of handlers) diagnostics_channel.unsubscribe(channel, handler);
  };
  cleanups.push(stop);
  return { events, stop };
}

async function until(cond: () => boolean, what: () => string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`not within ${ms} ms: ${what()}`);
    await sleep(10);
  }
}

test('fan-out: peer-connected, peer-died (a SIGKILLed consumer), evicted and lapped (a consumer a ring behind)', async () => {
  const rec = record();
  const path = join(dir, 'diag.sock');
  const sender = await Sender.listen({ path, dir, capacity: 1 << 16 });
  cleanups.push(() => sender.close());
  const dying = startFixture('fanout-consumer', [path, JSON.stringify({ subscribe: { keys: ['k'] } })], {
    SHMBUS_DIR: dir,
  });
  children.push(dying);
  const connected = await dying.waitFor((m) => m.connected === true);
  await until(
    () => rec.events.some((e) => e.channel === 'shmbus:peer-connected' && e.message.pid === connected.pid),
    () => JSON.stringify(rec.events),
  );
  dying.kill('SIGKILL');
  await dying.exited();
  await until(
    () => rec.events.some((e) => e.channel === 'shmbus:peer-died' && e.message.pid === connected.pid),
    () => JSON.stringify(rec.events),
  );
  const died = rec.events.find((e) => e.channel === 'shmbus:peer-died')?.message;
  assert.deepEqual(
    { ...died, id: 0 },
    { primitive: 'fanout', name: path, id: 0, pid: connected.pid, reason: 'disconnect' },
  );

  const slow = startFixture('fanout-consumer', [path, JSON.stringify({ subscribe: { keys: ['k'] }, stall: true })], {
    SHMBUS_DIR: dir,
  });
  children.push(slow);
  const stalled = await slow.waitFor((m) => m.connected === true);
  for (let i = 0; i < 2000 && sender.consumerCount > 0; i++)
    sender.publish({ kind: 1, key: 'k', payload: new Uint8Array(200) });
  await until(
    () => rec.events.some((e) => e.channel === 'shmbus:lapped'),
    () => JSON.stringify(rec.events),
  );
  const evicted = rec.events.find((e) => e.channel === 'shmbus:evicted')?.message;
  assert.equal(evicted?.reason, 'ring-full');
  assert.equal(evicted?.pid, stalled.pid);
  const lapped = rec.events.find((e) => e.channel === 'shmbus:lapped')?.message;
  assert.deepEqual(
    { ...lapped, id: 0 },
    { primitive: 'fanout', name: path, id: 0, pid: stalled.pid, capacity: 1 << 16 },
  );

  // Unsubscribed: nothing more is recorded.
  rec.stop();
  const before = rec.events.length;
  const again = startFixture('fanout-consumer', [path, JSON.stringify({ subscribe: { keys: ['k'] } })], {
    SHMBUS_DIR: dir,
  });
  children.push(again);
  await again.waitFor((m) => m.connected === true);
  assert.equal(rec.events.length, before);
});

test('session and hub: peer-died and recovered (its slots) once, when a peer killed holding slots is found dead', async () => {
  const rec = record();
  const name = uniqueName('diag-session');
  const a = Session.create(name, { slotSize: 4096, slotCount: 8, livenessCheckMs: 20, startupMs: 20_000 });
  cleanups.push(() => a.close());
  const b = startFixture('crash-point', ['session-b', JSON.stringify({ name, seed: 1, hold: 5 })], {
    SHMBUS_DIR: dir,
    SHMBUS_TEST_STOP_AT: 'session.holding-slot:3',
  });
  children.push(b);
  const bPid = b.proc.pid;
  await killAtStop(b, 'session.holding-slot:3');
  for (let k = 0; k < 2; k++)
    await assert.rejects(
      a.recv({ timeoutMs: 5000 }),
      (e: unknown) => e instanceof ShmError && e.code === ErrorCode.PEER_DEAD,
    );
  const sessionEvents = rec.events.filter((e) => e.message.primitive === 'session');
  assert.deepEqual(
    sessionEvents.map((e) => [e.channel, e.message]),
    [
      ['shmbus:peer-died', { primitive: 'session', name, peer: 'B', pid: bPid }],
      ['shmbus:recovered', { primitive: 'session', name, what: 'slots', count: 3, pid: bPid }],
    ],
  );

  const hubName = uniqueName('diag-hub');
  const host = Hub.create(hubName, {
    maxPeers: 2,
    classes: [
      { slotSize: 1024, slotCount: 8 },
      { slotSize: 4096, slotCount: 8 },
    ],
    livenessCheckMs: 20,
  });
  cleanups.push(() => host.close());
  const peer = startFixture('crash-point', ['hub-peer', JSON.stringify({ name: hubName, seed: 1, hold: 4 })], {
    SHMBUS_DIR: dir,
    SHMBUS_TEST_STOP_AT: 'hub.holding-slot:4',
  });
  children.push(peer);
  const peerPid = peer.proc.pid;
  await killAtStop(peer, 'hub.holding-slot:4');
  await assert.rejects(host.recv({ timeoutMs: 300 }), (e: unknown) => e instanceof ShmError);
  await until(
    () => rec.events.some((e) => e.message.primitive === 'hub' && e.channel === 'shmbus:recovered'),
    () => JSON.stringify(rec.events),
  );
  const hubEvents = rec.events.filter((e) => e.message.primitive === 'hub');
  assert.deepEqual(
    hubEvents.map((e) => [e.channel, e.message]),
    [
      ['shmbus:peer-died', { primitive: 'hub', name: hubName, peer: 0, pid: peerPid }],
      ['shmbus:recovered', { primitive: 'hub', name: hubName, what: 'slots', count: 4, pid: peerPid }],
    ],
  );
});
