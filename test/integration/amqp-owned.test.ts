/**
 * The RabbitMQ transport in owned mode on the shared broker and Redis: one
 * queue per partition with x-single-active-consumer, each member consuming
 * the queues of the partitions its engine owns. Every test uses its own queue
 * name and store prefix, and deletes its queues, exchanges and keys after.
 */
import { randomUUID } from 'node:crypto'
import { connect, type ChannelModel, type ConsumeMessage } from 'amqplib'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ErrorCode } from '../../dist/src/errors.js'
import { partitionOf } from '../../dist/src/owned/partition-of.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { createAmqpConsumer, createAmqpPublisher, delayQueueOf, partitionQueueOf, type AmqpConsumer, type AmqpDeadLetter } from '../../dist/src/transport/amqp/index.js'
import { keysWithDuplicates } from '../support/consumer-processes.js'
import { waitFor } from '../support/wait-for.js'

const amqpUrl = 'amqp://guest:guest@127.0.0.1:5672'
const redisUrl = 'redis://127.0.0.1:6379'
const PARTITIONS = 8
const redis = new Redis(redisUrl)
let admin: ChannelModel
const consumers: AmqpConsumer<any>[] = []
const engines: Engine[] = []
const scopes: { scope: string; queue: string }[] = []

beforeAll(async () => {
  admin = await connect(amqpUrl)
})
afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.close()))
  await Promise.all(engines.splice(0).map((e) => e.close()))
  const channel = await admin.createChannel()
  for (const { scope, queue } of scopes.splice(0)) {
    for (let p = 0; p < PARTITIONS; p++) await channel.deleteQueue(partitionQueueOf(queue, p))
    for (const ms of [50, 1000]) {
      await channel.deleteQueue(delayQueueOf(queue, ms))
      await channel.deleteExchange(delayQueueOf(queue, ms))
    }
    await deleteKeysUnder(redis, scope)
  }
  await channel.close()
})
afterAll(async () => {
  await admin.close()
  redis.disconnect()
})

function names() {
  const scope = `test-amqp-owned-${randomUUID()}`
  const queue = `${scope}.orders`
  scopes.push({ scope, queue })
  return { queue, prefix: `${scope}:idem:` }
}

async function member(prefix: string, memberId: string): Promise<Engine> {
  const e = await createEngine({ mode: 'owned', shards: 4, partitions: PARTITIONS, store: { kind: 'redis', url: redisUrl, prefix }, ownership: { leaseMs: 1_000, memberId } })
  engines.push(e)
  return e
}

function consumer(queue: string, engine: Engine, handler: (m: ConsumeMessage) => unknown): AmqpConsumer {
  const c = createAmqpConsumer({ url: amqpUrl, queue, engine, handler, inFlightDelayMs: 50, retryDelayMs: 50 })
  consumers.push(c)
  return c
}

