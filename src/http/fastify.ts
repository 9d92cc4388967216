/**
 * `idem/fastify`: the Idempotency-Key layer as a Fastify 5 plugin, for every
 * route of the instance it is registered on (it is not encapsulated, as
 * fastify-plugin would do). A route sets its own policy, or opts out, in its
 * config:
 *
 *   await app.register(idempotency, { engine, required: true, scope: (request) => request.user?.id })
 *   app.post('/refunds', { config: { idempotency: { wait: { maxMs: 5000 } } } }, refund)
 *   app.post('/search', { config: { idempotency: false } }, search)
 *
 * Hooks: preHandler decides (after the body is parsed and validated), onSend
 * keeps the response before it goes out, the raw response's close catches a
 * reply sent past onSend (reply.hijack()).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Readable } from 'node:stream'
import { IdempotencyCore, type RouteRun } from './idempotency-core.js'
import type { IdempotencyOptions, RequestPolicy, RequestPolicyOptions } from './options.js'
import { NotReplayable } from './stored-response.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** This route's Idempotency-Key policy over the plugin's, or false: the layer leaves the route alone. */
    idempotency?: RequestPolicyOptions<FastifyRequest> | false
  }
}

export type FastifyIdempotencyOptions = IdempotencyOptions<FastifyRequest>

async function idempotencyPlugin(app: FastifyInstance, options: FastifyIdempotencyOptions): Promise<void> {
  const core = new IdempotencyCore<FastifyRequest>(options, 'the idempotency plugin')
  /** Each route's policy, resolved when the route is added (a bad one fails there, not at its first request). */
  const policies = new Map<string, RequestPolicy<FastifyRequest> | false>()
  const runs = new WeakMap<FastifyRequest, RouteRun>()
  const routeId = (method: string, url: string): string => `${method} ${url}`

  app.addHook('onRoute', (route) => {
    const overrides = route.config?.idempotency
    if (overrides === undefined) return
    const policy = overrides === false ? false : core.policyWith(overrides, `the idempotency config of ${String(route.method)} ${route.url}`)
    for (const method of [route.method].flat()) policies.set(routeId(method, route.url), policy)
  })

  app.addHook('preHandler', async (request, reply) => {
    const policy = policies.get(routeId(request.method, request.routeOptions.url ?? '')) ?? core.policy
    if (policy === false) return
    const [path] = request.url.split('?', 1)
    const decision = await core.decide({ method: request.method, path, rawHeaders: request.raw.rawHeaders, body: request.body }, request, policy)
    if (decision.kind === 'pass') return
    if (decision.kind === 'reply') {
      const { status, headers, body } = decision.reply
      reply.code(status)
      for (const [name, value] of headers) {
        const previous = reply.getHeader(name)
        reply.header(name, previous === undefined ? value : [previous, value].flat().map(String))
      }
      return reply.send(body)
    }
    const { run } = decision
    runs.set(request, run)
    // onSend never runs for a hijacked reply: the response went out unseen, and can only be stored as not replayable.
    reply.raw.once('close', () => {
      if (runs.get(request) !== run || !reply.raw.writableFinished) return
      runs.delete(request)
      void run.finish({ status: reply.raw.statusCode, notReplayable: NotReplayable.NOT_CAPTURED })
    })
  })

  app.addHook('onSend', async (request, reply, payload) => {
    const run = runs.get(request)
    if (run === undefined) return payload
    runs.delete(request)
    if (payload instanceof Readable || (payload !== null && typeof (payload as { pipe?: unknown }).pipe === 'function')) {
      await run.finish({ status: reply.statusCode, notReplayable: NotReplayable.STREAMED })
    } else {
      const body = payload === null || payload === undefined ? Buffer.alloc(0) : Buffer.isBuffer(payload) ? payload : Buffer.from(String(payload))
      await run.finish({ status: reply.statusCode, headers: reply.getHeaders(), body })
    }
    return payload
  })

  app.addHook('onClose', () => core.close())
}

// What fastify-plugin sets: the hooks apply to the whole instance, not only to routes inside the plugin.
Object.assign(idempotencyPlugin, { [Symbol.for('skip-override')]: true, [Symbol.for('fastify.display-name')]: 'idem-idempotency' })

/** The plugin: `await app.register(idempotency, { engine, ... })`. Registration fails with a ConfigError naming every bad option. */
export const idempotency = idempotencyPlugin
