/**
 * `idem demo http`: the HTTP Idempotency-Key layer under a client that does
 * what real clients do. A node:http server on a free loopback port runs the
 * Express middleware (it needs no Express: Node's request and response are
 * enough) on the embedded memory store, with one POST /orders route that
 * counts its runs per key. The client sends, per key, a burst of concurrent
 * copies (a double-click, a retry racing the first try), retries the 409s
 * until they get the first one's answer, retries once more after completion,
 * and now and then reuses the key with another body. Every key must run
 * exactly once: lost 0, double 0.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { createEngine } from '../engine.js'
import { idempotency, type ExpressRequest } from '../http/express.js'
import { Progress } from './progress.js'
import { formatTable } from './table.js'

export interface HttpDemoOptions {
  keys: number
  /** Copies of each key's first request sent at once. */
  burst: number
  /** Keys in flight at once. */
  concurrency: number
  json: boolean
}

export interface HttpDemoSummary {
  keys: number
  requests: number
  /** Runs of the route. */
  executions: number
  /** Answers with Idempotent-Replayed: true. */
  replays: number
  inFlight409: number
  conflicts422: number
  /** Keys reused with another body (each must be answered 422). */
  payloadChanges: number
  /** Keys the route never ran. */
  lost: number
  /** Keys the route ran more than once. */
  doubleExecutions: number
  /** Answers that were none of the above (must be 0). */
  unexpected: number
  requestsPerSec: number
  port: number
}

/** Every 10th key is reused with another body. */
const CHANGE_EVERY = 10
/** A client told to retry after Retry-After (1 s) would make the demo slow: it retries 409s after this instead. */
const DEMO_RETRY_MS = 5

export async function runHttpDemo(options: HttpDemoOptions): Promise<HttpDemoSummary> {
  const engine = await createEngine({ shards: 1 })
  const idem = idempotency({ engine, required: true })
  const runs = new Map<string, number>()
  const server = createServer((request: ExpressRequest, response) => {
    void bodyOf(request).then((body) => {
      request.body = body
      idem(request, response, () => {
        const key = String(request.headers['idempotency-key'])
        const run = (runs.get(key) ?? 0) + 1
        runs.set(key, run)
        // A few ms of "work", so that the burst's copies arrive while the first one runs.
        void sleep(2).then(() => {
          response.statusCode = 201
          response.setHeader('content-type', 'application/json')
          response.setHeader('location', `/orders/${key}`)
          response.end(JSON.stringify({ order: key, item: (body as { item?: unknown }).item, run }))
        })
      })
    })
  })
  const port = await listen(server)
  const base = `http://127.0.0.1:${port}`
  const counts = { requests: 0, replays: 0, inFlight409: 0, conflicts422: 0, unexpected: 0, fresh: 0 }
  const post = async (key: string, item: string): Promise<number> => {
    counts.requests++
    const answer = await fetch(`${base}/orders`, { method: 'POST', headers: { 'idempotency-key': key, 'content-type': 'application/json' }, body: JSON.stringify({ item }) })
    await answer.arrayBuffer()
    if (answer.status === 409) counts.inFlight409++
    else if (answer.status === 422) counts.conflicts422++
    else if (answer.status === 201 && answer.headers.get('idempotent-replayed') === 'true') counts.replays++
    else if (answer.status === 201) counts.fresh++
    else counts.unexpected++
    return answer.status
  }
  const untilAnswered = async (key: string, item: string): Promise<void> => {
    while ((await post(key, item)) === 409) await sleep(DEMO_RETRY_MS)
  }

  const progress = new Progress(options.keys, 'keys', !options.json && process.stderr.isTTY === true)
  const started = performance.now()
  let next = 0
  let done = 0
  let payloadChanges = 0
  const client = async (): Promise<void> => {
    while (next < options.keys) {
      const n = next++
      const key = `demo-order-${n}`
      await Promise.all(Array.from({ length: options.burst }, () => untilAnswered(key, 'book')))
      await post(key, 'book')
      if (n % CHANGE_EVERY === 0) {
        payloadChanges++
        await post(key, 'a different book')
      }
      progress.update(++done)
    }
  }
  await Promise.all(Array.from({ length: options.concurrency }, client))
  const seconds = (performance.now() - started) / 1000
  progress.finish()
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
  await idem.close()
  await engine.close()

  let executions = 0
  let doubleExecutions = 0
  for (const count of runs.values()) {
    executions += count
    if (count > 1) doubleExecutions++
  }
  return {
    keys: options.keys,
    requests: counts.requests,
    executions,
    replays: counts.replays,
    inFlight409: counts.inFlight409,
    conflicts422: counts.conflicts422,
    payloadChanges,
    lost: options.keys - runs.size,
    doubleExecutions,
    unexpected: counts.unexpected + Math.abs(counts.fresh - runs.size),
    requestsPerSec: Math.round(counts.requests / seconds),
    port,
  }
}

/** Whether the run showed what the layer promises. */
export function httpDemoPassed(s: HttpDemoSummary): boolean {
  return s.lost === 0 && s.doubleExecutions === 0 && s.unexpected === 0 && s.conflicts422 === s.payloadChanges
}

export function formatHttpDemoSummary(s: HttpDemoSummary): string {
  return formatTable(
    ['idem demo http', 'value'],
    [
      ['server', `node:http + idem/express middleware on 127.0.0.1:${s.port}, memory store`],
      ['keys', s.keys],
      ['requests', s.requests],
      ['route executions', s.executions],
      ['replays (Idempotent-Replayed: true)', s.replays],
      ['409 in flight (retried by the client)', s.inFlight409],
      ['422 payload changed', `${s.conflicts422} of ${s.payloadChanges} changes`],
      ['lost (keys never run)', s.lost],
      ['double (keys run twice)', s.doubleExecutions],
      ['unexpected answers', s.unexpected],
      ['throughput (requests/s)', s.requestsPerSec],
    ],
  )
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)))
}

/** The JSON body, as a body parser would leave it on the request. */
async function bodyOf(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  for await (const chunk of request) chunks.push(chunk as Buffer)
  return chunks.length === 0 ? undefined : JSON.parse(Buffer.concat(chunks).toString('utf8'))
}
