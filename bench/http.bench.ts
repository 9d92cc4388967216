/**
 * HTTP suite: what the Idempotency-Key layer costs an API. One trivial POST
 * route (it counts its run and answers a small JSON body) on Express 4,
 * Express 5 and Fastify 5, each measured three ways in the same run:
 *   - bare: the route alone, no layer, no key;
 *   - idem, new keys: the layer on the Redis store, every request a fresh
 *     Idempotency-Key (a claim, the route, a commit of the response: two
 *     Redis round trips per request, the layer's whole cost);
 *   - idem, replays: every request the same key, already done (one claim
 *     that answers DONE with the kept response: the route does not run).
 * A trivial route is the worst case for the layer: any real route's own
 * work (a database write, a call to a payment API) dilutes its cost.
 *
 * The server runs in a child process (bench/http-server.ts) and autocannon
 * in this one, so the load generator never shares the server's event loop;
 * on a 2-core machine they share the cores with Redis. 50 connections, no
 * pipelining (HTTP clients do not pipeline), `DURATION_S` seconds per row
 * after a 1 s warm-up, rows of one framework back to back. Uses the Redis at
 * IDEM_BENCH_REDIS (default redis://127.0.0.1:6379) under a fresh prefix,
 * deleted afterwards. Checked: no errors, every answer 2xx, the route ran
 * once per answered new key (at least), and once in all for the replays.
 * Targets (issue 15): idem ≥ 0.5× bare with new keys, ≥ 0.8× bare on replays.
 *
 * The peer: express-idempotency (1.0, with express-idempotency-redis-adapter)
 * on the Express tables, same route, same Redis, same client, new keys and
 * replays; target idem ≥ 2× its requests/s. @node-idempotency/* is not
 * measured (not done yet). Then a probe per framework and layer: 50 copies
 * of one request at once to a route that takes 20 ms (a real route's
 * database write): how many times the route ran, and what the copies got.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { request } from 'node:http'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { connectBenchRedis } from './dup-stream.js'
import { formatRatio, progress, withRatios, type BenchTable, type Check, type Row, type SuiteOptions, type SuiteResult, type Target } from './report.js'

const SUITE = 'http'
const URL_ = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const FRAMEWORKS = ['fastify', 'express5', 'express4'] as const
const CONNECTIONS = 50
const BODY = JSON.stringify({ item: 'book', quantity: 1 })
const serverScript = fileURLToPath(new URL('./http-server.js', import.meta.url))

type Mode = 'bare' | 'idem, new keys' | 'idem, replays' | 'express-idempotency, new keys' | 'express-idempotency, replays'
type Framework = (typeof FRAMEWORKS)[number]
/** The peer is Express middleware: measured on the Express tables only. */
const modesOf = (framework: Framework): Mode[] =>
  framework === 'fastify' ? ['bare', 'idem, new keys', 'idem, replays'] : ['bare', 'idem, new keys', 'idem, replays', 'express-idempotency, new keys', 'express-idempotency, replays']
const serverModeOf = (mode: Mode): 'bare' | 'idem' | 'peer' => (mode === 'bare' ? 'bare' : mode.startsWith('idem') ? 'idem' : 'peer')
/** Concurrent copies of one key in the probe, as the issue's proof asks. */
const PROBE_COPIES = 50

interface Measured {
  requestsPerSec: number
  p99Ms: number
  answered: number
  non2xx: number
  errors: number
  runs: number
}

