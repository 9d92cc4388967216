import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { createEngine } from '../engine.js'
import { createConsumer } from '../transport/bullmq/index.js'
import { defaults as consumerDefaults } from '../transport/bullmq/options.js'
import type { ConsumeCommand, ConsumeReport } from './consume-protocol.js'

/** Per-job processor times kept for the parent's percentiles: a uniform sample, so a child's memory stays flat. */
const LATENCY_SAMPLE = 4096

/**
 * `idem consume` (hidden): one consumer process of `idem demo --redis`. A BullMQ
 * consumer over a Redis-store engine; each effect is an HINCRBY on the run's
 * effects hash, so the parent can count effects per key across processes.
 * Reports over IPC (consume-protocol.ts) and drains when told to.
 */
export async function runConsume(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      redis: { type: 'string' },
      queue: { type: 'string' },
      prefix: { type: 'string' },
      effects: { type: 'string' },
      shards: { type: 'string', default: '8' },
      threads: { type: 'string', default: '0' },
      concurrency: { type: 'string', default: String(consumerDefaults.concurrency) },
      'expected-keys': { type: 'string', default: '1000000' },
    },
    strict: true,
  })
  const send = process.send?.bind(process)
  if (send === undefined || !values.redis || !values.queue || !values.prefix || !values.effects) {
    console.error('idem consume: internal command of `idem demo --redis`; needs an IPC channel and --redis, --queue, --prefix, --effects')
    return 2
  }
  const report = (message: ConsumeReport): void => void send(message)
  const url = values.redis
  const effectsKey = values.effects
  const effects = new Redis(url, { maxRetriesPerRequest: null })
  const engine = await createEngine({
    shards: Number(values.shards),
    threads: Number(values.threads),
    bloom: { expectedItems: Math.max(1, Number(values['expected-keys'])), falsePositiveRate: 0.01 },
    store: { kind: 'redis', url, prefix: values.prefix },
  })

  const sample: number[] = []
  let seen = 0
  const consumer = createConsumer<{ key: string; n: number }, void>({
    queue: values.queue,
    connection: { url },
    engine,
    concurrency: Number(values.concurrency),
    keyOf: (job) => job.data.key,
    handler: async (job) => {
      await effects.hincrby(effectsKey, String(job.data.n), 1)
    },
    progressIntervalMs: 200,
    onSettled: (settlement) => {
      // Reservoir sampling (algorithm R): every settled job equally likely to be kept.
      seen++
      if (sample.length < LATENCY_SAMPLE) sample.push(settlement.ms)
      else {
        const slot = Math.floor(Math.random() * seen)
        if (slot < LATENCY_SAMPLE) sample[slot] = settlement.ms
      }
    },
  })
  consumer.on('progress', (stats) => report({ type: 'progress', stats }))
  await consumer.waitUntilReady()

  const drained = new Promise<void>((resolve) => {
    process.on('message', (command: ConsumeCommand) => {
      if (command.type === 'drain') resolve()
    })
    // The parent is gone (killed, or interrupted): stop as if told to drain.
    process.on('disconnect', () => resolve())
  })
  report({ type: 'ready' })
  await drained
  await consumer.close()
  const stats = consumer.stats()
  const totals = engine.stats().totals
  await engine.close()
  effects.disconnect()
  if (process.connected) {
    const done: ConsumeReport = { type: 'done', stats, engine: totals, latencySample: sample }
    await new Promise<void>((resolve) => send(done, undefined, undefined, () => resolve()))
    process.disconnect()
  }
  return 0
}
