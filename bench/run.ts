/**
 * `idem bench`: runs the benchmark suites and prints one table set (or, with
 * --json, one JSON object) on stdout; progress goes to stderr as each case runs.
 *
 *   idem bench [--json] [--quick] [--only bloom,lru,engine]
 *
 * --quick shrinks every workload (~10×) for a CI smoke run; its figures are
 * not the ones to quote. --only runs some suites (one npm script per area).
 * The exit code is 1 when a correctness check failed (a false negative, an
 * effect count that does not match the unique keys, a suite that crashed),
 * 2 on bad arguments, else 0. Performance targets are printed met or not met
 * and never change the exit code: a slow machine is not a broken build.
 */
import { availableParallelism, cpus } from 'node:os'
import { parseArgs } from 'node:util'
import { runAmqpSuite } from './amqp.bench.js'
import { runBloomSuite } from './bloom.bench.js'
import { runBullmqSuite } from './bullmq.bench.js'
import { runEngineSuite } from './engine.bench.js'
import { runHttpSuite } from './http.bench.js'
import { runLruSuite } from './lru.bench.js'
import { runNatsSuite } from './nats.bench.js'
import { runOwnedSuite } from './owned.bench.js'
import { runPlatformSuite } from './platform.bench.js'
import { runRedisSuite } from './redis.bench.js'
import { runStreamsSuite } from './streams.bench.js'
import { runSqlSuite } from './sql.bench.js'
import { runVersionsSuite } from './versions.bench.js'
import { SUITE_NAMES, benchUsage, type SuiteName } from './suite-names.js'
import { formatTable, gcSource, isUnclean, lastProgressLine, progress, type SuiteOptions, type SuiteResult } from './report.js'

const suites: Record<SuiteName, (options: SuiteOptions) => Promise<SuiteResult>> = {
  bloom: runBloomSuite,
  lru: runLruSuite,
  engine: runEngineSuite,
  redis: runRedisSuite,
  streams: runStreamsSuite,
  sql: runSqlSuite,
  bullmq: runBullmqSuite,
  owned: runOwnedSuite,
  versions: runVersionsSuite,
  http: runHttpSuite,
  amqp: runAmqpSuite,
  nats: runNatsSuite,
  platform: runPlatformSuite,
}

/** Runs the suites; bad flags throw parseArgs' error, which the CLI reports with the usage (exit 2). */
export async function runBench(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      json: { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
    },
    strict: true,
    allowPositionals: false,
  })
  const selected = values.only === undefined ? [...SUITE_NAMES] : values.only.split(',').map((s) => s.trim())
  const unknown = selected.filter((name) => !(name in suites))
  if (unknown.length > 0 || selected.length === 0) {
    console.error(`idem bench: unknown suite ${unknown.map((s) => JSON.stringify(s)).join(', ')}\nusage: ${benchUsage}`)
    return 2
  }

  const quick = values.quick === true
  const meta = {
    node: process.version,
    v8: process.versions.v8,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    quick,
    gc: gcSource(),
    startedAt: new Date().toISOString(),
  }
  progress('bench', `${meta.node}, ${meta.cores} cores (${meta.cpu}), ${quick ? 'quick' : 'full'} run, suites: ${selected.join(', ')}`)
  // A promise nothing will ever settle (an engine hang with no thread left
  // alive) lets node exit quietly with code 0 in the middle of a suite; say so.
  let finished = false
  const onBeforeExit = (): void => {
    if (finished) return
    console.error(`idem bench: FAILED: the event loop went empty while this was running: ${lastProgressLine()}\n  a promise was left that nothing can settle (an engine hang?); no report was printed`)
    process.exitCode = 1
  }
  process.once('beforeExit', onBeforeExit)
  const started = performance.now()
  const results: SuiteResult[] = []
  for (const name of selected) {
    const suiteStarted = performance.now()
    try {
      results.push(await suites[name as SuiteName]({ quick }))
    } catch (error) {
      // One broken suite must not hide the others' figures; it fails the run instead.
      console.error(`[${name}] CRASHED:`, error)
      results.push({
        suite: name,
        tables: [],
        targets: [],
        checks: [{ name: `${name} suite ran to the end`, ok: false, detail: error instanceof Error ? error.message : String(error) }],
      })
    }
    progress(name, `done in ${((performance.now() - suiteStarted) / 1000).toFixed(1)} s`)
  }
  const seconds = (performance.now() - started) / 1000
  progress('bench', `finished in ${seconds.toFixed(1)} s`)

  const checks = results.flatMap((r) => r.checks)
  const targets = results.flatMap((r) => r.targets)
  const failed = checks.filter((c) => !c.ok)
  if (values.json === true) {
    console.log(JSON.stringify({ meta: { ...meta, seconds }, suites: results, targets, checksPassed: failed.length === 0 }, null, 2))
  } else {
    console.log(formatReport(results, seconds, meta))
  }
  for (const check of failed) console.error(`idem bench: CHECK FAILED: ${check.name}: ${check.detail}`)
  finished = true
  process.off('beforeExit', onBeforeExit)
  if (isUnclean()) {
    // An engine that would not close keeps its worker threads, and node alive: leave anyway, shortly.
    console.error('idem bench: an engine did not close; exiting without waiting for its threads')
    setTimeout(() => process.exit(process.exitCode ?? 1), 1_000).unref()
  }
  return failed.length === 0 ? 0 : 1
}

function formatReport(results: SuiteResult[], seconds: number, meta: { node: string; cores: number; cpu: string; quick: boolean }): string {
  const out: string[] = [`idem bench — ${meta.node}, ${meta.cores} cores (${meta.cpu})${meta.quick ? ', QUICK run (small sizes, smoke test only)' : ''}`, '']
  for (const result of results) {
    for (const table of result.tables) out.push(formatTable(table), '')
  }
  const targets = results.flatMap((r) => r.targets)
  if (targets.length > 0) {
    const width = Math.max(...targets.map((t) => t.name.length))
    out.push('targets (from the issue)')
    for (const t of targets) out.push(`  ${t.met ? 'met    ' : 'NOT MET'}  ${t.name.padEnd(width)}  goal ${t.goal}; measured ${t.measured}`)
    out.push('')
  }
  const checks = results.flatMap((r) => r.checks)
  out.push('checks')
  for (const c of checks) out.push(`  ${c.ok ? 'ok    ' : 'FAILED'}  ${c.name}: ${c.detail}`)
  out.push('', `ran in ${seconds.toFixed(1)} s`)
  return out.join('\n')
}
