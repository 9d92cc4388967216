/**
 * The RabbitMQ transport on the shared broker (127.0.0.1:5672, guest/guest):
 * every test declares its own queues under a random name and deletes them,
 * with idem's delay queues, afterwards; the idem store is Redis under a
 * random prefix, deleted after. Consumer processes killed with SIGKILL are in
 * test/fault/amqp-kill.test.ts.
 */
import { randomUUID } from 'node:crypto'
import { connect, type ChannelModel, type ConsumeMessage } from 'amqplib'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ConfigError, ErrorCode, type IdemError } from '../../dist/src/errors.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import {
  createAmqpConsumer,
  createAmqpPublisher,
  delayQueueOf,
  DeliveryAction,
  deliveryActionOf,
  type AmqpConsumer,
  type AmqpConsumerOptions,
  type AmqpDeadLetter,
  type AmqpPublisher,
} from '../../dist/src/transport/amqp/index.js'
import { keysWithDuplicates } from '../support/consumer-processes.js'
import { startProxy } from '../support/tcp-proxy.js'
import { waitFor } from '../support/wait-for.js'

const amqpUrl = 'amqp://guest:guest@127.0.0.1:5672'
const redisUrl = 'redis://127.0.0.1:6379'
const redis = new Redis(redisUrl)
let admin: ChannelModel
const engines: Engine[] = []
const consumers: AmqpConsumer<any>[] = []
const publishers: AmqpPublisher[] = []
const queues: string[] = []
const exchanges: string[] = []
const scopes: string[] = []
const cleanups: (() => Promise<void>)[] = []

beforeAll(async () => {
  admin = await connect(amqpUrl)
})

afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.close()))
  await Promise.all(publishers.splice(0).map((p) => p.close()))
  await Promise.all(engines.splice(0).map((e) => e.close()))
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  const channel = await admin.createChannel()
  for (const queue of queues.splice(0)) await channel.deleteQueue(queue)
  for (const exchange of exchanges.splice(0)) await channel.deleteExchange(exchange)
  await channel.close()
  for (const scope of scopes.splice(0)) await deleteKeysUnder(redis, scope)
})
afterAll(async () => {
  await admin.close()
  redis.disconnect()
})

/** A fresh queue (declared, with its delay queues registered for deletion), a dead-letter exchange bound to a dead-letter queue, and a store prefix. */
async function names(queueArguments: Record<string, unknown> = {}) {
  const scope = `test-amqp-${randomUUID()}`
  scopes.push(scope)
  const queue = `${scope}.q`
  const deadLetterExchange = `${scope}.dlx`
  const deadLetterQueue = `${scope}.dead`
  const channel = await admin.createChannel()
  await channel.assertQueue(queue, { durable: true, arguments: queueArguments })
  await channel.assertExchange(deadLetterExchange, 'fanout', { durable: false })
  await channel.assertQueue(deadLetterQueue, { durable: false })
  await channel.bindQueue(deadLetterQueue, deadLetterExchange, '')
  await channel.close()
  const delays = [200, 50, 1000, 5000, 300].map((ms) => delayQueueOf(queue, ms))
  // A delay queue and its exchange share a name.
  queues.push(queue, deadLetterQueue, ...delays)
  exchanges.push(deadLetterExchange, ...delays)
  return { scope, queue, deadLetterExchange, deadLetterQueue, prefix: `${scope}:idem:` }
}

async function engine(prefix: string, options: Record<string, unknown> = {}): Promise<Engine> {
  const e = await createEngine({ shards: 4, leaseMs: 500, ...options, store: { kind: 'redis', url: redisUrl, prefix } })
  engines.push(e)
  return e
}

function consumer<R>(options: Omit<AmqpConsumerOptions<R>, 'url'> & { url?: string }): AmqpConsumer<R> {
  const c = createAmqpConsumer<R>({ url: amqpUrl, retryDelayMs: 200, inFlightDelayMs: 50, ...options } as AmqpConsumerOptions<R>)
  consumers.push(c)
  return c
}

