/**
 * The Prometheus adapter against real prom-client: a producer child process streams into a
 * channel this process consumes, a blob store and a session of this process sit beside it,
 * and the scraped text must carry their shared-memory counters; the SIGKILLed producer shows
 * up as dead, a removed segment disappears from the next scrape.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { after, test } from 'node:test';
import client from 'prom-client';
import { PUBLISH_FRAMES } from '../../src/core/spsc-ring.js';
import { BlobStore, Channel, PROMETHEUS_METRICS, registerPrometheusMetrics, Session } from '../../src/index.js';
import { type Child, startFixture, uniqueName } from '../helpers/children.js';
import { slow as scaled } from '../helpers/slow.js';

const dir = mkdtempSync('/dev/shm/shmbus-prom-test-');
after(() => rmSync(dir, { recursive: true, force: true }));

/** The value of one sample line `name{labels} value` of the exposition text, or undefined. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inner = line.slice(name.length + 1, line.indexOf('}'));
    const got = inner.split(',');
    if (want.every((w) => got.includes(w))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = scaled(20_000)): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a scrape carries every segment kind with its shared-memory counters, across processes', async () => {
  const n = uniqueName('prom');
  const registry = new client.Registry();
  const sut = registerPrometheusMetrics(client, { registry, dir, snapshotMs: 0 });
  const producer = startFixture('channel-producer', [`${n}-ch`, '1', '7', '200', 'park', 'forever'], {
    SHMBUS_DIR: dir,
  });
  const store = BlobStore.create(`${n}-blobs`, { dir, chunkSize: 1 << 16 });
  const session = Session.create(`${n}-sess`, { dir, slotSize: 4096, slotCount: 8 });
  try {
    await producer.waitFor((m) => m.ready === true);
    const rx = Channel.open(`${n}-ch`, { dir });
    let received = 0;
    for (const deadline = Date.now() + 20_000; received < 5000 && Date.now() < deadline; ) {
      if (rx.tryRecv() !== null) received++;
      else await new Promise((r) => setImmediate(r));
    }
    assert.equal(received, 5000);
    for (let i = 0; i < 200; i++) store.append(new Uint8Array(100).fill(i));

    const text = await registry.metrics();
    for (const name of PROMETHEUS_METRICS) assert.match(text, new RegExp(`^# TYPE shmbus_${name} gauge$`, 'm'));
    const ch = { segment: `${n}-ch` };
    assert.equal(sample(text, 'shmbus_segment_owner_alive', { ...ch, kind: 'channel' }), 1);
    assert.equal(sample(text, 'shmbus_channel_consumer_alive', ch), 1);
    // The producer's own counter, written by the child; the consumer's, written here.
    assert.ok((sample(text, 'shmbus_channel_sent_frames_total', ch) ?? 0) >= 5000);
    // The consumer publishes its totals with its head, every PUBLISH_FRAMES releases.
    const released = sample(text, 'shmbus_channel_received_frames_total', ch) ?? 0;
    assert.ok(released >= 5000 - 2 * PUBLISH_FRAMES && released <= 5000, `received_frames_total ${released}`);
    assert.equal(sample(text, 'shmbus_channel_capacity_bytes', ch), 1 << 16);
    assert.notEqual(sample(text, 'shmbus_channel_fill_bytes', { ...ch, ring: '0' }), undefined);
    const blobs = { segment: `${n}-blobs` };
    // Each writer adds its appends to the shared counter 64 at a time.
    assert.equal(sample(text, 'shmbus_blob_appends_total', blobs), 192);
    assert.equal(sample(text, 'shmbus_blob_chunks', { ...blobs, state: 'active' }), 1);
    assert.equal(sample(text, 'shmbus_segment_owner_alive', { segment: `${n}-sess`, kind: 'session' }), 1);

    // Counters move between scrapes while the producer runs.
    const sent1 = sample(text, 'shmbus_channel_sent_frames_total', ch) ?? 0;
    for (let i = 0; i < 2000; )
      if (rx.tryRecv() !== null) i++;
      else await new Promise((r) => setImmediate(r));
    const sent2 = sample(await registry.metrics(), 'shmbus_channel_sent_frames_total', ch) ?? 0;
    assert.ok(sent2 > sent1, `sent ${sent1} then ${sent2}`);

    producer.kill('SIGKILL');
    await producer.exited();
    await until('the killed producer is scraped as dead', async () =>
      sample(await registry.metrics(), 'shmbus_segment_owner_alive', { ...ch, kind: 'channel' }) === 0
        ? true
        : undefined,
    );
    rx.close();
    session.close();
    const gone = await registry.metrics();
    assert.equal(sample(gone, 'shmbus_segment_bytes', { segment: `${n}-sess`, kind: 'session' }), undefined);
  } finally {
    producer.kill('SIGKILL');
    store.close();
    sut.unregister();
  }
  assert.equal(registry.getMetricsAsArray().length, 0, 'unregister removed every metric');
});

test('a filter limits the segments, a prefix renames the metrics, a bad client is a typed error', async () => {
  const n = uniqueName('promf');
  const registry = new client.Registry();
  const a = Channel.create(`${n}-a`, { dir, capacity: 1 << 12 });
  const b = Channel.create(`${n}-b`, { dir, capacity: 1 << 12 });
  try {
    registerPrometheusMetrics(client, { registry, dir, prefix: 'ipc_', filter: (s) => s.name === `${n}-a` });
    const text = await registry.metrics();
    assert.equal(sample(text, 'ipc_channel_capacity_bytes', { segment: `${n}-a` }), 1 << 12);
    assert.equal(sample(text, 'ipc_channel_capacity_bytes', { segment: `${n}-b` }), undefined);
    assert.doesNotMatch(text, /^shmbus_/m);
  } finally {
    a.close();
    b.close();
  }
  assert.throws(() => registerPrometheusMetrics({} as never), { code: 'SHM_ERR_INVALID_ARGUMENT' });
  assert.throws(() => registerPrometheusMetrics(client, { prefix: 'bad prefix' }), {
    code: 'SHM_ERR_INVALID_ARGUMENT',
  });
});

test('fan-out consumers, a daemon and a session under live traffic: per-consumer deliveries, lag and latency, state version, slots by state', async () => {
  const n = uniqueName('promt');
  const path = `${dir}/${n}.sock`;
  const children: Child[] = [];
  const start = async (role: string, name: string, config: object = {}) => {
    const child = startFixture('traffic', [role, name, JSON.stringify(config)], { SHMBUS_DIR: dir });
    children.push(child);
    const m = await child.waitFor((x) => x.ready === true || x.error !== undefined, scaled(15_000));
    assert.equal(m.ready, true, JSON.stringify(m));
  };
  const registry = new client.Registry();
  const sut = registerPrometheusMetrics(client, { registry, dir, snapshotMs: 0 });
  try {
    await start('sender', `${n}-fan`, { path });
    await start('consumer', 'c', { path, name: 'reader', subscribe: { keys: ['k1'] } });
    await start('daemon', `${n}-d`);
    await start('client', `${n}-d`);
    await start('session-a', `${n}-s`);
    await start('session-b', `${n}-s`);
    const text = await until('every kind has moved', async () => {
      const t = await registry.metrics();
      const line = t
        .split('\n')
        .find((l) => l.startsWith('shmbus_fanout_consumer_delivered_total{') && l.includes('name="reader"'));
      const delivered = line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
      const version = sample(t, 'shmbus_daemon_state_version', { segment: `${n}-d` }) ?? 0;
      const latency = t
        .split('\n')
        .some((l) => l.startsWith('shmbus_channel_latency_seconds{') && l.includes('quantile="0.99"'));
      return delivered > 0 && version > 0 && latency ? t : undefined;
    });
    const fan = text.split('\n').filter((l) => l.startsWith('shmbus_fanout_consumer_lag_frames{'));
    assert.equal(fan.length, 1, fan.join('\n'));
    assert.match(fan[0], /name="reader"/);
    assert.equal(sample(text, 'shmbus_fanout_consumers', { segment: fanSegment(text) }), 1);
    const slots = ['free', 'held', 'in_flight'].map(
      (state) => sample(text, 'shmbus_session_slots', { segment: `${n}-s`, state }) ?? -1,
    );
    assert.ok(
      slots.every((v) => v >= 0),
      `session slots ${slots}`,
    );
    assert.equal(slots[0] + slots[1] + slots[2], 8);
    assert.ok((sample(text, 'shmbus_daemon_max_clients', { segment: `${n}-d` }) ?? 0) >= 1);
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await Promise.all(children.map((c) => c.exited()));
    sut.unregister();
  }
});

/** The segment label of the one fan-out sender in a scrape. */
function fanSegment(text: string): string {
  const line = text.split('\n').find((l) => l.startsWith('shmbus_fanout_consumers{'));
  const m = /segment="([^"]+)"/.exec(line ?? '');
  if (m === null) throw new Error('no fan-out sender in the scrape');
  return m[1];
}