export async function runHttpSuite(options: SuiteOptions): Promise<SuiteResult> {
  const durationS = options.quick ? 2 : 8
  const admin = await connectBenchRedis(SUITE, URL_)
  const prefix = `idem-bench-http-${randomUUID().slice(0, 8)}:`
  const tables: BenchTable[] = []
  const checks: Check[] = []
  const targets: Target[] = []
  try {
    const probeRows: Row[] = []
    for (const framework of FRAMEWORKS) {
      const rows: Partial<Record<Mode, Measured>> = {}
      for (const mode of modesOf(framework)) {
        rows[mode] = await measure(framework, mode, prefix, durationS)
        progress(SUITE, `${framework}, ${mode}: ${Math.round(rows[mode].requestsPerSec)} req/s, p99 ${rows[mode].p99Ms} ms`)
      }
      const measured = rows as Record<Mode, Measured>
      tables.push(
        withRatios({
          title: `HTTP: ${framework}, one trivial POST route, ${CONNECTIONS} connections, Redis store (requests/s)`,
          baseline: 'bare',
          ratioOf: 'requestsPerSec',
          columns: [
            { key: 'requestsPerSec', title: 'req/s' },
            { key: 'p99Ms', title: 'p99 ms' },
            { key: 'answered', title: 'answered' },
          ],
          rows: Object.entries(measured).map(([label, m]) => ({ label, values: { requestsPerSec: Math.round(m.requestsPerSec), p99Ms: m.p99Ms, answered: m.answered } })),
          notes: [`${durationS} s per row after a 1 s warm-up; server in a child process, autocannon here`],
        }),
      )
      for (const [mode, m] of Object.entries(measured)) {
        checks.push({ name: `${framework}, ${mode}: every answer 2xx, no errors`, ok: m.non2xx === 0 && m.errors === 0 && m.answered > 0, detail: `${m.answered} answered, ${m.non2xx} non-2xx, ${m.errors} errors` })
      }
      const fresh = measured['idem, new keys']
      checks.push({ name: `${framework}, idem, new keys: the route ran for every answered request`, ok: fresh.runs >= fresh.answered, detail: `${fresh.runs} runs for ${fresh.answered} answers` })
      const replays = measured['idem, replays']
      checks.push({ name: `${framework}, idem, replays: the route ran once in all`, ok: replays.runs === 1, detail: `${replays.runs} runs` })
      const layers: ('idem' | 'peer')[] = framework === 'fastify' ? ['idem'] : ['idem', 'peer']
      for (const server of layers) {
        const probe = await probeOneKey(framework, server, prefix)
        probeRows.push({ label: `${framework}, ${server === 'idem' ? 'idem' : 'express-idempotency'}`, values: probe })
        progress(SUITE, `${framework}, ${server}: ${PROBE_COPIES} concurrent copies of one key ran the route ${probe.runs} time(s)`)
        if (server === 'idem') checks.push({ name: `${framework}, idem: ${PROBE_COPIES} concurrent copies of one key run the route once`, ok: probe.runs === 1, detail: `${probe.runs} runs; ${probe.ok2xx} 2xx, ${probe.conflict409} 409, ${probe.other} other` })
      }
      const ratio = (mode: Mode): number => measured[mode].requestsPerSec / measured.bare.requestsPerSec
      targets.push({ name: `${framework}: idem with new keys vs the bare route`, goal: '≥ 0.5x', measured: formatRatio(ratio('idem, new keys')), met: ratio('idem, new keys') >= 0.5 })
      targets.push({ name: `${framework}: idem replays vs the bare route`, goal: '≥ 0.8x', measured: formatRatio(ratio('idem, replays')), met: ratio('idem, replays') >= 0.8 })
      if (framework !== 'fastify') {
        const versus = (what: 'new keys' | 'replays'): number => measured[`idem, ${what}`].requestsPerSec / measured[`express-idempotency, ${what}`].requestsPerSec
        for (const what of ['new keys', 'replays'] as const) {
          targets.push({ name: `${framework}: idem vs express-idempotency (Redis), ${what}`, goal: '≥ 2x', measured: formatRatio(versus(what)), met: versus(what) >= 2 })
        }
      }
    }
    tables.push({
      title: `HTTP: ${PROBE_COPIES} concurrent requests with one Idempotency-Key, a route that takes 20 ms, Redis store`,
      columns: [
        { key: 'runs', title: 'route runs' },
        { key: 'ok2xx', title: '2xx' },
        { key: 'conflict409', title: '409' },
        { key: 'other', title: 'other' },
      ],
      rows: probeRows,
      notes: ['more than 1 route run is a double effect: the layer let two copies of one request through', 'express-idempotency reads the key (GET), then writes it (SET): copies that read before the first write all run'],
    })
  } finally {
    await deleteKeysUnder(admin, prefix)
    admin.disconnect()
  }
  return { suite: SUITE, tables, checks, targets }
}