function publisher(options: { url?: string; confirmTimeoutMs?: number } = {}): AmqpPublisher {
  const p = createAmqpPublisher({ url: amqpUrl, ...options })
  publishers.push(p)
  return p
}

/** Sends raw messages (no idem publisher): for ids and headers the publisher would refuse. */
async function sendRaw(queue: string, messages: { body: string; messageId?: string; headers?: Record<string, unknown> }[]): Promise<void> {
  const channel = await admin.createConfirmChannel()
  for (const m of messages) channel.sendToQueue(queue, Buffer.from(m.body), { messageId: m.messageId, headers: m.headers, persistent: true })
  await channel.waitForConfirms()
  await channel.close()
}

async function readAll(queue: string): Promise<ConsumeMessage[]> {
  const channel = await admin.createChannel()
  const messages: ConsumeMessage[] = []
  for (let m = await channel.get(queue, { noAck: true }); m !== false; m = await channel.get(queue, { noAck: true })) messages.push(m as unknown as ConsumeMessage)
  await channel.close()
  return messages
}

async function depth(queue: string): Promise<number> {
  const channel = await admin.createChannel()
  const { messageCount } = await channel.checkQueue(queue)
  await channel.close()
  return messageCount
}

describe('createAmqpConsumer', () => {
  it('runs each key once over messages with 30% duplicates, acks every one, batches what arrives together', async () => {
    const { queue, prefix } = await names()
    const keys = keysWithDuplicates(700, 1000)
    const p = publisher()
    await Promise.all(keys.map((key) => p.publish('', queue, JSON.stringify({ key }), { key })))
    const effects = new Map<string, number>()
    const c = consumer({ queue, engine: await engine(prefix), handler: (m) => void effects.set(m.properties.messageId as string, (effects.get(m.properties.messageId as string) ?? 0) + 1) })
    await c.waitUntilReady()
    await waitFor('every message acked', () => c.stats().acked === keys.length)
    expect(effects.size).toBe(700)
    expect([...effects.values()].every((n) => n === 1)).toBe(true)
    const stats = c.stats()
    expect(stats).toMatchObject({ received: 1000, acked: 1000, new: 700, duplicates: 300, deadLettered: 0, holding: 0 })
    expect(stats.batches).toBeLessThan(stats.received)
    expect(await depth(queue)).toBe(0)
  })

  it('acks in few frames when deliveries settle in order, and a slow delivery does not hold back the acks after it', async () => {
    const { queue, prefix } = await names()
    const keys = Array.from({ length: 300 }, (_, i) => `ack-${i}`)
    await sendRaw(queue, keys.map((key) => ({ body: '{}', messageId: key })))
    // Every basic.ack idem sends: a tag alone, or every tag up to it.
    const frames: { tag: number; multiple: boolean }[] = []
    // amqplib's ack lives on the prototype its confirm channels share: the test counts the frames idem sends on a real channel.
    const probe = await admin.createConfirmChannel()
    const channels = Object.getPrototypeOf(Object.getPrototypeOf(probe)) as { ack: (message: ConsumeMessage, allUpTo?: boolean) => void }
    await probe.close()
    const ack = channels.ack
    channels.ack = function (this: unknown, message: ConsumeMessage, allUpTo?: boolean) {
      frames.push({ tag: message.fields.deliveryTag, multiple: allUpTo === true })
      return ack.call(this, message, allUpTo)
    }
    cleanups.push(async () => void (channels.ack = ack))
    const acked = (): Set<number> => {
      const tags = new Set<number>()
      for (const { tag, multiple } of frames) for (let t = multiple ? 1 : tag; t <= tag; t++) tags.add(t)
      return tags
    }
    let release!: () => void
    const slow = new Promise<void>((resolve) => (release = resolve))
    // The first delivery (tag 1 on the consumer's new channel) waits until the test lets it go.
    const c = consumer({ queue, engine: await engine(prefix), handler: (m) => (m.properties.messageId === 'ack-0' ? slow : undefined) })
    await waitFor('every delivery but the slow one acked', () => acked().size === 299)
    expect(acked().has(1)).toBe(false)
    release()
    await waitFor('the slow one acked too', () => acked().size === 300)
    expect(c.stats()).toMatchObject({ acked: 300, transportErrors: 0, reconnects: 0, holding: 0 })

    // Without a slow delivery the acks mostly cover several deliveries at once.
    const before = frames.length
    await sendRaw(queue, keys.map((key) => ({ body: '{}', messageId: `${key}-b` })))
    // The consumer counts a delivery acked when it settles it; the frame that acks it goes out with the next flush of the ack window.
    await waitFor('the second round acked, and its ack frames sent', () => c.stats().acked === 600 && acked().size === 600)
    const second = frames.slice(before)
    expect(second.some((f) => f.multiple)).toBe(true)
    expect(second.length).toBeLessThan(300)
    expect(acked().size).toBe(600)
    expect(c.stats()).toMatchObject({ transportErrors: 0, reconnects: 0 })
    expect(await depth(queue)).toBe(0)
  })

  it('takes the key from the messageId property, else the x-message-id header', async () => {
    const { queue, prefix } = await names()
    await sendRaw(queue, [
      { body: 'a', headers: { 'x-message-id': 'k1' } },
      { body: 'b', messageId: 'k1' },
      { body: 'c', messageId: 'k2', headers: { 'x-message-id': 'k1' } },
    ])
    const ran: string[] = []
    const c = consumer({ queue, engine: await engine(prefix), handler: (m) => void ran.push(m.content.toString()) })
    await waitFor('all three acked', () => c.stats().acked === 3)
    expect(ran.sort()).toEqual(['a', 'c'])
    expect(c.stats().duplicates).toBe(1)
  })

  it('bad input: no key, an over-long key, a non-UTF-8 id, an unparseable payload are dead-lettered with the code in a header; the others run', async () => {
    const { queue, prefix, deadLetterExchange, deadLetterQueue } = await names()
    await sendRaw(queue, [
      { body: '{"n":1}', messageId: 'good-1' },
      { body: '{"n":2}' },
      { body: '{"n":3}', headers: { 'x-message-id': 'k'.repeat(1025) } },
      { body: '{"n":4}', headers: { 'x-message-id': Buffer.from([0x6f, 0x72, 0xff, 0xfe]) } },
      { body: 'not json', messageId: 'bad-json' },
      { body: '{"n":6}', messageId: 'good-2' },
    ])
    const ran: number[] = []
    const letters: AmqpDeadLetter[] = []
    const c = consumer({
      queue,
      deadLetterExchange,
      engine: await engine(prefix),
      // The payload is parsed in fingerprintOf, so a body that does not parse fails its message as bad input, not as a handler error to retry.
      fingerprintOf: (m) => String(JSON.parse(m.content.toString()).n),
      handler: (m) => void ran.push(JSON.parse(m.content.toString()).n),
    })
    c.on('deadLetter', (letter) => letters.push(letter))
    await waitFor('all six settled', () => c.stats().acked + c.stats().deadLettered === 6)
    expect(ran.sort()).toEqual([1, 6])
    const dead = await readAll(deadLetterQueue)
    const codes = Object.fromEntries(dead.map((m) => [m.content.toString(), m.properties.headers!['x-idem-error-code']]))
    expect(codes).toEqual({ '{"n":2}': ErrorCode.INVALID_KEY, '{"n":3}': ErrorCode.INVALID_KEY, '{"n":4}': ErrorCode.INVALID_MESSAGE, 'not json': ErrorCode.INVALID_MESSAGE })
    expect(dead.find((m) => m.content.toString() === '{"n":4}')!.properties.headers!['x-idem-error-message']).toMatch(/not valid UTF-8/)
    expect(letters.map((l) => l.code).sort()).toEqual([ErrorCode.INVALID_KEY, ErrorCode.INVALID_KEY, ErrorCode.INVALID_MESSAGE, ErrorCode.INVALID_MESSAGE])
    expect(await depth(queue)).toBe(0)
  })

  it('without deadLetterExchange, a rejected message goes to the queue’s own dead-letter exchange', async () => {
    const scope = `test-amqp-${randomUUID()}`
    const dlx = `${scope}.own-dlx`
    const dlq = `${scope}.own-dead`
    const channel = await admin.createChannel()
    await channel.assertExchange(dlx, 'fanout', { durable: false })
    await channel.assertQueue(dlq, { durable: false })
    await channel.bindQueue(dlq, dlx, '')
    await channel.close()
    queues.push(dlq)
    exchanges.push(dlx)
    const { queue, prefix } = await names({ 'x-dead-letter-exchange': dlx })
    await sendRaw(queue, [{ body: 'no key' }])
    const c = consumer({ queue, engine: await engine(prefix), handler: () => {} })
    await waitFor('dead-lettered', () => c.stats().deadLettered === 1)
    await waitFor('in the queue’s dead-letter queue', async () => (await depth(dlq)) === 1)
    const [letter] = await readAll(dlq)
    expect((letter.properties.headers!['x-death'] as { reason: string }[])[0].reason).toBe('rejected')
  })

  it('a handler error comes back through the retry delay queue; after maxDeliveries it is dead-lettered with HANDLER_FAILED', async () => {
    const { queue, prefix, deadLetterExchange, deadLetterQueue } = await names()
    await sendRaw(queue, [{ body: 'flaky', messageId: 'flaky' }, { body: 'poison', messageId: 'poison' }])
    const runs = new Map<string, number>()
    const c = consumer({
      queue,
      deadLetterExchange,
      maxDeliveries: 3,
      engine: await engine(prefix),
      handler: (m) => {
        const body = m.content.toString()
        const n = (runs.get(body) ?? 0) + 1
        runs.set(body, n)
        if (body === 'poison' || n < 3) throw new Error(`${body} failed on run ${n}`)
      },
    })
    await waitFor('flaky acked, poison dead-lettered', () => c.stats().acked === 1 && c.stats().deadLettered === 1)
    expect(Object.fromEntries(runs)).toEqual({ flaky: 3, poison: 3 })
    expect(c.stats().retried).toBe(4)
    const [letter] = await readAll(deadLetterQueue)
    expect(letter.content.toString()).toBe('poison')
    expect(letter.properties.headers).toMatchObject({ 'x-idem-error-code': ErrorCode.HANDLER_FAILED, 'x-idem-deliveries': 3 })
  })

  it('on a quorum queue, a message redelivered more than maxDeliveries times with no outcome is dead-lettered DELIVERIES_EXHAUSTED, not run', async () => {
    const { queue, prefix, deadLetterExchange, deadLetterQueue } = await names({ 'x-queue-type': 'quorum' })
    await sendRaw(queue, [{ body: 'kills its consumer', messageId: 'killer' }])
    // Three consumers that die holding it: each channel closes with the delivery unacked, and the quorum queue counts it.
    for (let i = 0; i < 3; i++) {
      const channel = await admin.createChannel()
      await new Promise<void>((resolve) => void channel.consume(queue, (m) => m !== null && resolve()))
      await channel.close()
    }
    const ran: string[] = []
    const c = consumer({ queue, deadLetterExchange, maxDeliveries: 3, engine: await engine(prefix), handler: (m) => void ran.push(m.content.toString()) })
    await waitFor('dead-lettered', () => c.stats().deadLettered === 1)
    expect(ran).toEqual([])
    const [letter] = await readAll(deadLetterQueue)
    expect(letter.properties.headers).toMatchObject({ 'x-idem-error-code': ErrorCode.DELIVERIES_EXHAUSTED, 'x-idem-deliveries': 4 })
  })

  it('a key in flight in another consumer waits on the in-flight delay queue (no spin), then is acked as a duplicate', async () => {
    const { queue, prefix } = await names()
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let effects = 0
    const slow = consumer({ queue, prefetch: 1, engine: await engine(prefix, { leaseMs: 10_000 }), handler: async () => void (effects++, await gate) })
    await slow.waitUntilReady()
    await sendRaw(queue, [{ body: 'first', messageId: 'same' }])
    await waitFor('the first copy running', () => effects === 1)
    const other = consumer({ queue, engine: await engine(prefix, { leaseMs: 10_000 }), inFlightDelayMs: 200, handler: () => void effects++ })
    await sendRaw(queue, [{ body: 'second', messageId: 'same' }])
    await waitFor('the second copy delayed at least twice', () => other.stats().inFlight >= 2)
    // A delay queue, not a spin: about one try per inFlightDelayMs.
    expect(other.stats().received).toBeLessThan(20)
    release()
    await waitFor('both settled', () => slow.stats().acked === 1 && other.stats().acked === 1)
    expect(effects).toBe(1)
    expect(other.stats().duplicates).toBe(1)
  })

  it('reconnects after its connection is cut by a proxy, twice, mid-run: lost 0, double 0', async () => {
    const { queue, prefix } = await names()
    const proxy = await startProxy(5672)
    cleanups.push(() => proxy.close())
    const keys = keysWithDuplicates(2100, 3000)
    const effects = new Map<string, number>()
    const errors: IdemError[] = []
    const c = consumer({
      queue,
      url: `amqp://guest:guest@127.0.0.1:${proxy.port}`,
      prefetch: 64,
      engine: await engine(prefix),
      handler: async (m) => {
        await new Promise((resolve) => setTimeout(resolve, 1))
        effects.set(m.properties.messageId as string, (effects.get(m.properties.messageId as string) ?? 0) + 1)
      },
    })
    c.on('error', (error) => errors.push(error))
    await c.waitUntilReady()
    const p = publisher()
    await Promise.all(keys.map((key) => p.publish('', queue, key, { key })))
    for (const share of [0.25, 0.6]) {
      await waitFor(`${share * 100}% of the keys done`, () => effects.size >= share * 2100, 60_000)
      proxy.resetAll()
    }
    await waitFor('every key done and the queue empty', async () => effects.size === 2100 && c.stats().holding === 0 && (await depth(queue)) === 0, 60_000)
    const doubles = [...effects.values()].reduce((sum, n) => sum + n - 1, 0)
    console.log(`amqp connection cuts: 3000 messages (2100 keys), 2 cuts, reconnects ${c.stats().reconnects}, abandoned ${c.stats().abandoned}, lost ${2100 - effects.size}, double ${doubles}`)
    expect(c.stats().reconnects).toBeGreaterThanOrEqual(2)
    expect(doubles).toBe(0)
    expect(errors.every((e) => e.code === ErrorCode.TRANSPORT_FAILED)).toBe(true)
  })

  it('refuses a missing queue (waitUntilReady rejects) and bad options (ConfigError naming each field)', async () => {
    const { prefix } = await names()
    const e = await engine(prefix)
    const missing = consumer({ queue: `test-amqp-missing-${randomUUID()}`, engine: e, handler: () => {} })
    await expect(missing.waitUntilReady()).rejects.toMatchObject({ code: ErrorCode.TRANSPORT_FAILED, message: expect.stringMatching(/404|NOT_FOUND/) })
    const bad = () => createAmqpConsumer({ url: 'http://x', connection: {} as never, queue: '', prefetch: 0, engine: e, handler: 1 as never, retryDelayMs: -1, colour: 1 } as never)
    expect(bad).toThrow(ConfigError)
    try {
      bad()
    } catch (error) {
      expect((error as ConfigError).problems.join('\n')).toMatch(/colour: must be left out[\s\S]*options: must be given exactly one of url or connection[\s\S]*queue: must be[\s\S]*prefetch: must be[\s\S]*handler: must be[\s\S]*retryDelayMs: must be/)
    }
  })

  it('deliveryActionOf is the settle table', () => {
    expect(deliveryActionOf({ key: 'k', verdict: 'new' }, 1, 5)).toBe(DeliveryAction.ACK)
    expect(deliveryActionOf({ key: 'k', verdict: 'duplicate' }, 1, 5)).toBe(DeliveryAction.ACK)
    expect(deliveryActionOf({ key: 'k', verdict: 'in-flight' }, 9, 5)).toBe(DeliveryAction.WAIT)
    expect(deliveryActionOf({ key: 'k', verdict: 'new', error: { code: 'HANDLER_FAILED' } as IdemError }, 4, 5)).toBe(DeliveryAction.RETRY)
    expect(deliveryActionOf({ key: 'k', verdict: 'new', error: { code: 'HANDLER_FAILED' } as IdemError }, 5, 5)).toBe(DeliveryAction.DEAD_LETTER)
    expect(deliveryActionOf({ key: 'k', verdict: 'conflict' }, 1, 5)).toBe(DeliveryAction.DEAD_LETTER)
    expect(deliveryActionOf({ key: 'k', verdict: 'invalid' }, 1, 5)).toBe(DeliveryAction.DEAD_LETTER)
  })
})

