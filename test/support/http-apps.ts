/**
 * One app, three frameworks: the HTTP layer's suite runs the same routes on
 * Express 4, Express 5 and Fastify 5, each on a real server on loopback, and
 * a small HTTP client that can send what fetch cannot (a header twice).
 *
 * Routes (each counts its runs in `runs`, by path):
 *   POST|PATCH /orders  201 { order, item, caller } + Location, Set-Cookie (not replayed); waits for `gate` when set
 *   POST /client-error  400 { error }            POST /server-error  503 { error }
 *   POST /throws        the route throws (the framework answers 500)
 *   POST /large         200, a body of `largeBytes` bytes
 *   POST /stream        200, the body written in two chunks (streamed)
 *   POST /kill          SIGKILLs its process (child processes only)
 *   GET  /orders        200 (a method the layer leaves alone)
 *   POST /lenient       201, its own policy: a key is not required
 *   POST /untouched     201, the layer left out (Fastify: config false; Express: not mounted)
 *   POST /twice         201, the layer mounted twice (Express only)
 *   POST /hijack        200 written on the raw response after reply.hijack() (Fastify only)
 */
import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import express from 'express'
import Fastify from 'fastify'
import { idempotency as expressIdempotency } from '../../dist/src/http/express.js'
import { idempotency as fastifyIdempotency } from '../../dist/src/http/fastify.js'
import type { IdempotencyOptions } from '../../dist/src/http/options.js'

export const ADAPTERS = ['express4', 'express5', 'fastify'] as const
export type AdapterName = (typeof ADAPTERS)[number]

export interface AppState {
  /** Runs of each route, by path. */
  runs: Map<string, number>
  /** When set, /orders waits for it before answering. */
  gate?: Promise<void>
  /** Called when /orders starts running, after counting. */
  onRun?: () => void
  largeBytes: number
}

export interface RunningApp {
  url: string
  close(): Promise<void>
}

/** Layer options as every adapter takes them; `scope` and `fingerprint` get the framework's request, whose headers are Node's. */
export type LayerOptions = IdempotencyOptions<{ headers: Record<string, string | string[] | undefined> }>

export function newState(): AppState {
  return { runs: new Map(), largeBytes: 100_000 }
}

function ran(state: AppState, path: string): number {
  const count = (state.runs.get(path) ?? 0) + 1
  state.runs.set(path, count)
  return count
}

function orderOf(state: AppState, body: unknown, headers: Record<string, unknown>): { order: number; item: unknown; caller: unknown } {
  const order = ran(state, '/orders')
  state.onRun?.()
  return { order, item: (body as { item?: unknown } | undefined)?.item, caller: headers['x-user'] ?? null }
}

export async function startApp(adapter: AdapterName, options: LayerOptions, state: AppState): Promise<RunningApp> {
  return adapter === 'fastify' ? startFastify(options, state) : startExpress(adapter, options, state)
}

