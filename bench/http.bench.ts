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
 * pipelining (HTTP clients do not pipeline), 3 rounds of 4 s per row (1 s
 * with --quick), each after a 1 s warm-up on a fresh server, the rows' order
 * rotated per round; the table shows medians. Uses the Redis at
 * IDEM_BENCH_REDIS (default redis://127.0.0.1:6379) under a fresh prefix,
 * deleted afterwards. Checked: no errors, every answer 2xx, the route ran
 * once per answered new key (at least), and once in all for the replays.
 * Targets (issue 15): idem ≥ 0.5× bare with new keys, ≥ 0.8× bare on replays.
 *
 * The peers, on the Express tables, same route, same Redis, same client, new
 * keys and replays (target: idem ≥ 2× their requests/s): express-idempotency
 * 1.0 with express-idempotency-redis-adapter, and @node-idempotency/core 1.0
 * as middleware (see http-server.ts for how, and its storage). Then a probe per framework and layer: 50 copies
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
import { formatRatio, median, progress, withRatios, type BenchTable, type Check, type Row, type SuiteOptions, type SuiteResult, type Target } from './report.js'

const SUITE = 'http'
const URL_ = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const FRAMEWORKS = ['fastify', 'express5', 'express4'] as const
const CONNECTIONS = 50
const BODY = JSON.stringify({ item: 'book', quantity: 1 })
const serverScript = fileURLToPath(new URL('./http-server.js', import.meta.url))

/** The layers a server runs: none, idem, or a peer (express-idempotency; @node-idempotency/core). */
type Layer = 'bare' | 'idem' | 'peer' | 'node-idempotency'
const layerNames = { idem: 'idem', peer: 'express-idempotency', 'node-idempotency': '@node-idempotency/core' } as const satisfies Record<Exclude<Layer, 'bare'>, string>
type Mode = 'bare' | `${(typeof layerNames)[keyof typeof layerNames]}, ${'new keys' | 'replays'}`
type Framework = (typeof FRAMEWORKS)[number]
/** The peers are Express middleware here: measured on the Express tables only. */
const layersOf = (framework: Framework): Exclude<Layer, 'bare'>[] => (framework === 'fastify' ? ['idem'] : ['idem', 'peer', 'node-idempotency'])
const modesOf = (framework: Framework): Mode[] => ['bare', ...layersOf(framework).flatMap((layer) => [`${layerNames[layer]}, new keys`, `${layerNames[layer]}, replays`] as Mode[])]
const serverModeOf = (mode: Mode): Layer => (mode === 'bare' ? 'bare' : (Object.keys(layerNames) as Exclude<Layer, 'bare'>[]).find((layer) => mode.startsWith(`${layerNames[layer]},`))!)
/** Concurrent copies of one key in the probe, as the proof asks. */
const PROBE_COPIES = 50

interface Measured {
  requestsPerSec: number
  p99Ms: number
  answered: number
  non2xx: number
  errors: number
  runs: number
}

/** Rounds per row, the rows' order rotated each round: on a shared machine, a row run always first or last would carry the drift. */
const ROUNDS = 3

export async function runHttpSuite(options: SuiteOptions): Promise<SuiteResult> {
  const durationS = options.quick ? 1 : 4
  const admin = await connectBenchRedis(SUITE, URL_)
  const prefix = `idem-bench-http-${randomUUID().slice(0, 8)}:`
  const tables: BenchTable[] = []
  const checks: Check[] = []
  const targets: Target[] = []
  try {
    const probeRows: Row[] = []
    for (const framework of FRAMEWORKS) {
      const modes = modesOf(framework)
      const rounds = new Map<Mode, Measured[]>(modes.map((mode) => [mode, []]))
      for (let round = 0; round < ROUNDS; round++) {
        for (let i = 0; i < modes.length; i++) {
          const mode = modes[(i + round) % modes.length]
          const m = await measure(framework, mode, prefix, durationS)
          rounds.get(mode)!.push(m)
          progress(SUITE, `${framework}, ${mode}, round ${round + 1}: ${Math.round(m.requestsPerSec)} req/s, p99 ${m.p99Ms} ms`)
        }
      }
      const measured = Object.fromEntries([...rounds].map(([mode, runs]) => [mode, combined(runs)])) as Record<Mode, Measured>
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
          notes: [`median of ${ROUNDS} rounds of ${durationS} s per row (each after a 1 s warm-up, the order rotated per round); p99 the rounds' median; answered summed; server in a child process, autocannon here`],
        }),
      )
      for (const [mode, m] of Object.entries(measured)) {
        checks.push({ name: `${framework}, ${mode}: every answer 2xx, no errors`, ok: m.non2xx === 0 && m.errors === 0 && m.answered > 0, detail: `${m.answered} answered, ${m.non2xx} non-2xx, ${m.errors} errors` })
      }
      const fresh = measured['idem, new keys']
      checks.push({ name: `${framework}, idem, new keys: the route ran for every answered request`, ok: fresh.runs >= fresh.answered, detail: `${fresh.runs} runs for ${fresh.answered} answers` })
      const replays = measured['idem, replays']
      checks.push({ name: `${framework}, idem, replays: the route ran once per round (each round a fresh server and key)`, ok: replays.runs === ROUNDS, detail: `${replays.runs} runs in ${ROUNDS} rounds` })
      for (const server of layersOf(framework)) {
        const probe = await probeOneKey(framework, server, prefix)
        probeRows.push({ label: `${framework}, ${layerNames[server]}`, values: probe })
        progress(SUITE, `${framework}, ${server}: ${PROBE_COPIES} concurrent copies of one key ran the route ${probe.runs} time(s)`)
        if (server === 'idem') checks.push({ name: `${framework}, idem: ${PROBE_COPIES} concurrent copies of one key run the route once`, ok: probe.runs === 1, detail: `${probe.runs} runs; ${probe.ok2xx} 2xx, ${probe.conflict409} 409, ${probe.other} other` })
      }
      const ratio = (mode: Mode): number => measured[mode].requestsPerSec / measured.bare.requestsPerSec
      targets.push({ name: `${framework}: idem with new keys vs the bare route`, goal: '≥ 0.5x', measured: formatRatio(ratio('idem, new keys')), met: ratio('idem, new keys') >= 0.5 })
      targets.push({ name: `${framework}: idem replays vs the bare route`, goal: '≥ 0.8x', measured: formatRatio(ratio('idem, replays')), met: ratio('idem, replays') >= 0.8 })
      for (const peer of layersOf(framework).filter((layer) => layer !== 'idem')) {
        for (const what of ['new keys', 'replays'] as const) {
          const versus = measured[`idem, ${what}`].requestsPerSec / measured[`${layerNames[peer]}, ${what}`].requestsPerSec
          targets.push({ name: `${framework}: idem vs ${layerNames[peer]} (Redis), ${what}`, goal: '≥ 2x', measured: formatRatio(versus), met: versus >= 2 })
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
      notes: [
        'more than 1 route run is a double effect: the layer let two copies of one request through',
        'express-idempotency reads the key (GET), then writes it (SET): copies that read before the first write all run; @node-idempotency/core claims with SET NX',
      ],
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

/** The rounds of one row: median rate and p99; answers, failures and route runs summed. */
function combined(runs: Measured[]): Measured {
  const sum = (field: keyof Measured): number => runs.reduce((total, m) => total + m[field], 0)
  return {
    requestsPerSec: median(runs.map((m) => m.requestsPerSec)),
    p99Ms: median(runs.map((m) => m.p99Ms)),
    answered: sum('answered'),
    non2xx: sum('non2xx'),
    errors: sum('errors'),
    runs: sum('runs'),
  }
}

function startServer(framework: Framework, mode: Layer, storePrefix: string): ChildProcess {
  return fork(serverScript, [framework, mode, URL_, storePrefix], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
}

/** 50 copies of one request sent at once to a route that takes 20 ms: how many times the route ran, and what the copies got. */
async function probeOneKey(framework: Framework, mode: Exclude<Layer, 'bare'>, prefix: string): Promise<{ runs: number; ok2xx: number; conflict409: number; other: number }> {
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