describe('createAmqpPublisher', () => {
  it('resends a message whose confirm is late past confirmTimeoutMs; the consumer absorbs every resend', async () => {
    const { queue, prefix } = await names()
    const proxy = await startProxy(5672)
    cleanups.push(() => proxy.close())
    const p = publisher({ url: `amqp://guest:guest@127.0.0.1:${proxy.port}`, confirmTimeoutMs: 300 })
    await p.publish('', queue, 'warm-up', { key: 'warm-up' })
    proxy.delayReplies(700)
    const keys = Array.from({ length: 20 }, (_, i) => `late-${i}`)
    const published = Promise.all(keys.map((key) => p.publish('', queue, key, { key })))
    await new Promise((resolve) => setTimeout(resolve, 500))
    proxy.heal()
    await published
    const resends = p.stats().resends
    expect(resends).toBeGreaterThanOrEqual(20)
    const effects = new Map<string, number>()
    const c = consumer({ queue, engine: await engine(prefix), handler: (m) => void effects.set(m.content.toString(), (effects.get(m.content.toString()) ?? 0) + 1) })
    await waitFor('every copy settled', async () => c.stats().holding === 0 && c.stats().acked === 21 + resends && (await depth(queue)) === 0)
    expect(effects.size).toBe(21)
    expect([...effects.values()].every((n) => n === 1)).toBe(true)
    expect(c.stats().duplicates).toBe(resends)
  })

  it('a broker it cannot reach uses up the attempts: publish rejects with TRANSPORT_FAILED instead of hanging', async () => {
    const p = createAmqpPublisher({ url: 'amqp://guest:guest@127.0.0.1:1', confirmTimeoutMs: 100, maxAttempts: 2 })
    publishers.push(p)
    await expect(p.publish('', 'nowhere', 'x', { key: 'k' })).rejects.toMatchObject({ code: ErrorCode.TRANSPORT_FAILED, message: expect.stringMatching(/2 attempts, none confirmed.*no channel within 100 ms/) })
    expect(p.stats().resends).toBe(1)
  })

  it('refuses a key the consumer would refuse, and puts a long key in the x-message-id header', async () => {
    const { queue, prefix } = await names()
    const p = publisher()
    await expect(p.publish('', queue, 'x', { key: '' })).rejects.toMatchObject({ code: ErrorCode.INVALID_KEY })
    await expect(p.publish('', queue, 'x', { key: 'k'.repeat(1025) })).rejects.toMatchObject({ code: ErrorCode.INVALID_KEY })
    const long = 'é'.repeat(300)
    await p.publish('', queue, 'long', { key: long })
    const seen: ConsumeMessage[] = []
    const c = consumer({ queue, engine: await engine(prefix), handler: (m) => void seen.push(m) })
    await waitFor('acked', () => c.stats().acked === 1)
    expect(seen[0].properties.messageId).toBeUndefined()
    expect(seen[0].properties.headers!['x-message-id']).toBe(long)
  })
})
