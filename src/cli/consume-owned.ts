import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { createEngine } from '../engine.js'
import { createStreamConsumer } from '../transport/redis-streams/index.js'
import type { OwnedConsumeReport } from './consume-protocol.js'

/** How often a member reports its counts to the parent. */
const REPORT_MS = 200

/**
 * `idem consume-owned` (hidden): one member of `idem demo --redis URL --mode
 * owned`. An owned engine on the run's prefix and group, with a Redis
 * Streams consumer over the partition streams it owns; each effect is an
 * HINCRBY on the run's effects hash. Reports over IPC (consume-protocol.ts)
 * and drains when told to; the parent may SIGKILL it instead.
 */
export async function runConsumeOwned(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      redis: { type: 'string' },
      stream: { type: 'string' },
      prefix: { type: 'string' },
      effects: { type: 'string' },
      member: { type: 'string' },
      partitions: { type: 'string', default: '64' },
      shards: { type: 'string', default: '8' },
      'lease-ms': { type: 'string', default: '3000' },
      'expected-keys': { type: 'string', default: '1000000' },
    },
    strict: true,
  })
  const send = process.send?.bind(process)
  if (send === undefined || !values.redis || !values.stream || !values.prefix || !values.effects || !values.member) {
    console.error('idem consume-owned: internal command of `idem demo --redis URL --mode owned`; needs an IPC channel and --redis, --stream, --prefix, --effects, --member')
    return 2
  }
  const report = (message: OwnedConsumeReport): void => void send(message)
  const url = values.redis
  const effectsKey = values.effects
  const effects = new Redis(url, { maxRetriesPerRequest: null })
  const leaseMs = Number(values['lease-ms'])
  const engine = await createEngine({
    mode: 'owned',
    partitions: Number(values.partitions),
    shards: Number(values.shards),
    group: 'demo',
    bloom: { expectedItems: Math.max(1, Number(values['expected-keys'])), falsePositiveRate: 0.01 },
    store: { kind: 'redis', url, prefix: values.prefix },
    ownership: { leaseMs, memberId: values.member },
  })
  const consumer = createStreamConsumer({
    stream: values.stream,
    group: 'demo',
    consumer: values.member,
    engine,
    keyOf: (entry) => entry.fields.key,
    handler: async (entry) => {
      await effects.hincrby(effectsKey, entry.fields.n, 1)
    },
    count: 512,
    batchesInFlight: 4,
    blockMs: 100,
  })
  await consumer.waitUntilReady()
  const counts = (): Extract<OwnedConsumeReport, { type: 'progress' }> => ({ type: 'progress', stats: consumer.stats(), engine: engine.stats().totals, ownership: engine.stats().ownership!, owned: engine.ownedPartitions() })
  const timer = setInterval(() => report(counts()), REPORT_MS)
  const drained = new Promise<void>((resolve) => {
    process.on('message', (command: { type: string }) => {
      if (command.type === 'drain') resolve()
    })
    process.on('disconnect', () => resolve())
  })
  report({ type: 'ready' })
  await drained
  clearInterval(timer)
  await consumer.close()
  const last = counts()
  await engine.close()
  effects.disconnect()
  if (process.connected) {
    await new Promise<void>((resolve) => send({ ...last, type: 'done' } satisfies OwnedConsumeReport, undefined, undefined, () => resolve()))
    process.disconnect()
  }
  return 0
}
