/**
 * The server side of the HTTP bench (http.bench.ts), in a process of its own
 * so that the load generator does not share its event loop: one trivial POST
 * route on Express 4, Express 5 or Fastify 5, bare, behind the
 * Idempotency-Key layer on the Redis store, or (Express) behind the peer
 * express-idempotency with its Redis adapter. Sends { port } once listening,
 * and answers { runs } (the routes' runs so far) to any message.
 *
 *   node dist/bench/http-server.js <express4|express5|fastify> <bare|idem|peer> <redisUrl> <prefix>
 *
 * Routes: POST /orders (trivial), POST /slow-orders (holds 20 ms, as a route
 * that writes to a database does: the concurrency probe's route).
 */
import type { AddressInfo } from 'node:net'
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