/** One row: a fresh server process (a fresh key space for the replays), a warm-up, then the measured run. */
async function measure(framework: Framework, mode: Mode, prefix: string, durationS: number): Promise<Measured> {
  const server = startServer(framework, serverModeOf(mode), `${prefix}${framework}:${mode.endsWith('replays') ? 'replays' : 'fresh'}:`)
  try {
    const { port } = await nextMessage<{ port: number }>(server)
    const url = `http://127.0.0.1:${port}/orders`
    // The peer keeps its records under the key itself: keys under the run's prefix are deleted with it.
    const keyOf = (): string => `${prefix}${randomUUID()}`
    const replayKey = keyOf()
    const headerOf = (): Record<string, string> =>
      mode === 'bare' ? { 'content-type': 'application/json' } : { 'content-type': 'application/json', 'idempotency-key': mode.endsWith('replays') ? replayKey : keyOf() }
    const run = (seconds: number) =>
      autocannon({
        url,
        connections: CONNECTIONS,
        duration: seconds,
        requests: [{ method: 'POST', body: BODY, setupRequest: (request: Record<string, unknown>) => ({ ...request, headers: headerOf() }) }],
      })
    await run(1)
    const before = (await ask(server)).runs
    const result = await run(durationS)
    const after = (await ask(server)).runs
    return {
      requestsPerSec: result.requests.average,
      p99Ms: result.latency.p99,
      answered: result['2xx'] + result.non2xx,
      non2xx: result.non2xx,
      errors: result.errors,
      // The replays' one run was in the warm-up: count every run since the server started.
      runs: mode.endsWith('replays') ? after : after - before,
    }
  } finally {
    server.kill('SIGKILL')
  }
}

function startServer(framework: Framework, mode: 'bare' | 'idem' | 'peer', storePrefix: string): ChildProcess {
  return fork(serverScript, [framework, mode, URL_, storePrefix], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
}

/** 50 copies of one request sent at once to a route that takes 20 ms: how many times the route ran, and what the copies got. */
async function probeOneKey(framework: Framework, mode: 'idem' | 'peer', prefix: string): Promise<{ runs: number; ok2xx: number; conflict409: number; other: number }> {
  const server = startServer(framework, mode, `${prefix}${framework}:probe:`)
  try {
    const { port } = await nextMessage<{ port: number }>(server)
    const key = `${prefix}probe-${randomUUID()}`
    const statuses = await Promise.all(Array.from({ length: PROBE_COPIES }, () => post(port, '/slow-orders', key)))
    const { runs } = await ask(server)
    const ok2xx = statuses.filter((status) => status >= 200 && status < 300).length
    const conflict409 = statuses.filter((status) => status === 409).length
    return { runs, ok2xx, conflict409, other: PROBE_COPIES - ok2xx - conflict409 }
  } finally {
    server.kill('SIGKILL')
  }
}

/** One POST with a key; its status (0 when the connection failed). */
function post(port: number, path: string, key: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'idempotency-key': key } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', () => resolve(0))
    req.end(BODY)
  })
}

function nextMessage<T>(child: ChildProcess): Promise<T> {
  return new Promise((resolve, reject) => {
    child.once('message', (message) => resolve(message as T))
    child.once('exit', (code, signal) => reject(new Error(`the bench server exited (${code ?? signal})`)))
  })
}

function ask(child: ChildProcess): Promise<{ runs: number }> {
  const answer = nextMessage<{ runs: number }>(child)
  child.send('runs')
  return answer
}
