/**
 * The NATS JetStream transport on the shared server (127.0.0.1:4222, JetStream
 * on): every test creates its own stream and durable consumer under a random
 * name and deletes the stream afterwards; the idem store is Redis under a
 * random prefix, deleted after. Consumer processes killed with SIGKILL are in
 * test/fault/nats-kill.test.ts.
 */
import { randomUUID } from 'node:crypto'
import { connect as tcpConnect } from 'node:net'
import { AckPolicy, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import { connect, headers, type NatsConnection } from '@nats-io/transport-node'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ConfigError, ErrorCode, type IdemError } from '../../dist/src/errors.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import {
  createJetStreamConsumer,
  createJetStreamPublisher,
  MsgAction,
  msgActionOf,
  termTakesReason,
  type JetStreamConsumer,
  type JetStreamConsumerOptions,
  type JetStreamPublisher,
  type JetStreamTermination,
} from '../../dist/src/transport/nats/index.js'
import { keysWithDuplicates } from '../support/consumer-processes.js'
import { startProxy, type FaultProxy } from '../support/tcp-proxy.js'
import { waitFor } from '../support/wait-for.js'

const servers = '127.0.0.1:4222'
const redisUrl = 'redis://127.0.0.1:6379'
const redis = new Redis(redisUrl)
let nc: NatsConnection
let jsm: JetStreamManager
const engines: Engine[] = []
const consumers: JetStreamConsumer<any>[] = []
const publishers: JetStreamPublisher[] = []
const streams: string[] = []
const scopes: string[] = []
const proxies: FaultProxy[] = []

beforeAll(async () => {
  nc = await connect({ servers })
  jsm = await jetstreamManager(nc)
})

afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.close()))
  await Promise.all(publishers.splice(0).map((p) => p.close()))
  await Promise.all(engines.splice(0).map((e) => e.close()))
  await Promise.all(proxies.splice(0).map((p) => p.close()))
  for (const stream of streams.splice(0)) await jsm.streams.delete(stream)
  for (const scope of scopes.splice(0)) await deleteKeysUnder(redis, scope)
})
afterAll(async () => {
  await nc.close()
  redis.disconnect()
})

/** A fresh stream on `${stream}.>` with a durable pull consumer `c`, and a store prefix. */
async function names(options: { duplicateWindowMs?: number; ackWaitMs?: number; maxDeliver?: number } = {}) {
  const scope = `test-nats-${randomUUID()}`
  scopes.push(scope)
  const stream = scope
  await jsm.streams.add({ name: stream, subjects: [`${stream}.>`], duplicate_window: (options.duplicateWindowMs ?? 120_000) * 1e6 })
  streams.push(stream)
  await jsm.consumers.add(stream, { durable_name: 'c', ack_policy: AckPolicy.Explicit, ack_wait: (options.ackWaitMs ?? 30_000) * 1e6, max_deliver: options.maxDeliver ?? -1 })
  return { stream, subject: `${stream}.orders`, prefix: `${scope}:idem:` }
}

async function engine(prefix: string, options: Record<string, unknown> = {}): Promise<Engine> {
  const e = await createEngine({ shards: 4, leaseMs: 500, ...options, store: { kind: 'redis', url: redisUrl, prefix } })
  engines.push(e)
  return e
}

function consumer<R>(options: Omit<JetStreamConsumerOptions<R>, 'servers' | 'consumer'> & { consumer?: string }): JetStreamConsumer<R> {
  const c = createJetStreamConsumer<R>({ servers, consumer: 'c', retryDelayMs: 100, inFlightDelayMs: 100, ...options } as JetStreamConsumerOptions<R>)
  consumers.push(c)
  return c
}

function publisher(): JetStreamPublisher {
  const p = createJetStreamPublisher({ servers })
  publishers.push(p)
  return p
}

/** Pending and unacked messages of the consumer: both 0 once everything is settled. */
async function backlog(stream: string): Promise<number> {
  const info = await jsm.consumers.info(stream, 'c')
  return info.num_pending + info.num_ack_pending
}

