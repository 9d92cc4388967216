/**
 * Fault test of the NATS JetStream transport: three consumer processes on one
 * durable pull consumer; one of them, in turn, is SIGKILLed six times (at
 * 10%, 25%, 40%, 55%, 70% and 85% of the keys done) and started again.
 * 50,000 messages by default (IDEM_NATS_KILL_MESSAGES sets another count),
 * 30% of them copies of a key published as messages of their own (no
 * Nats-Msg-Id, so the stream keeps them and idem alone drops them: the
 * broker's own layer is shown in test/integration/nats.test.ts). A killed
 * consumer's unacked messages come back after the consumer's ack_wait (2 s).
 * Effects are counted per key in Redis (HINCRBY in the handler). Bounded by
 * count and progress, not by time.
 */
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { AckPolicy, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import { connect, headers, type NatsConnection } from '@nats-io/transport-node'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { closeConsumerProcess, keysWithDuplicates, killAllConsumerProcesses, runWithKills } from '../support/consumer-processes.js'
import { FAULT_TEST_TIMEOUT_MS, untilDone } from '../support/progress.js'

const servers = '127.0.0.1:4222'
const redisUrl = 'redis://127.0.0.1:6379'
const MESSAGES = Number(process.env.IDEM_NATS_KILL_MESSAGES ?? 50_000)
const UNIQUE = Math.round(MESSAGES * 0.7)
const BATCH = 64
const LEASE_MS = 1_000
const ACK_WAIT_MS = 2_000
const KILL_AT = [0.1, 0.25, 0.4, 0.55, 0.7, 0.85]

const fixture = fileURLToPath(new URL('../support/fixtures/nats-consumer.mjs', import.meta.url))
const redis = new Redis(redisUrl)
const scope = `test-nats-kill-${randomUUID()}`
const stream = scope
const effectsKey = `${scope}:effects`
let nc: NatsConnection | undefined
let jsm: JetStreamManager | undefined

afterAll(async () => {
  killAllConsumerProcesses()
  await jsm?.streams.delete(stream).catch(() => {})
  await nc?.close()
  await deleteKeysUnder(redis, scope)
  redis.disconnect()
})

describe('JetStream consumers SIGKILLed mid-run', () => {
  it(`three consumers, one killed ${KILL_AT.length} times: lost 0, doubles within kills × batch`, async () => {
    nc = await connect({ servers })
    jsm = await jetstreamManager(nc)
    await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] })
    await jsm.consumers.add(stream, { durable_name: 'c', ack_policy: AckPolicy.Explicit, ack_wait: ACK_WAIT_MS * 1e6, max_deliver: -1, max_ack_pending: 10_000 })
    const keys = keysWithDuplicates(UNIQUE, MESSAGES)
    for (const key of keys) {
      const h = headers()
      h.set('Order-Key', key)
      nc.publish(`${stream}.orders`, key, { headers: h })
    }
    await nc.flush()
    const manager = jsm
    await untilDone({ what: 'every message stored', done: async () => (await manager.streams.info(stream)).state.messages === MESSAGES, progress: async () => (await manager.streams.info(stream)).state.messages })

    const args = [servers, stream, 'c', redisUrl, `${scope}:idem:`, effectsKey, BATCH, LEASE_MS]
    const started = Date.now()
    const effectCount = () => redis.hlen(effectsKey)
    const { consumers, kills, killedHeld } = await runWithKills(fixture, () => args, KILL_AT, UNIQUE, effectCount)

    const backlog = async () => {
      const info = await manager.consumers.info(stream, 'c')
      return info.num_pending + info.num_ack_pending
    }
    await untilDone({
      what: 'every key done and nothing pending or unacked',
      done: async () => (await effectCount()) === UNIQUE && (await backlog()) === 0,
      progress: async () => (await effectCount()) + MESSAGES - (await backlog()),
      pollMs: 200,
    })
    const seconds = (Date.now() - started) / 1000
    const finals = await Promise.all(consumers.map((c) => closeConsumerProcess(c)))

    const perKey = Object.values(await redis.hgetall(effectsKey)).map(Number)
    const lost = UNIQUE - perKey.length
    const doubles = perKey.reduce((sum, n) => sum + n - 1, 0)
    const bound = kills * BATCH
    console.log(
      `nats SIGKILL test: ${MESSAGES} messages (${UNIQUE} unique keys), 3 consumers, ${kills} kills in ${seconds.toFixed(1)} s; ` +
        `lost ${lost}, double effects ${doubles} (bound ${kills} kills × ${BATCH} batch = ${bound}); ` +
        `held by each killed consumer at its last report ${killedHeld.join('/')}; ` +
        `the consumers alive at the end: received ${finals.map((f) => f.stats.received).join('/')}, in-flight naks ${finals.map((f) => f.stats.inFlight).join('/')}, termed ${finals.map((f) => f.stats.terminated).join('/')}`,
    )
    expect(lost).toBe(0)
    expect(doubles).toBeLessThanOrEqual(bound)
    expect(finals.every((f) => f.stats.terminated === 0)).toBe(true)
    expect(finals.flatMap((f) => f.errors).filter((e) => !e.startsWith('TRANSPORT_FAILED'))).toEqual([])
  }, FAULT_TEST_TIMEOUT_MS)
})
