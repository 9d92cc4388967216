#!/usr/bin/env node
import { createRequire } from 'node:module'
import { constants } from 'node:os'
import { parseArgs } from 'node:util'
import { benchUsage } from '../../bench/suite-names.js'
import { IdemError } from '../errors.js'
import { defaults as consumerDefaults } from '../transport/bullmq/options.js'
import { OptionReader } from '../validation.js'
import { defaultDemoThreads, formatDemoSummary, runDemo } from './demo.js'
import { auditUsage } from './audit.js'
import { keysUsage } from './keys.js'
import { migrateUsage, parseStoreFlag } from './migrate.js'
import { shadowUsage } from './shadow.js'
import { storeUsage } from './store-admin.js'

interface Command {
  /** The command line it takes, as the usage shows it. */
  synopsis: string
  /** What it does, for `idem --help` and `idem <command> --help`; hidden commands have none. */
  about?: string
  run(args: string[]): Promise<number>
}

const commands: Record<string, Command> = {
  demo: {
    synopsis: `idem demo  [--messages N] [--dup-rate R] [--shards N] [--threads N] [--seed N] [--json]
             [--store memory|sqlite:PATH] [--mode strict|owned] [--metrics-port PORT] [--redis URL [--consumers N] [--concurrency N] [--kill-every S]]
             [--versions [--redis URL]]
  idem demo http [--keys N] [--burst N] [--concurrency N] [--json]`,
    about: `  demo   runs a generated stream with duplicates through the engine (memory store,
         in-memory queue) and checks that every unique key had exactly one effect.
         With --redis URL it runs end to end through BullMQ instead: a producer adds
         the stream to a fresh queue, --consumers processes (default 2) each run
         createConsumer (--concurrency jobs at once, default ${consumerDefaults.concurrency}) over a Redis-store
         engine on one shared prefix, and every effect is counted per key in Redis.
         --messages defaults to 100,000 there (BullMQ itself tops out near 10,000
         jobs/s on a small machine) and --threads to 0 (each consumer is a process).
         The queue and every key of the run are deleted at the end (bullmq must be
         installed: it is an optional peer dependency).
         --store sqlite:PATH runs the embedded demo on the SQLite store in that file
         (tables of its own, dropped at the end) instead of the memory store.
         --metrics-port PORT serves the embedded demo's Prometheus metrics at
         http://127.0.0.1:PORT/metrics while it runs (needs prom-client).
         --mode owned runs the embedded demo in owned mode (64 partitions, one
         member, threads 0): never-seen keys run with no store call, DONE records
         go in group commits; the summary adds partitions and group commits.
         With --redis URL --mode owned the stream goes through 64 partitioned
         Redis streams to --consumers member processes (default 2) sharing the
         partitions; --kill-every S SIGKILLs the member holding the most
         partitions every S seconds and starts a new one: its partitions move
         after the lease (3 s), and the summary shows lost 0 and the doubles
         against what the killed members held unacked.
         --versions runs parcel status pushes instead (versions 1..5 per parcel,
         delivered out of order and repeated: --messages defaults to 500,000)
         through version-aware keys on the memory store, or on --redis URL (a
         fresh prefix, deleted at the end), and checks every parcel ends at its
         newest status, none went back, none ran a version twice.
         demo http starts a server on a free loopback port with the HTTP
         Idempotency-Key layer (idem/express over node:http, memory store) and
         fires, per key (--keys, default 1,000), --burst concurrent copies
         (default 4; the 409s retried), a retry after completion, and for every
         10th key a changed body; it prints requests, route executions, replays,
         409s, 422s, lost and double (both must be 0).`,
    run: demo,
  },
  bench: {
    synopsis: benchUsage,
    about: `  bench  tinybench microbenchmarks: the WASM bloom against bloomfilter and
         bloom-filters, lru-cache, the engine end to end, and the stores and
         transports against their peers (needs the dev dependencies). --quick
         shrinks every workload for a smoke run; --only runs the suites named.`,
    run: async (args) => (await import('../../bench/run.js')).runBench(args),
  },
  migrate: {
    synopsis: migrateUsage,
    about: `  migrate creates a SQL store's tables and indexes (or checks the ones there), for
         deployments that create them ahead of the consumers (store.createTables: false).`,
    run: async (args) => (await import('./migrate.js')).runMigrate(args),
  },
  keys: {
    synopsis: keysUsage,
    about: `  keys   an operator's view of single keys in a shared store (Redis, PostgreSQL,
         MySQL/MariaDB, SQLite): show prints each key's state; resolve decides a
         key whose outcome is UNKNOWN (a handler timed out or threw outcomeUnknown()):
         --done makes it DONE (--result JSON keeps a result for its duplicates),
         --not-done makes it absent so its next delivery runs the handler; forget
         removes any key's record so it runs again. Give the store's --prefix and
         --hash-tags (Redis) or --table-prefix and --tables (SQL) as the engines
         have them. Exit 1 when a key was not UNKNOWN (resolve) or the store failed.`,
    run: async (args) => (await import('./keys.js')).runKeys(args),
  },
  audit: {
    synopsis: auditUsage,
    about: `  audit  checks and reads an audit log (createEngine({ audit })): verify walks the
         chain of the files given in order (<file>, <file>.000001…) and exits 0 when
         whole, 1 naming the first altered, deleted or moved line, 3 when the last
         line is cut short (an interrupted write, not tampering), 2 on bad usage or
         a key that does not fit. read prints every record as a JSON line (stdout)
         and ends as verify does (its message on stderr). The key: --key-file K or
         IDEM_AUDIT_KEY (hex); --cipher sm4 for logs sealed with SM4.`,
    run: async (args) => (await import('./audit.js')).runAudit(args),
  },
  shadow: {
    synopsis: shadowUsage,
    about: `  shadow report prints the shadow report an engine writes with
         createEngine({ rollout: 'shadow' | { enforce: share }, shadowReport: { file } }):
         what enforce would have done with the decisions it did not act on, by reason
         and namespace, with the latest samples (keys as digests); --json prints the
         file as it is. Exit 1 when the file is missing or not a report.`,
    run: async (args) => (await import('./shadow.js')).runShadow(args),
  },
  store: {
    synopsis: storeUsage,
    about: `  store  the Redis store's identity record under a prefix (default idem:). show
         prints it. ack-reset acknowledges a reset: after Redis lost its data (a
         restart without persistence, a flush) every engine on the prefix fails
         closed with STORE_RESET, since every key settled before the loss would
         run again; ack-reset accepts that, and the running engines resume. Exit 0
         when acknowledged or when there is no reset, 1 when there is no record.`,
    run: async (args) => (await import('./store-admin.js')).runStoreAdmin(args),
  },
  'consume-owned': {
    // One member process of `idem demo --redis URL --mode owned`, forked by it with an IPC channel.
    synopsis: 'idem consume-owned --redis URL --stream NAME --prefix P --effects KEY --member NAME [--partitions N] [--shards N] [--lease-ms N] [--expected-keys N]',
    run: async (args) => (await import('./consume-owned.js')).runConsumeOwned(args),
  },
  consume: {
    // One consumer process of `idem demo --redis`, forked by it with an IPC channel.
    synopsis: 'idem consume --redis URL --queue NAME --prefix P --effects KEY [--shards N] [--threads N] [--concurrency N] [--expected-keys N]',
    run: async (args) => (await import('./consume.js')).runConsume(args),
  },
}

