// BullMQ side of the queue benchmark. Usage: node bullmq-bench.mjs PORT
// Prints one JSON object with the same measurements the Rust side makes (see README.md).
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const port = Number(process.argv[2]);
if (!port) {
  console.error('usage: node bullmq-bench.mjs PORT');
  process.exit(2);
}
const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
const N = {
  single: Number(process.env.N_SINGLE ?? 5000),
  concurrent: Number(process.env.N_CONCURRENT ?? 20000),
  bulk: Number(process.env.N_BULK ?? 50000),
  c1: Number(process.env.N_C1 ?? 5000),
  c32: Number(process.env.N_C32 ?? 50000),
  latency: Number(process.env.N_LATENCY ?? 2000),
};
const nowMs = () => performance.timeOrigin + performance.now();

async function flush() {
  const r = new IORedis(connection);
  await r.flushall();
  r.disconnect();
}

async function timed(name, fn) {
  await flush();
  const q = new Queue(name, { connection });
  await q.waitUntilReady();
  const t0 = nowMs();
  const n = await fn(q);
  const secs = (nowMs() - t0) / 1000;
  await q.close();
  return n / secs;
}

const enqueueSingle = () =>
  timed('single', async (q) => {
    for (let i = 0; i < N.single; i++) await q.add('noop', { i });
    return N.single;
  });

const enqueueConcurrent = (adders) =>
  timed('concurrent', async (q) => {
    const per = Math.floor(N.concurrent / adders);
    await Promise.all(
      Array.from({ length: adders }, async (_, a) => {
        for (let i = 0; i < per; i++) await q.add('noop', { a, i });
      }),
    );
    return per * adders;
  });

const enqueueBulk = (batch) =>
  timed('bulk', async (q) => {
    for (let s = 0; s < N.bulk; s += batch) {
      const jobs = [];
      for (let i = s; i < Math.min(N.bulk, s + batch); i++) jobs.push({ name: 'noop', data: { i } });
      await q.addBulk(jobs);
    }
    return N.bulk;
  });

async function processing(n, concurrency) {
  await flush();
  const q = new Queue('proc', { connection });
  for (let s = 0; s < n; s += 1000) {
    const jobs = [];
    for (let i = s; i < Math.min(n, s + 1000); i++) jobs.push({ name: 'noop', data: { i } });
    await q.addBulk(jobs);
  }
  let done = 0;
  let finish;
  const finished = new Promise((r) => (finish = r));
  const t0 = nowMs();
  const w = new Worker('proc', async () => {}, {
    connection,
    concurrency,
    removeOnComplete: { count: 10000 },
  });
  w.on('completed', () => {
    if (++done === n) finish();
  });
  await finished;
  const secs = (nowMs() - t0) / 1000;
  await w.close();
  await q.close();
  return n / secs;
}

async function latency(n, concurrency) {
  await flush();
  const q = new Queue('lat', { connection });
  const samples = [];
  let finish;
  const finished = new Promise((r) => (finish = r));
  const w = new Worker(
    'lat',
    async (job) => {
      samples.push(nowMs() - job.data.t);
      if (samples.length === n) finish();
    },
    { connection, concurrency, removeOnComplete: { count: 10000 } },
  );
  await w.waitUntilReady();
  // Let the worker reach its blocking wait before the first job.
  await new Promise((r) => setTimeout(r, 500));
  for (let i = 0; i < n; i++) await q.add('noop', { t: nowMs() });
  await finished;
  await w.close();
  await q.close();
  samples.sort((a, b) => a - b);
  const pct = (p) => samples[Math.min(samples.length - 1, Math.floor((p / 100) * samples.length))];
  return { p50_ms: pct(50), p99_ms: pct(99) };
}

const result = {
  impl: 'bullmq',
  version: JSON.parse(
    await (await import('node:fs/promises')).readFile(
      new URL('./node_modules/bullmq/package.json', import.meta.url),
    ),
  ).version,
  node: process.version,
  n: N,
  enqueue_single_per_s: await enqueueSingle(),
  enqueue_concurrent8_per_s: await enqueueConcurrent(8),
  enqueue_bulk1000_per_s: await enqueueBulk(1000),
  process_c1_per_s: await processing(N.c1, 1),
  process_c32_per_s: await processing(N.c32, 32),
  latency_c32: await latency(N.latency, 32),
};
console.log(JSON.stringify(result));
process.exit(0);
