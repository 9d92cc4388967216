/**
 * SQL suite: each SQL store's claim+commit throughput, batched as idem does
 * it, against the loop a developer writes first: per message, one
 * `INSERT … ON CONFLICT DO NOTHING` (MySQL: `INSERT IGNORE`) as the claim and,
 * when it inserted, one `UPDATE` to done as the commit.
 *
 * Same server, same table definition (the naive loop writes into a table idem
 * created, so the comparison measures batching, not schema), same stream: 30%
 * duplicates, half resends of a recent key, half late copies of an old one.
 * Servers: PostgreSQL (IDEM_BENCH_POSTGRES, default postgres://postgres@127.0.0.1:5432/test),
 * MariaDB (IDEM_BENCH_MYSQL, default mysql://root@127.0.0.1:3306/test), and a
 * SQLite file in the temp folder (WAL, synchronous FULL: the store's default,
 * for both sides). Every table is made under a fresh prefix and dropped after.
 *
 * Rows per store (medians of 3 runs, msgs/s over the whole stream):
 *   1. naive loop, one connection — the baseline of the ratio column and of the target;
 *   2. naive loop, 8 connections at once (the engine's parallelism: one per shard), servers only;
 *   3. idem store claim+commit: 8 stores (one per shard, keys split by hash),
 *      each a claim call and a commit call per batch of 1024;
 *   4. idem engine processBatch end to end (8 shards, threads 0, trivial handler;
 *      its LRU answers some duplicates with no I/O, so it may beat row 3).
 * Each row checks that exactly one DONE row (or one effect) exists per unique key.
 */
import { randomUUID } from 'node:crypto'
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createEngine } from '../src/engine.js'
import type { Message, Outcome } from '../src/message.js'
import { dropSqlTables, migrateSqlStore, resolveSqlStoreOptions } from '../src/store/sql/sql-admin.js'
import { createSqlStore } from '../src/store/sql/sql-backends.js'
import type { SqlStoreOptions } from '../src/store/sql/sql-options.js'
import { ClaimCode } from '../src/store/store.js'
import { median, progress, withRatios, type BenchTable, type Check, type SuiteOptions, type SuiteResult, type Target } from './report.js'
import { dupStream, type DupStream as Stream } from './dup-stream.js'

const SUITE = 'sql'
const PG_URL = process.env.IDEM_BENCH_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/test'
const MYSQL_URL = process.env.IDEM_BENCH_MYSQL ?? 'mysql://root@127.0.0.1:3306/test'
const RUNS = 3
const SHARDS = 8
const BATCH = 1024
const DUP_RATE = 0.3
const NAIVE_CONNECTIONS = 8

type Kind = 'postgres' | 'mysql' | 'sqlite'
const kinds: Kind[] = ['postgres', 'mysql', 'sqlite']
const labels: Record<Kind, string> = { postgres: 'postgres (pg)', mysql: 'mysql (mysql2 on MariaDB)', sqlite: 'sqlite (better-sqlite3)' }