const shown = Object.values(commands).filter((command) => command.about !== undefined)
const usage = `usage:
${shown.map((command) => `  ${command.synopsis}`).join('\n')}
  idem --version | idem --help | idem <command> --help

${shown.map((command) => command.about).join('\n')}`

function helpOf(command: Command): string {
  return `usage: ${command.synopsis}${command.about === undefined ? '' : `\n\n${command.about}`}`
}

/** The version in idem's own package.json (a package may import its own exports by name). */
function packageVersion(): string {
  return (createRequire(import.meta.url)('idem/package.json') as { version: string }).version
}

function isParseArgsError(error: unknown): error is TypeError {
  return error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS')
}

/** A flag's text as a number when it reads as one, so that a problem line shows 0 for "0" and "two" for "two". */
function flagValue(value: string | boolean | undefined): unknown {
  if (typeof value !== 'string' || value.trim() === '') return value
  const number = Number(value)
  return Number.isNaN(number) ? value : number
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === '--version') {
    console.log(packageVersion())
    return 0
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    console.log(usage)
    return 0
  }
  const command = name !== undefined && Object.hasOwn(commands, name) ? commands[name] : undefined
  if (command === undefined) {
    console.error(`idem: ${name === undefined ? 'no command given' : `unknown command ${JSON.stringify(name)}`}\n\n${usage}`)
    return 2
  }
  // Asked anywhere on the line, as git does: the usage wins over running.
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(helpOf(command))
    return 0
  }
  try {
    return await command.run(rest)
  } catch (error) {
    if (!isParseArgsError(error)) throw error
    console.error(`idem ${name}: ${error.message}\n\n${helpOf(command)}`)
    return 2
  }
}