/** Publishes with raw header bytes over a plain socket: for a Nats-Msg-Id that is not UTF-8, which nats.js cannot send. */
async function publishRawHeader(subject: string, headerLine: Buffer, body: string): Promise<void> {
  const head = Buffer.concat([Buffer.from('NATS/1.0\r\n'), headerLine, Buffer.from('\r\n\r\n')])
  const frame = Buffer.concat([Buffer.from(`HPUB ${subject} ${head.length} ${head.length + Buffer.byteLength(body)}\r\n`), head, Buffer.from(`${body}\r\n`), Buffer.from('PING\r\n')])
  await new Promise<void>((resolve, reject) => {
    const socket = tcpConnect(4222, '127.0.0.1')
    let sent = false
    socket.on('data', (chunk) => {
      if (!sent) {
        sent = true
        socket.write(Buffer.concat([Buffer.from('CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n'), frame]))
      } else if (chunk.toString().includes('PONG')) {
        socket.end()
        resolve()
      }
    })
    socket.on('error', reject)
  })
}

describe('createJetStreamConsumer', () => {
  it('runs each key once over messages with 30% duplicates (keyOf from a header), acks every one, batches what arrives together', async () => {
    const { stream, subject, prefix } = await names()
    const keys = keysWithDuplicates(700, 1000)
    // Plain publishes with the key in a header of their own: no Nats-Msg-Id, so the stream keeps every copy and idem alone drops them.
    for (const key of keys) {
      const h = headers()
      h.set('Order-Key', key)
      nc.publish(subject, key, { headers: h })
    }
    await nc.flush()
    await waitFor('all stored', async () => (await jsm.streams.info(stream)).state.messages === keys.length)
    const effects = new Map<string, number>()
    const c = consumer({
      stream,
      engine: await engine(prefix),
      keyOf: (m) => m.headers?.get('Order-Key'),
      handler: (m) => void effects.set(m.string(), (effects.get(m.string()) ?? 0) + 1),
    })
    await c.waitUntilReady()
    await waitFor('every message acked', () => c.stats().acked === keys.length)
    expect(effects.size).toBe(700)
    expect([...effects.values()].every((n) => n === 1)).toBe(true)
    expect(c.stats()).toMatchObject({ received: 1000, acked: 1000, new: 700, duplicates: 300, terminated: 0, holding: 0 })
    expect(c.stats().batches).toBeLessThan(1000)
    await waitFor('nothing pending on the server', async () => (await backlog(stream)) === 0)
  })

  it('both layers: a resend inside the duplicate window is dropped by the stream, one outside it by idem', async () => {
    const { stream, subject, prefix } = await names({ duplicateWindowMs: 500 })
    const p = publisher()
    const first = await p.publish(subject, 'charge 42', { key: 'order-42' })
    const inside = await p.publish(subject, 'charge 42', { key: 'order-42' })
    await new Promise((resolve) => setTimeout(resolve, 1_200))
    const outside = await p.publish(subject, 'charge 42', { key: 'order-42' })
    expect([first.duplicate, inside.duplicate, outside.duplicate]).toEqual([false, true, false])
    expect(inside.seq).toBe(first.seq)
    let effects = 0
    const c = consumer({ stream, engine: await engine(prefix), handler: () => void effects++ })
    await waitFor('both stored copies acked', () => c.stats().acked === 2)
    const brokerDropped = p.stats().brokerDuplicates
    const idemDropped = c.stats().duplicates
    console.log(`nats dedup layers: 3 publishes of one key; dropped by the stream (inside its window) ${brokerDropped}, by idem (outside it) ${idemDropped}; effects ${effects}`)
    expect({ brokerDropped, idemDropped, effects }).toEqual({ brokerDropped: 1, idemDropped: 1, effects: 1 })
  })

  it('bad input: no key, an over-long key, a non-UTF-8 Nats-Msg-Id, an unparseable payload are termed with the code; the others run', async () => {
    const { stream, subject, prefix } = await names()
    const h = (id: string) => {
      const hs = headers()
      hs.set('Nats-Msg-Id', id)
      return hs
    }
    nc.publish(subject, '{"n":1}', { headers: h('good-1') })
    nc.publish(subject, '{"n":2}')
    nc.publish(subject, '{"n":3}', { headers: h('k'.repeat(1025)) })
    await nc.flush()
    await publishRawHeader(subject, Buffer.concat([Buffer.from('Nats-Msg-Id: or'), Buffer.from([0xff, 0xfe])]), '{"n":4}')
    nc.publish(subject, 'not json', { headers: h('bad-json') })
    nc.publish(subject, '{"n":6}', { headers: h('good-2') })
    await nc.flush()
    const ran: number[] = []
    const terms: JetStreamTermination[] = []
    const c = consumer({
      stream,
      engine: await engine(prefix),
      // Parsed in fingerprintOf, so a body that does not parse is bad input, not a handler error to retry.
      fingerprintOf: (m) => String((m.json() as { n: number }).n),
      handler: (m) => void ran.push((m.json() as { n: number }).n),
    })
    c.on('terminated', (t) => terms.push(t))
    await waitFor('all six settled', () => c.stats().acked + c.stats().terminated === 6)
    expect(ran.sort()).toEqual([1, 6])
    const codes = Object.fromEntries(terms.map((t) => [t.delivery.string(), t.code]))
    expect(codes).toEqual({ '{"n":2}': ErrorCode.INVALID_KEY, '{"n":3}': ErrorCode.INVALID_KEY, '{"n":4}': ErrorCode.INVALID_MESSAGE, 'not json': ErrorCode.INVALID_MESSAGE })
    expect(terms.find((t) => t.delivery.string() === '{"n":4}')!.message).toMatch(/not valid UTF-8/)
    await waitFor('nothing pending on the server', async () => (await backlog(stream)) === 0)
  })

  it('a handler error is nak’ed with retryDelayMs; on delivery maxDeliveries it is termed with HANDLER_FAILED', async () => {
    const { stream, subject, prefix } = await names()
    const p = publisher()
    await p.publish(subject, 'flaky', { key: 'flaky' })
    await p.publish(subject, 'poison', { key: 'poison' })
    const runs = new Map<string, number>()
    const terms: JetStreamTermination[] = []
    const c = consumer({
      stream,
      maxDeliveries: 3,
      engine: await engine(prefix),
      handler: (m) => {
        const n = (runs.get(m.string()) ?? 0) + 1
        runs.set(m.string(), n)
        if (m.string() === 'poison' || n < 3) throw new Error(`${m.string()} failed on run ${n}`)
      },
    })
    c.on('terminated', (t) => terms.push(t))
    await waitFor('flaky acked, poison termed', () => c.stats().acked === 1 && c.stats().terminated === 1)
    expect(Object.fromEntries(runs)).toEqual({ flaky: 3, poison: 3 })
    expect(c.stats().retried).toBe(4)
    expect(terms[0]).toMatchObject({ code: ErrorCode.HANDLER_FAILED, key: 'poison', deliveries: 3 })
  })

  it('a key in flight in another consumer is nak’ed with inFlightDelayMs (no spin), then acked as a duplicate', async () => {
    const { stream, subject, prefix } = await names()
    await jsm.consumers.add(stream, { durable_name: 'other', ack_policy: AckPolicy.Explicit })
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let effects = 0
    const p = publisher()
    const slow = consumer({ stream, engine: await engine(prefix, { leaseMs: 10_000 }), handler: async () => void (effects++, await gate) })
    await p.publish(subject, 'x', { key: 'same' })
    await waitFor('the first copy running', () => effects === 1)
    // Another durable consumer on the same stream gets its own copy: the same key, while the first runs, in another engine.
    const other = consumer({ stream, consumer: 'other', engine: await engine(prefix, { leaseMs: 10_000 }), inFlightDelayMs: 200, handler: () => void effects++ })
    await waitFor('the other copy nak’ed at least twice', () => other.stats().inFlight >= 2)
    expect(other.stats().received).toBeLessThan(20)
    release()
    await waitFor('both settled', () => slow.stats().acked === 1 && other.stats().acked === 1)
    expect(effects).toBe(1)
    expect(other.stats().duplicates).toBe(1)
  })

  it('a handler running past ack_wait sends working(), so its message is not redelivered meanwhile', async () => {
    const { stream, subject, prefix } = await names({ ackWaitMs: 1_000 })
    const p = publisher()
    await p.publish(subject, 'slow', { key: 'slow' })
    let runs = 0
    const c = consumer({ stream, engine: await engine(prefix, { leaseMs: 5_000 }), handler: async () => void (runs++, await new Promise((resolve) => setTimeout(resolve, 2_500))) })
    await waitFor('acked', () => c.stats().acked === 1, 15_000)
    expect(runs).toBe(1)
    expect(c.stats().received).toBe(1)
    expect(c.stats().working).toBeGreaterThanOrEqual(3)
    expect((await jsm.consumers.info(stream, 'c')).num_redelivered).toBe(0)
  })

  it('keeps consuming after its connection is cut by a proxy, twice, mid-run: lost 0, double 0', async () => {
    const { stream, subject, prefix } = await names({ ackWaitMs: 5_000 })
    const proxy = await startProxy(4222)
    proxies.push(proxy)
    const keys = keysWithDuplicates(2100, 3000)
    for (const key of keys) {
      const h = headers()
      h.set('Order-Key', key)
      nc.publish(subject, key, { headers: h })
    }
    await nc.flush()
    const effects = new Map<string, number>()
    const cut = await connect({ servers: `127.0.0.1:${proxy.port}`, maxReconnectAttempts: -1, reconnectTimeWait: 100 })
    let reconnects = 0
    void (async () => {
      for await (const status of cut.status()) if (status.type === 'reconnect') reconnects++
    })()
    const c = createJetStreamConsumer({
      connection: cut,
      stream,
      consumer: 'c',
      batch: 64,
      engine: await engine(prefix),
      inFlightDelayMs: 100,
      keyOf: (m) => m.headers?.get('Order-Key'),
      handler: async (m) => {
        await new Promise((resolve) => setTimeout(resolve, 1))
        effects.set(m.string(), (effects.get(m.string()) ?? 0) + 1)
      },
    })
    consumers.push(c)
    await c.waitUntilReady()
    for (const share of [0.25, 0.6]) {
      await waitFor(`${share * 100}% of the keys done`, () => effects.size >= share * 2100, 60_000)
      proxy.resetAll()
    }
    await waitFor('every key done and nothing pending', async () => effects.size === 2100 && c.stats().holding === 0 && (await backlog(stream)) === 0, 60_000)
    const doubles = [...effects.values()].reduce((sum, n) => sum + n - 1, 0)
    console.log(`nats connection cuts: 3000 messages (2100 keys), 2 cuts, reconnects ${reconnects}, lost ${2100 - effects.size}, double ${doubles}, transport errors ${c.stats().transportErrors}`)
    expect(reconnects).toBeGreaterThanOrEqual(2)
    expect(doubles).toBe(0)
    await c.close()
    await cut.close()
  })

  it('refuses a missing consumer (waitUntilReady rejects) and bad options (ConfigError naming each field)', async () => {
    const { stream, prefix } = await names()
    const e = await engine(prefix)
    const missing = consumer({ stream, consumer: 'nobody', engine: e, handler: () => {} })
    await expect(missing.waitUntilReady()).rejects.toMatchObject({ code: ErrorCode.TRANSPORT_FAILED })
    const bad = () => createJetStreamConsumer({ servers: [], stream: '', consumer: 'c', batch: 0, engine: e, handler: 1 as never, inFlightDelayMs: 0, colour: 1 } as never)
    expect(bad).toThrow(ConfigError)
    try {
      bad()
    } catch (error) {
      expect((error as ConfigError).problems.join('\n')).toMatch(/colour: must be left out[\s\S]*servers: must be[\s\S]*stream: must be[\s\S]*handler: must be[\s\S]*batch: must be[\s\S]*inFlightDelayMs: must be/)
    }
  })

  it('terms with the reason only where the server reads one (2.10 and later)', () => {
    expect(['2.9.10', '2.10.0', '2.11.3', '3.0.0', undefined].map((v) => termTakesReason(v))).toEqual([false, true, true, true, false])
  })

  it('msgActionOf is the settle table', () => {
    expect(msgActionOf({ key: 'k', verdict: 'new' }, 1, 5)).toBe(MsgAction.ACK)
    expect(msgActionOf({ key: 'k', verdict: 'duplicate' }, 1, 5)).toBe(MsgAction.ACK)
    expect(msgActionOf({ key: 'k', verdict: 'in-flight' }, 9, 5)).toBe(MsgAction.WAIT)
    expect(msgActionOf({ key: 'k', verdict: 'new', error: { code: 'HANDLER_FAILED' } as IdemError }, 4, 5)).toBe(MsgAction.RETRY)
    expect(msgActionOf({ key: 'k', verdict: 'new', error: { code: 'HANDLER_FAILED' } as IdemError }, 5, 5)).toBe(MsgAction.TERM)
    expect(msgActionOf({ key: 'k', verdict: 'conflict' }, 1, 5)).toBe(MsgAction.TERM)
    expect(msgActionOf({ key: 'k', verdict: 'invalid' }, 1, 5)).toBe(MsgAction.TERM)
  })
})

describe('createJetStreamPublisher', () => {
  it('refuses a key the consumer would refuse', async () => {
    const { subject } = await names()
    const p = publisher()
    await expect(p.publish(subject, 'x', { key: '' })).rejects.toMatchObject({ code: ErrorCode.INVALID_KEY })
    await expect(p.publish(subject, 'x', { key: 'k'.repeat(1025) })).rejects.toMatchObject({ code: ErrorCode.INVALID_KEY })
  })
})