export async function runSqlSuite(options: SuiteOptions): Promise<SuiteResult> {
  const messages = options.quick ? 10_000 : 40_000
  const sqliteFile = join(tmpdir(), `idem-bench-${randomUUID()}.db`)
  const tables: BenchTable[] = []
  const checks: Check[] = []
  const targets: Target[] = []
  const base = (kind: Kind): SqlStoreOptions => (kind === 'postgres' ? { kind, url: PG_URL } : kind === 'mysql' ? { kind, url: MYSQL_URL } : { kind, path: sqliteFile })
  const made: SqlStoreOptions[] = []
  const fresh = (kind: Kind): SqlStoreOptions => {
    const options = { ...base(kind), tablePrefix: `bench_${randomUUID().replaceAll('-', '').slice(0, 8)}_`, sweepIntervalMs: 0 } as SqlStoreOptions
    made.push(options)
    return options
  }
  try {
    for (const kind of kinds) {
      try {
        await migrateSqlStore(fresh(kind))
      } catch (error) {
        checks.push({ name: `${kind}: server answers`, ok: false, detail: `skipped ${kind}: ${(error as Error).message}` })
        continue
      }
      const rates = { naive: [] as number[], naiveMany: [] as number[], store: [] as number[], engine: [] as number[] }
      for (let run = 0; run < RUNS; run++) {
        const stream = dupStream(messages, run + 1, DUP_RATE)
        const step = (what: string) => progress(SUITE, `${kind} run ${run + 1}/${RUNS}: ${what}, ${messages.toLocaleString('en-US')} messages`)
        step('naive loop, 1 connection')
        const naive = await naiveLoop(kind, fresh(kind), stream, 1)
        rates.naive.push(naive.rate)
        checks.push(doneCheck(`${kind} naive loop run ${run + 1}`, naive.done, stream.unique))
        if (kind !== 'sqlite') {
          step(`naive loop, ${NAIVE_CONNECTIONS} connections`)
          const many = await naiveLoop(kind, fresh(kind), stream, NAIVE_CONNECTIONS)
          rates.naiveMany.push(many.rate)
          checks.push(doneCheck(`${kind} naive loop ×${NAIVE_CONNECTIONS} run ${run + 1}`, many.done, stream.unique))
        }
        step(`idem store claim+commit, ${SHARDS} stores × batches of ${BATCH}`)
        const store = await storeClaimCommit(fresh(kind), stream)
        rates.store.push(store.rate)
        checks.push(doneCheck(`${kind} idem store run ${run + 1}`, store.done, stream.unique))
        step('idem engine processBatch')
        const engine = await engineRun(fresh(kind), stream)
        rates.engine.push(engine.rate)
        checks.push(doneCheck(`${kind} idem engine run ${run + 1} (effects)`, engine.done, stream.unique))
        for (const options of made.splice(0)) await dropSqlTables(options)
      }
      const naiveLabel = `naive INSERT ${kind === 'mysql' ? 'IGNORE' : '… ON CONFLICT DO NOTHING'} + UPDATE loop, 1 connection`
      const rows = [
        { label: naiveLabel, values: { runs: rates.naive.map(short).join(' / '), rate: median(rates.naive) } },
        ...(kind === 'sqlite'
          ? []
          : [{ label: `naive loop, ${NAIVE_CONNECTIONS} connections at once`, values: { runs: rates.naiveMany.map(short).join(' / '), rate: median(rates.naiveMany) } }]),
        { label: `idem ${kind} store claim+commit, ${SHARDS} stores × batches of ${BATCH}`, values: { runs: rates.store.map(short).join(' / '), rate: median(rates.store) } },
        { label: `idem engine processBatch (${SHARDS} shards, threads 0)`, values: { runs: rates.engine.map(short).join(' / '), rate: median(rates.engine) } },
      ]
      tables.push(
        withRatios({
          title: `${labels[kind]}: claim+commit of ${messages.toLocaleString('en-US')} messages, ${Math.round(DUP_RATE * 100)}% duplicates: msgs/s`,
          baseline: naiveLabel,
          ratioOf: 'rate',
          columns: [
            { key: 'runs', title: 'msgs/s of 3 runs' },
            { key: 'rate', title: 'msgs/s (median)' },
          ],
          rows,
          notes: [
            kind === 'sqlite'
              ? 'one process, WAL, synchronous FULL on both sides: the naive loop commits twice per new message, idem twice per batch'
              : `the ${kind === 'postgres' ? 'PostgreSQL' : 'MariaDB'} server and the client share the 2 cores; every claim and DONE is on the server's clock on both sides`,
            'same table definition on both sides (idem creates it; the naive loop writes into it); each row checks one DONE row per unique key',
          ],
        }),
      )
      const ratio = median(rates.store) / median(rates.naive)
      targets.push({
        name: `${kind} store claim+commit (batched) vs naive per-message loop`,
        goal: '>= 5x',
        measured: `${ratio.toFixed(1)}x (${short(median(rates.store))} vs ${short(median(rates.naive))} msgs/s)${kind === 'sqlite' ? '' : `; ${(median(rates.store) / median(rates.naiveMany)).toFixed(1)}x vs the naive loop on ${NAIVE_CONNECTIONS} connections`}`,
        met: ratio >= 5,
      })
    }
  } finally {
    for (const options of made) await dropSqlTables(options).catch(() => {})
    for (const suffix of ['', '-wal', '-shm']) rmSync(sqliteFile + suffix, { force: true })
  }
  return { suite: SUITE, tables, checks, targets }
}