async function demo(args: string[]): Promise<number> {
  if (args[0] === 'http') return httpDemo(args.slice(1))
  const { values } = parseArgs({
    args,
    options: {
      messages: { type: 'string' },
      'dup-rate': { type: 'string', default: '0.3' },
      shards: { type: 'string', default: '8' },
      threads: { type: 'string' },
      seed: { type: 'string', default: '42' },
      json: { type: 'boolean', default: false },
      redis: { type: 'string' },
      consumers: { type: 'string' },
      concurrency: { type: 'string' },
      store: { type: 'string' },
      mode: { type: 'string' },
      'kill-every': { type: 'string' },
      versions: { type: 'boolean', default: false },
      'metrics-port': { type: 'string' },
    },
    strict: true,
  })
  if (values.versions) return demoVersions(values)
  const viaRedis = values.redis !== undefined
  const owned = values.mode === 'owned'
  values.messages ??= viaRedis ? '100000' : '1000000'
  // Owned mode keeps its partitions in actors on the main thread.
  values.threads ??= viaRedis || owned ? '0' : String(defaultDemoThreads())
  const flags = new OptionReader(Object.fromEntries(Object.entries(values).map(([name, value]) => [`--${name}`, flagValue(value)])))
  const problems = flags.problems
  for (const flag of ['--consumers', '--concurrency']) {
    if (!viaRedis && flags.has(flag)) flags.mustBe(flag, 'left out without --redis (the in-memory demo has no consumer processes)')
  }
  const messages = flags.integer('--messages', undefined, 1, 100_000_000)
  const shards = flags.integer('--shards', undefined, 1, 1024)
  const threads = flags.integer('--threads', undefined, 0, 64)
  const seed = flags.integer('--seed', undefined, 0, 2 ** 32 - 1)
  const dupRate = flags.number('--dup-rate', undefined, { from: 0, below: 1 })
  const consumers = flags.integer('--consumers', 2, 1, 64)
  const concurrency = flags.integer('--concurrency', consumerDefaults.concurrency, 1, 65_536)
  if (viaRedis) flags.string('--redis', undefined, 'a redis:// or rediss:// URL', (url) => /^rediss?:\/\//.test(url))
  const mode = flags.oneOf('--mode', ['strict', 'owned'], 'strict')
  if (owned && threads > 0) flags.mustBe('--threads', '0 with --mode owned (its partitions live on the main thread)')
  const store = values.store === undefined ? undefined : parseStoreFlag(values.store)
  if (typeof store === 'string') problems.push(`--store: ${store}`)
  else if (store !== undefined && store.kind !== 'memory' && store.kind !== 'sqlite') problems.push('--store: the embedded demo runs on memory or sqlite:PATH')
  else if (store !== undefined && viaRedis) problems.push('--store: not with --redis (that demo runs on the Redis store)')
  else if (store?.kind === 'sqlite' && owned) problems.push('--store: memory with --mode owned (a SQL store cannot hold partition leases yet)')
  const killEvery = flags.integer('--kill-every', 0, 1, 3600)
  if (flags.has('--kill-every') && !(owned && viaRedis)) flags.mustBe('--kill-every', 'given with --redis URL --mode owned only (the member processes it kills)')
  if (owned && viaRedis && flags.has('--concurrency')) flags.mustBe('--concurrency', 'left out with --mode owned (members read 512 entries a call, 4 calls in flight)')
  const metricsPort = flags.has('--metrics-port') ? flags.integer('--metrics-port', undefined, 0, 65_535) : undefined
  if (metricsPort !== undefined && viaRedis) flags.mustBe('--metrics-port', 'left out with --redis (it serves the embedded demo\'s engine)')
  if (problems.length > 0) {
    console.error(`idem demo: ${problems.join('\n           ')}`)
    return 2
  }
  const options = { messages, dupRate, shards, threads, seed, json: values.json }
  let summary
  if (viaRedis) {
    const { runBullDemo } = await import('./demo-bullmq.js')
    const { DemoInterrupted } = await import('./demo-processes.js')
    try {
      summary = owned
        ? await (await import('./demo-owned.js')).runOwnedDemo({ ...options, redis: values.redis!, consumers, killEverySeconds: killEvery })
        : await runBullDemo({ ...options, redis: values.redis!, consumers, concurrency })
    } catch (error) {
      if (!(error instanceof DemoInterrupted)) throw error
      console.error(`idem demo: ${error.message}`)
      return 128 + constants.signals[error.signal]
    }
  } else summary = await runDemo({ ...options, mode, ...(typeof store === 'object' ? { store } : {}), ...(metricsPort === undefined ? {} : { metricsPort }) })
  console.log(values.json ? JSON.stringify(summary) : formatDemoSummary(summary))
  // Killed members may have run what they had not yet committed: doubles up to what they held are the stated window.
  const doublesAllowed = summary.ownership?.heldAtKills ?? 0
  const ok = summary.lost === 0 && summary.doubleEffects <= doublesAllowed
  if (!ok) console.error(`idem demo: FAILED: ${summary.effects} effects for ${summary.uniqueKeys} unique keys (lost ${summary.lost}, double ${summary.doubleEffects}${doublesAllowed > 0 ? `, at most ${doublesAllowed} allowed by the kills` : ''})`)
  return ok ? 0 : 1
}

/** `idem demo --versions`: the flags it takes are checked here; the others are refused by name. */
async function demoVersions(values: Record<string, string | boolean | undefined>): Promise<number> {
  values.messages ??= '500000'
  const flags = new OptionReader(Object.fromEntries(Object.entries(values).map(([name, value]) => [`--${name}`, flagValue(value)])))
  for (const flag of ['--shards', '--threads', '--consumers', '--concurrency', '--store', '--mode', '--kill-every', '--metrics-port']) {
    if (flags.has(flag) && !(flag === '--shards' && values.shards === '8')) flags.mustBe(flag, 'left out with --versions (version-aware keys run on the main thread, memory or --redis store)')
  }
  const messages = flags.integer('--messages', undefined, 1, 100_000_000)
  const seed = flags.integer('--seed', undefined, 0, 2 ** 32 - 1)
  const dupRate = flags.number('--dup-rate', undefined, { from: 0, below: 1 })
  const redis = values.redis === undefined ? undefined : flags.string('--redis', undefined, 'a redis:// or rediss:// URL', (url) => /^rediss?:\/\//.test(url))
  if (flags.problems.length > 0) {
    console.error(`idem demo: ${flags.problems.join('\n           ')}`)
    return 2
  }
  const { formatVersionsDemoSummary, runVersionsDemo, versionsDemoOk } = await import('./demo-versions.js')
  const summary = await runVersionsDemo({ messages, dupRate, seed, json: values.json === true, ...(redis === undefined ? {} : { redis }) })
  console.log(values.json === true ? JSON.stringify(summary) : formatVersionsDemoSummary(summary))
  const ok = versionsDemoOk(summary)
  if (!ok) console.error(`idem demo: FAILED: ${summary.atNewest} of ${summary.parcels} parcels at their newest status, ${summary.wentBack} went back, ${summary.ranTwice} versions ran twice`)
  return ok ? 0 : 1
}

async function httpDemo(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { keys: { type: 'string' }, burst: { type: 'string' }, concurrency: { type: 'string' }, json: { type: 'boolean', default: false } },
    strict: true,
  })
  const flags = new OptionReader(Object.fromEntries(Object.entries(values).map(([name, value]) => [`--${name}`, flagValue(value)])))
  const keys = flags.integer('--keys', 1000, 1, 10_000_000)
  const burst = flags.integer('--burst', 4, 1, 1000)
  const concurrency = flags.integer('--concurrency', 16, 1, 1000)
  if (flags.problems.length > 0) {
    console.error(`idem demo http: ${flags.problems.join('\n                ')}`)
    return 2
  }
  const { formatHttpDemoSummary, httpDemoPassed, runHttpDemo } = await import('./demo-http.js')
  const summary = await runHttpDemo({ keys, burst, concurrency, json: values.json })
  console.log(values.json ? JSON.stringify(summary) : formatHttpDemoSummary(summary))
  const ok = httpDemoPassed(summary)
  if (!ok) console.error(`idem demo http: FAILED: lost ${summary.lost}, double ${summary.doubleExecutions}, unexpected ${summary.unexpected}, 422 ${summary.conflicts422} of ${summary.payloadChanges} changes`)
  return ok ? 0 : 1
}

let finished = false
// A promise that can never settle lets Node exit with code 0 and no output; say so and fail instead.
process.on('exit', () => {
  if (finished) return
  console.error('idem: stopped with work still pending (nothing left to wake it): this is a bug in idem, please report it')
  process.exitCode = 70
})

main(process.argv.slice(2)).then(
  (code) => {
    finished = true
    process.exitCode = code
  },
  (error: unknown) => {
    if (error instanceof IdemError) console.error(`idem: ${error.code}: ${error.message}`)
    else console.error(error)
    finished = true
    process.exitCode = 2
  },
)
