/**
 * Fault test of the RabbitMQ transport, in strict mode (three consumer
 * processes on one queue) and in owned mode (three members, 16 partition
 * queues with x-single-active-consumer, each member consuming its own): one
 * of them, in turn, is SIGKILLed six times (at 10%, 25%, 40%, 55%,
 * 70% and 85% of the keys done) and started again. 50,000 messages by
 * default (IDEM_AMQP_KILL_MESSAGES sets another count), 30% of them
 * producer resends of a key. A killed consumer's unacked deliveries go back
 * to the queue at once (the broker sees its connection die); in strict mode
 * their keys are in flight until the dead one's leases lapse, so they wait on
 * the in-flight delay queue meanwhile; in owned mode they wait in their
 * partition queue until the dead member's partitions move (its ownership
 * lease, 1 s) and their new owner consumes it. Effects are counted per key in Redis (HINCRBY in the
 * handler). Bounded by count and progress, not by time.
 */
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { connect, type ChannelModel } from 'amqplib'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { partitionOf } from '../../dist/src/owned/partition-of.js'
import { createAmqpPublisher, delayQueueOf, partitionQueueOf } from '../../dist/src/transport/amqp/index.js'
import { closeConsumerProcess, keysWithDuplicates, killAllConsumerProcesses, runWithKills } from '../support/consumer-processes.js'
import { FAULT_TEST_TIMEOUT_MS, untilDone } from '../support/progress.js'

const amqpUrl = 'amqp://guest:guest@127.0.0.1:5672'
const redisUrl = 'redis://127.0.0.1:6379'
const MESSAGES = Number(process.env.IDEM_AMQP_KILL_MESSAGES ?? 50_000)
const UNIQUE = Math.round(MESSAGES * 0.7)
const PREFETCH = 64
const LEASE_MS = 1_000
const KILL_AT = [0.1, 0.25, 0.4, 0.55, 0.7, 0.85]
const PARTITIONS = 16

const fixture = fileURLToPath(new URL('../support/fixtures/amqp-consumer.mjs', import.meta.url))
const redis = new Redis(redisUrl)
const scopes: string[] = []
let admin: ChannelModel | undefined

afterAll(async () => {
  killAllConsumerProcesses()
  if (admin !== undefined) {
    const channel = await admin.createChannel()
    for (const scope of scopes) {
      const queue = `${scope}.q`
      for (const name of [queue, delayQueueOf(queue, 200), ...Array.from({ length: PARTITIONS }, (_, p) => partitionQueueOf(queue, p))]) await channel.deleteQueue(name)
      await channel.deleteExchange(delayQueueOf(queue, 200))
    }
    await admin.close()
  }
  for (const scope of scopes) await deleteKeysUnder(redis, scope)
  redis.disconnect()
})

describe.each(['strict', 'owned'] as const)('RabbitMQ consumers SIGKILLed mid-run, %s mode', (mode) => {
  it(`three consumers, one killed ${KILL_AT.length} times: lost 0, doubles within kills × prefetch`, async () => {
    const scope = `test-amqp-kill-${randomUUID()}`
    scopes.push(scope)
    const queue = `${scope}.q`
    const effectsKey = `${scope}:effects`
    admin ??= await connect(amqpUrl)
    const channel = await admin.createChannel()
    await channel.assertQueue(queue, { durable: true })
    // Owned mode: the partition queues are declared by the members; made here first so that the publisher's messages have somewhere to go.
    if (mode === 'owned') for (let p = 0; p < PARTITIONS; p++) await channel.assertQueue(partitionQueueOf(queue, p), { durable: true, arguments: { 'x-single-active-consumer': true } })
    const queuesToDrain = mode === 'owned' ? Array.from({ length: PARTITIONS }, (_, p) => partitionQueueOf(queue, p)) : [queue]
    const depth = async (name: string) => (await channel.checkQueue(name)).messageCount
    const backlog = async () => (await Promise.all([...queuesToDrain, delayQueueOf(queue, 200)].map(depth))).reduce((a, b) => a + b, 0)

    const keys = keysWithDuplicates(UNIQUE, MESSAGES)
    const publisher = createAmqpPublisher({ url: amqpUrl })
    const routeOf = (key: string) => (mode === 'owned' ? partitionQueueOf(queue, partitionOf(key, PARTITIONS)) : queue)
    for (let i = 0; i < keys.length; i += 5_000) await Promise.all(keys.slice(i, i + 5_000).map((key) => publisher.publish('', routeOf(key), key, { key })))
    await publisher.close()

    const args = (name: string) => [amqpUrl, queue, redisUrl, `${scope}:idem:`, effectsKey, PREFETCH, LEASE_MS, mode, name]
    const started = Date.now()
    const effectCount = () => redis.hlen(effectsKey)
    const { consumers, kills, killedHeld } = await runWithKills(fixture, args, KILL_AT, UNIQUE, effectCount)

    const settledNow = async () => (await effectCount()) + MESSAGES - (await backlog())
    let quiet = 0
    await untilDone({
      what: 'every key done, the queues empty and nothing held',
      done: async () => {
        const idle = (await effectCount()) === UNIQUE && (await backlog()) === 0 && consumers.every((c) => c.stats.holding === 0)
        quiet = idle ? quiet + 1 : 0
        // Twice in a row, 200 ms apart: a delivery between a poll of the queue and one of the stats is not missed.
        return quiet >= 2
      },
      progress: settledNow,
      pollMs: 200,
    }).catch(async (error: unknown) => {
      // What a stall left behind, for whoever reads the failure.
      console.log(`stalled: consumers' last stats ${JSON.stringify(consumers.map((c) => c.stats))}; queue depths ${JSON.stringify(await Promise.all([...queuesToDrain, delayQueueOf(queue, 200)].map(depth)))}; keys done ${await effectCount()}`)
      throw error
    })
    const seconds = (Date.now() - started) / 1000
    const finals = await Promise.all(consumers.map((c) => closeConsumerProcess(c)))

    const perKey = Object.values(await redis.hgetall(effectsKey)).map(Number)
    const lost = UNIQUE - perKey.length
    const doubles = perKey.reduce((sum, n) => sum + n - 1, 0)
    const bound = kills * PREFETCH
    console.log(
      `amqp SIGKILL test, ${mode} mode: ${MESSAGES} messages (${UNIQUE} unique keys), 3 consumers, ${kills} kills in ${seconds.toFixed(1)} s; ` +
        `lost ${lost}, double effects ${doubles} (bound ${kills} kills × ${PREFETCH} prefetch = ${bound}); ` +
        `held by each killed consumer at its last report ${killedHeld.join('/')}; ` +
        `the consumers alive at the end: received ${finals.map((f) => f.stats.received).join('/')}, in-flight waits ${finals.map((f) => f.stats.inFlight).join('/')}, dead-lettered ${finals.map((f) => f.stats.deadLettered).join('/')}`,
    )
    expect(lost).toBe(0)
    expect(doubles).toBeLessThanOrEqual(bound)
    expect(finals.every((f) => f.stats.deadLettered === 0)).toBe(true)
    expect(finals.flatMap((f) => f.errors).filter((e) => !e.startsWith('TRANSPORT_FAILED'))).toEqual([])
    await channel.close()
  }, FAULT_TEST_TIMEOUT_MS)
})