/** Keys split over n workers by a stable hash, each keeping stream order: one key is always handled by one worker. */
function split(keys: readonly string[], n: number): string[][] {
  const parts: string[][] = Array.from({ length: n }, () => [])
  for (const key of keys) {
    let h = 0x811c9dc5
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
    parts[(h >>> 0) % n].push(key)
  }
  return parts
}

interface Run {
  rate: number
  /** DONE rows (or effects) at the end: must equal the unique keys. */
  done: number
}

/**
 * The first thing one writes: per message a claim INSERT that does nothing on
 * a conflict and, when it inserted, an UPDATE to done. Prepared statements,
 * autocommit, the database's clock, the same table idem uses.
 */
async function naiveLoop(kind: Kind, options: SqlStoreOptions, stream: Stream, connections: number): Promise<Run> {
  await migrateSqlStore(options)
  const table = `${options.tablePrefix}records`
  const parts = split(stream.keys, connections)
  let started = 0
  if (kind === 'postgres') {
    const { default: pg } = await import('pg')
    const clients = await Promise.all(parts.map(async () => {
      const client = new pg.Client({ connectionString: PG_URL })
      await client.connect()
      return client
    }))
    const claim = `INSERT INTO "${table}" (idem_key, state, token, expires_at) VALUES ($1, 1, $2, now() + interval '30 seconds') ON CONFLICT (idem_key) DO NOTHING`
    const commit = `UPDATE "${table}" SET state = 3, expires_at = now() + interval '1 day' WHERE idem_key = $1 AND token = $2 AND state = 1`
    started = performance.now()
    await Promise.all(
      parts.map(async (keys, c) => {
        const client = clients[c]
        for (let i = 0; i < keys.length; i++) {
          const key = Buffer.from(keys[i])
          const token = `naive.${c}.${i}`
          if ((await client.query({ name: 'claim', text: claim, values: [key, token] })).rowCount === 1) await client.query({ name: 'commit', text: commit, values: [key, token] })
        }
      }),
    )
    const rate = stream.keys.length / ((performance.now() - started) / 1000)
    const done = Number((await clients[0].query(`SELECT count(*) AS c FROM "${table}" WHERE state = 3`)).rows[0].c)
    await Promise.all(clients.map((client) => client.end()))
    return { rate, done }
  }
  if (kind === 'mysql') {
    const { default: mysql } = await import('mysql2/promise')
    const connections_ = await Promise.all(parts.map(() => mysql.createConnection({ uri: MYSQL_URL })))
    const claim = `INSERT IGNORE INTO \`${table}\` (idem_key, state, token, expires_at) VALUES (?, 1, ?, TIMESTAMPADD(SECOND, 30, UTC_TIMESTAMP(3)))`
    const commit = `UPDATE \`${table}\` SET state = 3, expires_at = TIMESTAMPADD(DAY, 1, UTC_TIMESTAMP(3)) WHERE idem_key = ? AND token = ? AND state = 1`
    started = performance.now()
    await Promise.all(
      parts.map(async (keys, c) => {
        const connection = connections_[c]
        for (let i = 0; i < keys.length; i++) {
          const key = Buffer.from(keys[i])
          const token = `naive.${c}.${i}`
          const [header] = await connection.execute(claim, [key, token])
          if ((header as { affectedRows: number }).affectedRows === 1) await connection.execute(commit, [key, token])
        }
      }),
    )
    const rate = stream.keys.length / ((performance.now() - started) / 1000)
    const [rows] = await connections_[0].query(`SELECT count(*) AS c FROM \`${table}\` WHERE state = 3`)
    await Promise.all(connections_.map((connection) => connection.end()))
    return { rate, done: Number((rows as { c: number }[])[0].c) }
  }
  const { default: Database } = await import('better-sqlite3')
  const db = new Database((options as { path: string }).path, { timeout: 5_000 })
  db.pragma('journal_mode = WAL')
  db.pragma('synchronous = FULL')
  const claim = db.prepare(`INSERT INTO "${table}" (idem_key, state, token, expires_at) VALUES (?, 1, ?, ?) ON CONFLICT (idem_key) DO NOTHING`)
  const commit = db.prepare(`UPDATE "${table}" SET state = 3, expires_at = ? WHERE idem_key = ? AND token = ? AND state = 1`)
  started = performance.now()
  const keys = parts[0]
  for (let i = 0; i < keys.length; i++) {
    const key = Buffer.from(keys[i])
    const token = `naive.${i}`
    const now = Date.now()
    if (claim.run(key, token, now + 30_000).changes === 1) commit.run(now + 86_400_000, key, token)
  }
  const rate = stream.keys.length / ((performance.now() - started) / 1000)
  const done = Number((db.prepare(`SELECT count(*) AS c FROM "${table}" WHERE state = 3`).get() as { c: number }).c)
  db.close()
  return { rate, done }
}

