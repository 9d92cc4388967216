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
 */
import { fork, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { connectBenchRedis } from './dup-stream.js'
import { formatRatio, progress, withRatios, type BenchTable, type Check, type SuiteOptions, type SuiteResult, type Target } from './report.js'

const SUITE = 'http'
const URL_ = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const FRAMEWORKS = ['fastify', 'express5', 'express4'] as const
const CONNECTIONS = 50
const BODY = JSON.stringify({ item: 'book', quantity: 1 })
const serverScript = fileURLToPath(new URL('./http-server.js', import.meta.url))

type Mode = 'bare' | 'idem, new keys' | 'idem, replays'

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
    for (const framework of FRAMEWORKS) {
      const rows: Partial<Record<Mode, Measured>> = {}
      for (const mode of ['bare', 'idem, new keys', 'idem, replays'] as const) {
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
      const ratio = (mode: Mode): number => measured[mode].requestsPerSec / measured.bare.requestsPerSec
      targets.push({ name: `${framework}: idem with new keys vs the bare route`, goal: '≥ 0.5x', measured: formatRatio(ratio('idem, new keys')), met: ratio('idem, new keys') >= 0.5 })
      targets.push({ name: `${framework}: idem replays vs the bare route`, goal: '≥ 0.8x', measured: formatRatio(ratio('idem, replays')), met: ratio('idem, replays') >= 0.8 })
    }
  } finally {
    await deleteKeysUnder(admin, prefix)
    admin.disconnect()
  }
  return { suite: SUITE, tables, checks, targets }
}

/** One row: a fresh server process (a fresh key space for the replays), a warm-up, then the measured run. */
async function measure(framework: (typeof FRAMEWORKS)[number], mode: Mode, prefix: string, durationS: number): Promise<Measured> {
  const server = fork(serverScript, [framework, mode === 'bare' ? 'bare' : 'idem', URL_, `${prefix}${framework}:${mode === 'idem, replays' ? 'replays' : 'fresh'}:`], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  try {
    const { port } = await nextMessage<{ port: number }>(server)
    const url = `http://127.0.0.1:${port}/orders`
    const replayKey = randomUUID()
    const headerOf = (): Record<string, string> =>
      mode === 'bare' ? { 'content-type': 'application/json' } : { 'content-type': 'application/json', 'idempotency-key': mode === 'idem, replays' ? replayKey : randomUUID() }
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
      runs: mode === 'idem, replays' ? after : after - before,
    }
  } finally {
    server.kill('SIGKILL')
  }
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
