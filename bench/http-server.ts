/**
 * The server side of the HTTP bench (http.bench.ts), in a process of its own
 * so that the load generator does not share its event loop: one trivial POST
 * route on Express 4, Express 5 or Fastify 5, bare, behind the
 * Idempotency-Key layer on the Redis store, or (Express) behind the peer
 * express-idempotency with its Redis adapter. Sends { port } once listening,
 * and answers { runs } (the routes' runs so far) to any message.
 *
 * Or behind @node-idempotency/core (mode node-idempotency): its onRequest
 * before the route, its onResponse when the route answers (res.json), as its
 * README describes for a framework without a wrapper; its storage is an
 * ioredis adapter doing what @node-idempotency/storage-adapter-redis does
 * (SET NX PX, SET PX, GET), since that adapter needs redis 4, which conflicts
 * here with bullmq's optional peer redis ≥ 5.
 *
 *   node dist/bench/http-server.js <express4|express5|fastify> <bare|idem|peer|node-idempotency> <redisUrl> <prefix>
 *
 * Routes: POST /orders (trivial), POST /slow-orders (holds 20 ms, as a route
 * that writes to a database does: the concurrency probe's route).
 */
import type { AddressInfo } from 'node:net'
import type { NextFunction, Request, Response } from 'express'
import { Redis } from 'ioredis'
import { setTimeout as sleep } from 'node:timers/promises'
import { createEngine } from '../src/engine.js'

const [framework, mode, url, prefix] = process.argv.slice(2)
let runs = 0
/** What the route does: count its run and answer a small JSON body, the cost of a route that only records a call. */
const answer = (body: unknown): { ok: true; item: unknown; run: number } => ({ ok: true, item: (body as { item?: unknown } | undefined)?.item, run: ++runs })
const SLOW_ROUTE_MS = 20

const engine = mode === 'idem' ? await createEngine({ shards: 1, store: { kind: 'redis', url, prefix } }) : undefined
let port: number
if (framework === 'fastify') {
  const { default: Fastify } = await import('fastify')
  const { idempotency } = await import('../src/http/fastify.js')
  const app = Fastify()
  if (engine !== undefined) await app.register(idempotency, { engine, required: true })
  app.post('/orders', async (request, reply) => reply.code(201).send(answer(request.body)))
  app.post('/slow-orders', async (request, reply) => {
    await sleep(SLOW_ROUTE_MS)
    return reply.code(201).send(answer(request.body))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  port = (app.server.address() as AddressInfo).port
} else {
  const express = ((await import(framework === 'express4' ? 'express4' : ('express' as string))) as { default: typeof import('express') }).default
  const { idempotency } = await import('../src/http/express.js')
  const app = express()
  app.use(express.json())
  if (engine !== undefined) app.use(idempotency({ engine, required: true }))
  // The peer calls next() for a request it answered itself: the route must ask whether it did.
  let answeredByPeer = (_req: unknown): boolean => false
  if (mode === 'peer') {
    const peer = await import('express-idempotency')
    // A CommonJS module whose exports.default is the class: import() gives the exports object as `default`.
    const { default: exported } = (await import('express-idempotency-redis-adapter')) as unknown as { default: { default: new (options: object) => { connect(): Promise<void> } } }
    const RedisAdapter = exported.default
    const adapter = new RedisAdapter({ connectionConfig: { url } })
    await adapter.connect()
    app.use(peer.idempotency({ dataAdapter: adapter as never }))
    answeredByPeer = (req) => peer.getSharedIdempotencyService().isHit(req as never)
  }
  if (mode === 'node-idempotency') app.use(await nodeIdempotencyMiddleware(url, prefix))
  app.post('/orders', (req, res) => {
    if (!answeredByPeer(req)) res.status(201).json(answer(req.body))
  })
  app.post('/slow-orders', async (req, res) => {
    if (answeredByPeer(req)) return
    await sleep(SLOW_ROUTE_MS)
    res.status(201).json(answer(req.body))
  })
  // The peer answers 409 through next(error): answered here without Express's default logging of every one.
  app.use((error: Error, _req: unknown, res: import('express').Response, _next: unknown) => void res.status(res.statusCode >= 400 ? res.statusCode : 500).json({ error: error.message }))
  const server = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  port = (server.address() as AddressInfo).port
}
process.on('message', () => process.send!({ runs }))
process.send!({ port })

/** @node-idempotency/core as Express middleware: 409 in progress, 422 fingerprint mismatch, 400 other refusals. */
async function nodeIdempotencyMiddleware(redisUrl: string, keyPrefix: string): Promise<(req: Request, res: Response, next: NextFunction) => void> {
  const { Idempotency } = await import('@node-idempotency/core')
  const redis = new Redis(redisUrl)
  const storage = {
    setIfNotExists: async (key: string, value: string, { ttl }: { ttl?: number } = {}) => (await redis.set(key, value, 'PX', ttl ?? 86_400_000, 'NX')) === 'OK',
    set: async (key: string, value: string, { ttl }: { ttl?: number }) => void (await redis.set(key, value, 'PX', ttl ?? 86_400_000)),
    get: async (key: string) => (await redis.get(key)) ?? undefined,
    connect: async () => undefined,
    disconnect: async () => redis.disconnect(),
  }
  const layer = new Idempotency(storage, { cacheKeyPrefix: keyPrefix.replace(/:$/, ''), enforceIdempotency: true })
  return (req, res, next) => {
    const request = { method: req.method, headers: req.headers as Record<string, unknown>, body: req.body as Record<string, unknown>, path: req.path }
    layer.onRequest(request).then(
      (cached) => {
        if (cached !== undefined) {
          res.status((cached.additional as { status: number }).status).json(cached.body)
          return
        }
        const json = res.json.bind(res)
        res.json = (body: unknown) => {
          void layer.onResponse(request, { body, additional: { status: res.statusCode } }).then(() => json(body))
          return res
        }
        next()
      },
      (error: { code?: string; message: string }) => {
        const status = error.code === 'REQUEST_IN_PROGRESS' ? 409 : error.code === 'IDEMPOTENCY_FINGERPRINT_MISSMATCH' ? 422 : 400
        res.status(status).json({ error: error.message })
      },
    )
  }
}