/** 8 stores, one per shard as the engine has them, each a claim and a commit call per batch of its keys. */
async function storeClaimCommit(options: SqlStoreOptions, stream: Stream): Promise<Run> {
  const config = resolveSqlStoreOptions(options)
  const parts = split(stream.keys, SHARDS)
  const stores = parts.map(() => createSqlStore(config))
  await Promise.all(stores.map((store) => store.open()))
  let claimedTotal = 0
  const started = performance.now()
  await Promise.all(
    parts.map(async (keys, shard) => {
      const store = stores[shard]
      for (let from = 0, b = 0; from < keys.length; from += BATCH, b++) {
        const batch = keys.slice(from, from + BATCH)
        const token = `bench.${shard}.${b}`
        const { codes } = await store.claim(batch, batch.map(() => undefined), token, 30_000, 86_400_000)
        const claimed = batch.filter((_, i) => codes[i] === ClaimCode.CLAIMED)
        claimedTotal += claimed.length
        if (claimed.length > 0) await store.commit(claimed, undefined, token, 86_400_000)
      }
    }),
  )
  const rate = stream.keys.length / ((performance.now() - started) / 1000)
  await Promise.all(stores.map((store) => store.close()))
  return { rate, done: claimedTotal }
}

/** The engine end to end: processBatch calls of 1024, four in flight, like a queue consumer. */
async function engineRun(options: SqlStoreOptions, stream: Stream): Promise<Run> {
  const engine = await createEngine({ shards: SHARDS, threads: 0, store: options, bloom: { expectedItems: stream.unique * 2 } })
  // One message first, so the timed part does not include creating the tables.
  await engine.process({ key: 'bench-warm-up' }, () => undefined)
  const seen = new Set<string>()
  let effects = 0
  const handler = (m: Message) => {
    effects++
    seen.add(m.key)
  }
  const started = performance.now()
  let pending: Message[] = stream.keys.map((key) => ({ key }))
  while (pending.length > 0) {
    const retry: Message[] = []
    const inFlight: Promise<void>[] = []
    for (let i = 0; i < pending.length; i += BATCH) {
      const batch = pending.slice(i, i + BATCH)
      inFlight.push(engine.processBatch(batch, handler).then((outs: Outcome[]) => outs.forEach((o, j) => o.verdict === 'in-flight' && retry.push(batch[j]))))
      if (inFlight.length === 4) await inFlight.shift()
    }
    await Promise.all(inFlight)
    pending = retry
  }
  const rate = stream.keys.length / ((performance.now() - started) / 1000)
  await engine.close()
  return { rate, done: effects === seen.size ? effects : -effects }
}

function doneCheck(name: string, done: number, unique: number): Check {
  return { name: `${name}: one DONE per unique key`, ok: done === unique, detail: done < 0 ? `some key ran twice (${-done} runs for ${unique} keys)` : `${done} for ${unique} unique keys` }
}

function short(rate: number): string {
  return rate >= 1e6 ? `${(rate / 1e6).toFixed(2)}M` : rate >= 1e4 ? `${Math.round(rate / 1000)}k` : `${(rate / 1000).toFixed(1)}k`
}
