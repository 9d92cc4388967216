/**
 * One key space from the HTTP request to the queue (README "HTTP", "From a
 * request to a queue"): a POST with an Idempotency-Key enqueues a BullMQ job
 * carrying the same key (and the caller as its namespace), on one engine and
 * one Redis prefix. A client retry of a completed request is replayed and
 * enqueues nothing; a request that failed after enqueuing (its key released)
 * is run again by the retry and enqueues a second copy, which the consumer
 * absorbs: one effect.
 */
import { randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { Queue } from 'bullmq'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { createEngine } from '../../dist/src/index.js'
import { idempotency } from '../../dist/src/http/fastify.js'
import { createConsumer } from '../../dist/src/transport/bullmq/index.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { send } from '../support/http-apps.js'
import { waitFor } from '../support/wait-for.js'

const url = process.env.IDEM_TEST_REDIS ?? 'redis://127.0.0.1:6379'
const connection = { host: '127.0.0.1', port: 6379 }
const redis = new Redis(url)
afterAll(() => redis.disconnect())

describe('an HTTP request that enqueues a BullMQ job with its own key', () => {
  it('a client retry is replayed, a second enqueue of the key is absorbed by the consumer: one effect', async () => {
    const prefix = `test:http-bullmq:${randomUUID()}:`
    const engine = await createEngine({ shards: 2, store: { kind: 'redis', url, prefix } })
    const queue = new Queue(`idem-http-${randomUUID()}`, { connection })
    const effects = new Map<string, number>()
    const consumer = createConsumer<{ key: string; subject: string; item: string }>({
      queue: queue.name,
      connection,
      engine,
      keyOf: (job) => job.data.key,
      namespaceOf: (job) => job.data.subject,
      handler: async (job) => void effects.set(job.data.key, (effects.get(job.data.key) ?? 0) + 1),
    })
    const app = Fastify()
    try {
      await app.register(idempotency, { engine, required: true, scope: (request) => request.headers['x-user'] as string })
      app.post('/orders', async (request, reply) => {
        const key = request.headers['idempotency-key'] as string
        await queue.add('order', { key, subject: request.headers['x-user'] as string, item: (request.body as { item: string }).item })
        // A failure after the enqueue (a crash before the answer): the key is released, and the client retries.
        if (request.headers['x-fail-after-enqueue'] !== undefined) throw new Error('failed after enqueuing')
        return reply.code(202).send({ accepted: key })
      })
      await app.listen({ port: 0, host: '127.0.0.1' })
      const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
      const key = randomUUID()
      const request = { key, body: { item: 'book' }, headers: { 'x-user': 'alice' } }

      expect((await send(base, 'POST', '/orders', { ...request, headers: { ...request.headers, 'x-fail-after-enqueue': '1' } })).status).toBe(500)
      const accepted = await send(base, 'POST', '/orders', request)
      expect(accepted.status).toBe(202)
      const replay = await send(base, 'POST', '/orders', request)
      expect(replay.status).toBe(202)
      expect(replay.headers['idempotent-replayed']).toBe('true')

      // Two jobs carry the key (the failed request's and its retry's); the replay enqueued none.
      await waitFor('both jobs completed', async () => (await queue.getJobCounts('completed')).completed === 2)
      expect(await queue.count()).toBe(0)
      expect(effects.get(key)).toBe(1)
    } finally {
      await app.close()
      await consumer.close()
      await engine.close()
      await queue.obliterate({ force: true })
      await queue.close()
      await deleteKeysUnder(redis, prefix)
    }
  })
})