describe('createAmqpConsumer in owned mode', () => {
  it('two members consume only their own partitions’ queues; when one leaves, the other takes its queues over: one effect per key', async () => {
    const { queue, prefix } = await names()
    const effects = new Map<string, number>()
    const queuesOf = { a: new Set<string>(), b: new Set<string>() }
    const handlerOf = (name: 'a' | 'b') => (m: ConsumeMessage) => {
      queuesOf[name].add(m.fields.routingKey)
      effects.set(m.properties.messageId as string, (effects.get(m.properties.messageId as string) ?? 0) + 1)
    }
    const a = consumer(queue, await member(prefix, 'a'), handlerOf('a'))
    await a.waitUntilReady()
    const engineB = await member(prefix, 'b')
    const b = consumer(queue, engineB, handlerOf('b'))
    await b.waitUntilReady()
    await waitFor('the partitions split between the two', () => engines[0].ownedPartitions().length + engineB.ownedPartitions().length === PARTITIONS && engineB.ownedPartitions().length > 0)

    const publisher = createAmqpPublisher({ url: amqpUrl })
    const publish = (keys: string[]) => Promise.all(keys.map((key) => publisher.publish('', partitionQueueOf(queue, partitionOf(key, PARTITIONS)), key, { key })))
    const first = keysWithDuplicates(700, 1000)
    await publish(first)
    await waitFor('the first 1000 acked', () => a.stats().acked + b.stats().acked === 1000)
    expect([...queuesOf.a].filter((q) => queuesOf.b.has(q))).toEqual([])
    expect(queuesOf.a.size).toBeGreaterThan(0)
    expect(queuesOf.b.size).toBeGreaterThan(0)

    await b.close()
    await engineB.close()
    await waitFor('a owns every partition', () => engines[0].ownedPartitions().length === PARTITIONS, 15_000)
    const second = keysWithDuplicates(300, 400).map((key) => `second-${key}`)
    await publish([...second, ...first.slice(0, 100)])
    await waitFor('the rest acked by a', () => a.stats().acked + b.stats().acked === 1500, 15_000)
    await publisher.close()
    expect(effects.size).toBe(1000)
    expect([...effects.values()].every((n) => n === 1)).toBe(true)
    expect(queuesOf.a.size).toBe(PARTITIONS)
  })

  it('the broker delivers a partition queue to one consumer at a time: a second subscriber waits as standby', async () => {
    const { queue, prefix } = await names()
    let ran = 0
    const a = consumer(queue, await member(prefix, 'solo'), () => void ran++)
    await a.waitUntilReady()
    const channel = await admin.createChannel()
    const intruder: ConsumeMessage[] = []
    const { consumerTag } = await channel.consume(partitionQueueOf(queue, 0), (m) => m !== null && intruder.push(m))
    const key = Array.from({ length: 100 }, (_, i) => `k${i}`).find((k) => partitionOf(k, PARTITIONS) === 0)!
    const publisher = createAmqpPublisher({ url: amqpUrl })
    for (let i = 0; i < 5; i++) await publisher.publish('', partitionQueueOf(queue, 0), 'x', { key: `${key}` })
    await publisher.close()
    await waitFor('the five acked by idem', () => a.stats().acked === 5)
    expect(intruder).toEqual([])
    expect(ran).toBe(1)
    await channel.cancel(consumerTag)
    await channel.close()
  })

  it('a new owner subscribes to a partition queue only once its previous consumer is gone (rabbitmq-server#5460), and the other queues meanwhile', async () => {
    const { queue, prefix } = await names()
    const channel = await admin.createChannel()
    const p0 = partitionQueueOf(queue, 0)
    // Declared here (the member declares them too, but not before the publish below): a message to a queue that does not exist is dropped.
    for (let p = 0; p < PARTITIONS; p++) await channel.assertQueue(partitionQueueOf(queue, p), { durable: true, arguments: { 'x-single-active-consumer': true } })
    // The previous owner, still subscribed: a member whose lease lapsed and who has not yet heard of it.
    const { consumerTag } = await channel.consume(p0, () => {})
    const ran: string[] = []
    // A long ownership lease: the wait it bounds (two leases) outlasts any stall of a loaded machine.
    const engine = await createEngine({ mode: 'owned', shards: 4, partitions: PARTITIONS, store: { kind: 'redis', url: redisUrl, prefix }, ownership: { leaseMs: 10_000, memberId: 'new-owner' } })
    engines.push(engine)
    const a = consumer(queue, engine, (m) => void ran.push(m.properties.messageId as string))
    const keyIn = (p: number) => Array.from({ length: 200 }, (_, i) => `k${i}`).find((k) => partitionOf(k, PARTITIONS) === p)!
    const publisher = createAmqpPublisher({ url: amqpUrl })
    await publisher.publish('', partitionQueueOf(queue, 2), 'x', { key: keyIn(2) })
    await waitFor('the message on partition 2 acked', () => a.stats().acked === 1)
    expect((await channel.checkQueue(p0)).consumerCount).toBe(1)

    await channel.cancel(consumerTag)
    await a.waitUntilReady()
    await publisher.publish('', p0, 'x', { key: keyIn(0) })
    await publisher.close()
    await waitFor('the message on partition 0 acked by the new owner', () => a.stats().acked === 2)
    expect(ran).toEqual([keyIn(2), keyIn(0)])
    await channel.close()
  })

  it('a previous consumer that never leaves holds a partition queue for two ownership leases at most: then the new owner subscribes as standby', async () => {
    const { queue, prefix } = await names()
    const channel = await admin.createChannel()
    const p0 = partitionQueueOf(queue, 0)
    await channel.assertQueue(p0, { durable: true, arguments: { 'x-single-active-consumer': true } })
    const { consumerTag } = await channel.consume(p0, () => {})
    const a = consumer(queue, await member(prefix, 'new-owner'), () => {})
    await a.waitUntilReady()
    expect((await channel.checkQueue(p0)).consumerCount).toBe(2)
    await channel.cancel(consumerTag)
    await channel.close()
  })

  it('a message on another partition’s queue is dead-lettered PARTITIONS_MISMATCH', async () => {
    const { queue, prefix } = await names()
    const letters: AmqpDeadLetter[] = []
    const a = consumer(queue, await member(prefix, 'solo'), () => {})
    a.on('deadLetter', (letter) => letters.push(letter))
    await a.waitUntilReady()
    const key = Array.from({ length: 100 }, (_, i) => `k${i}`).find((k) => partitionOf(k, PARTITIONS) !== 3)!
    const publisher = createAmqpPublisher({ url: amqpUrl })
    await publisher.publish('', partitionQueueOf(queue, 3), 'x', { key })
    await publisher.close()
    await waitFor('dead-lettered', () => letters.length === 1)
    expect(letters[0]).toMatchObject({ code: ErrorCode.PARTITIONS_MISMATCH })

  })
})
