/**
 * The server side of the HTTP bench (http.bench.ts), in a process of its own
 * so that the load generator does not share its event loop: one trivial POST
 * route on Express 4, Express 5 or Fastify 5, bare or behind the
 * Idempotency-Key layer on the Redis store. Sends { port } once listening,
 * and answers { runs } (the route's runs so far) to any message.
 *
 *   node dist/bench/http-server.js <express4|express5|fastify> <bare|idem> <redisUrl> <prefix>
 */
import type { AddressInfo } from 'node:net'
import { createEngine } from '../src/engine.js'

const [framework, mode, url, prefix] = process.argv.slice(2)
let runs = 0
/** What the route does: count its run and answer a small JSON body, the cost of a route that only records a call. */
const answer = (body: unknown): { ok: true; item: unknown; run: number } => ({ ok: true, item: (body as { item?: unknown } | undefined)?.item, run: ++runs })

const engine = mode === 'idem' ? await createEngine({ shards: 1, store: { kind: 'redis', url, prefix } }) : undefined
let port: number
if (framework === 'fastify') {
  const { default: Fastify } = await import('fastify')
  const { idempotency } = await import('../src/http/fastify.js')
  const app = Fastify()
  if (engine !== undefined) await app.register(idempotency, { engine, required: true })
  app.post('/orders', async (request, reply) => reply.code(201).send(answer(request.body)))
  await app.listen({ port: 0, host: '127.0.0.1' })
  port = (app.server.address() as AddressInfo).port
} else {
  const express = ((await import(framework === 'express4' ? 'express4' : ('express' as string))) as { default: typeof import('express') }).default
  const { idempotency } = await import('../src/http/express.js')
  const app = express()
  app.use(express.json())
  if (engine !== undefined) app.use(idempotency({ engine, required: true }))
  app.post('/orders', (req, res) => void res.status(201).json(answer(req.body)))
  const server = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  port = (server.address() as AddressInfo).port
}
process.on('message', () => process.send!({ runs }))
process.send!({ port })
