/**
 * `idem/express`: the Idempotency-Key layer as Express middleware (Express 4
 * and 5). Mount it after the body parser, before the routes it protects:
 *
 *   const idem = idempotency({ engine, required: true, scope: (req) => req.user?.id })
 *   app.use(express.json(), idem)
 *   app.post('/refunds', idem.route({ wait: { maxMs: 5000 } }), refund)   // a route's own policy
 *
 * It needs nothing of Express but Node's request and response and `next`
 * (types below are structural: no @types/express needed), so it also serves
 * a plain node:http server that parses its own body.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { IdempotencyCore, type RouteRun } from './idempotency-core.js'
import type { IdempotencyOptions, RequestPolicy, RequestPolicyOptions, RequestView } from './options.js'
import type { LayerReply } from './problem.js'
import { NotReplayable } from './stored-response.js'

/** What the middleware reads of Express's request: Node's, with the parsed body and the URL before routing. */
export type ExpressRequest = IncomingMessage & { body?: unknown; originalUrl?: string }
export type ExpressNext = (error?: unknown) => void
export type ExpressMiddleware = (request: ExpressRequest, response: ServerResponse, next: ExpressNext) => void

export interface IdempotencyMiddleware extends ExpressMiddleware {
  /** The same layer with a route's own policy: `app.post('/x', idem.route({ required: true }), handler)`. @throws ConfigError */
  route(overrides: RequestPolicyOptions<ExpressRequest>): ExpressMiddleware
  /** Closes the layer's store connection once the requests running have finished. */
  close(): Promise<void>
}

/** The middleware. @throws ConfigError naming every bad option. */
export function idempotency(options: IdempotencyOptions<ExpressRequest>): IdempotencyMiddleware {
  const core = new IdempotencyCore<ExpressRequest>(options, 'idempotency()')
  const middlewareOf = (policy: RequestPolicy<ExpressRequest>): ExpressMiddleware => (request, response, next) => void handle(core, policy, request, response, next)
  const middleware = middlewareOf(core.policy) as IdempotencyMiddleware
  middleware.route = (overrides) => middlewareOf(core.policyWith(overrides, 'idem.route()'))
  middleware.close = () => core.close()
  return middleware
}

/**
 * Requests a layer has decided. The first layer a request meets decides it
 * (app.use's, or a route's own); a later one lets it through, where a second
 * claim of the key would find the first one's and answer 409 to itself.
 */
const decided = new WeakSet<IncomingMessage>()

async function handle(core: IdempotencyCore<ExpressRequest>, policy: RequestPolicy<ExpressRequest>, request: ExpressRequest, response: ServerResponse, next: ExpressNext): Promise<void> {
  if (decided.has(request)) {
    next()
    return
  }
  decided.add(request)
  let decision
  try {
    decision = await core.decide(viewOf(request), request, policy)
  } catch (error) {
    next(error)
    return
  }
  if (decision.kind === 'pass') next()
  else if (decision.kind === 'reply') writeReply(response, decision.reply)
  else {
    captureResponse(response, decision.run)
    next()
  }
}

function viewOf(request: ExpressRequest): RequestView {
  const url = request.originalUrl ?? request.url ?? '/'
  const query = url.indexOf('?')
  return { method: request.method ?? 'GET', path: query === -1 ? url : url.slice(0, query), rawHeaders: request.rawHeaders, body: request.body }
}

/** Writes a replay or a problem; the status and headers are the stored ones, the body the stored bytes. */
export function writeReply(response: ServerResponse, reply: LayerReply): void {
  response.statusCode = reply.status
  const headers = new Map<string, string[]>()
  for (const [name, value] of reply.headers) headers.set(name, [...(headers.get(name) ?? []), value])
  for (const [name, values] of headers) response.setHeader(name, values.length === 1 ? values[0] : values)
  response.end(reply.body)
}

type EndArguments = [chunk?: unknown, encoding?: unknown, callback?: unknown]

/**
 * Holds the route's response until its key is settled. Express sends a body
 * with one end() (res.send, res.json): that end is held, the response kept
 * (or the key released after a 5xx), then let through. A route that write()s
 * first is streaming: its writes go straight out and the key is stored as
 * not replayable when it ends, never with part of a body.
 */
function captureResponse(response: ServerResponse, run: RouteRun): void {
  const end = response.end
  const write = response.write
  const restore = (): void => {
    response.end = end
    response.write = write
  }
  response.write = function (this: ServerResponse, ...args: Parameters<typeof write>) {
    restore()
    response.end = function (this: ServerResponse, ...endArgs: EndArguments) {
      restore()
      const ended = (end as (...a: EndArguments) => ServerResponse).apply(this, endArgs)
      void run.finish({ status: response.statusCode, notReplayable: NotReplayable.STREAMED })
      return ended
    } as typeof end
    return write.apply(this, args)
  } as typeof write
  response.end = function (this: ServerResponse, ...endArgs: EndArguments) {
    restore()
    void run.finish({ status: response.statusCode, headers: response.getHeaders(), body: bodyOf(endArgs) }).then(() => (end as (...a: EndArguments) => ServerResponse).apply(response, endArgs))
    return response
  } as typeof end
}

/** The body end() was given: end(), end(callback), end(chunk[, encoding][, callback]). */
function bodyOf([chunk, encoding]: EndArguments): Buffer {
  if (chunk === undefined || chunk === null || typeof chunk === 'function') return Buffer.alloc(0)
  if (typeof chunk === 'string') return Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
  return Buffer.from(String(chunk))
}