async function startExpress(adapter: 'express4' | 'express5', options: LayerOptions, state: AppState): Promise<RunningApp> {
  const framework = (adapter === 'express5' ? express : (await import('express4' as string)).default) as typeof express
  const app = framework()
  const idem = expressIdempotency(options as never)
  app.use(framework.json())
  // Per-route policies need the layer mounted per route: app.use's would decide every request first.
  app.post('/lenient', idem.route({ required: false }), (req, res) => void res.status(201).json({ run: ran(state, '/lenient') }))
  app.post('/untouched', (req, res) => void res.status(201).json({ run: ran(state, '/untouched') }))
  // Mounted twice on one route: the first layer decides, the second lets the request through.
  app.post('/twice', idem, idem.route({ required: false }), (req, res) => void res.status(201).json({ run: ran(state, '/twice') }))
  app.use(idem)
  const orders: express.RequestHandler = async (req, res) => {
    const order = orderOf(state, req.body, req.headers)
    await state.gate
    res.status(201).location(`/orders/${order.order}`).cookie('session', `s${order.order}`).json(order)
  }
  app.post('/orders', orders)
  app.patch('/orders', orders)
  app.get('/orders', (_req, res) => void res.json({ orders: state.runs.get('/orders') ?? 0 }))
  app.post('/client-error', (_req, res) => void res.status(400).json({ error: 'bad item', run: ran(state, '/client-error') }))
  app.post('/server-error', (_req, res) => void res.status(503).json({ error: 'try later', run: ran(state, '/server-error') }))
  app.post('/throws', (_req, _res, next) => {
    ran(state, '/throws')
    next(new Error('route failed'))
  })
  app.post('/large', (_req, res) => {
    ran(state, '/large')
    res.type('text/plain').send('x'.repeat(state.largeBytes))
  })
  app.post('/stream', (_req, res) => {
    ran(state, '/stream')
    res.type('text/plain')
    res.write('first ')
    res.end('second')
  })
  app.post('/kill', () => process.kill(process.pid, 'SIGKILL'))
  const server = app.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
      await idem.close()
    },
  }
}

async function startFastify(options: LayerOptions, state: AppState): Promise<RunningApp> {
  const app = Fastify()
  await app.register(fastifyIdempotency, options as never)
  const orders = async (request: { body: unknown; headers: Record<string, unknown> }, reply: import('fastify').FastifyReply) => {
    const order = orderOf(state, request.body, request.headers)
    await state.gate
    return reply.code(201).header('location', `/orders/${order.order}`).header('set-cookie', `session=s${order.order}; Path=/`).send(order)
  }
  app.post('/orders', orders)
  app.patch('/orders', orders)
  app.post('/lenient', { config: { idempotency: { required: false } } }, async (_request, reply) => reply.code(201).send({ run: ran(state, '/lenient') }))
  app.post('/untouched', { config: { idempotency: false } }, async (_request, reply) => reply.code(201).send({ run: ran(state, '/untouched') }))
  app.get('/orders', async () => ({ orders: state.runs.get('/orders') ?? 0 }))
  app.post('/client-error', async (_request, reply) => reply.code(400).send({ error: 'bad item', run: ran(state, '/client-error') }))
  app.post('/server-error', async (_request, reply) => reply.code(503).send({ error: 'try later', run: ran(state, '/server-error') }))
  app.post('/throws', async () => {
    ran(state, '/throws')
    throw new Error('route failed')
  })
  app.post('/large', async (_request, reply) => {
    ran(state, '/large')
    return reply.type('text/plain').send('x'.repeat(state.largeBytes))
  })
  app.post('/stream', async (_request, reply) => {
    ran(state, '/stream')
    return reply.type('text/plain').send(Readable.from(['first ', 'second']))
  })
  app.post('/hijack', async (_request, reply) => {
    ran(state, '/hijack')
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.end('written past fastify')
  })
  app.post('/kill', async () => process.kill(process.pid, 'SIGKILL'))
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`, close: () => app.close() }
}

export interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
  /** The body as JSON (undefined when it is not). */
  json: any
}

/** Sends a request; `headers` may give a name twice (as an array). Never throws for a status; rejects when the connection fails. */
export function send(url: string, method: string, path: string, options: { key?: string | string[]; body?: unknown; headers?: Record<string, string | string[]> } = {}): Promise<Answer> {
  const body = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body))
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}${path}`, { method, agent: false })
    for (const [name, value] of Object.entries(options.headers ?? {})) req.setHeader(name, value)
    if (options.key !== undefined) req.setHeader('Idempotency-Key', options.key)
    if (body !== undefined) {
      req.setHeader('content-type', 'application/json')
      req.setHeader('content-length', body.length)
    }
    req.on('response', (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => {
        const all = Buffer.concat(chunks)
        let json: unknown
        try {
          json = JSON.parse(all.toString('utf8'))
        } catch {
          json = undefined
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: all, json })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}
