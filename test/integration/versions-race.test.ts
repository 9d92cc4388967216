/**
 * Two processes race on version-aware keys (README "Versions and state
 * machines"): 10,000 keys each get versions 1..5, shuffled and partly
 * repeated, in both processes at once, on one Redis store, then on one
 * PostgreSQL store (the run log is a Redis list either way). Afterwards every key's
 * applied version is 5, and the handler ran each key's versions in strictly
 * increasing order: never an older one after a newer one, never one twice.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { resolveRedisStore } from '../../dist/src/store/redis/redis-options.js'
import { RedisVersionStore } from '../../dist/src/versions/redis-versions.js'
import { SqlVersionStore } from '../../dist/src/versions/sql-versions.js'
import { resolveSqlStoreOptions } from '../../dist/src/store/sql/sql-admin.js'
import { ManualClock } from '../../dist/src/clock.js'
import pg from 'pg'
import { PG_URL } from '../support/sql.js'
import { encodeVersion } from '../../dist/src/versions/version-order.js'
import { FAULT_TEST_TIMEOUT_MS, untilDone } from '../support/progress.js'
import { deletePrefix } from '../support/redis-prefix.js'

const REDIS_URL = 'redis://127.0.0.1:6379'
const KEYS = 10_000
const VERSIONS = 5
const fixture = fileURLToPath(new URL('../support/fixtures/versions-race-child.mjs', import.meta.url))
const prefix = `test:versions-race:${randomUUID().slice(0, 8)}:`
const pgTablePrefix = `race_${randomUUID().slice(0, 8)}_`
const redis = new Redis(REDIS_URL)
const children = new Set<ChildProcess>()
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL')
  const postgres = new pg.Client({ connectionString: PG_URL })
  await postgres.connect()
  await postgres.query(`DROP TABLE IF EXISTS "${pgTablePrefix}versions"`)
  await postgres.end()
  await deletePrefix(REDIS_URL, prefix)
  redis.disconnect()
})

interface ChildReport {
  verdicts: Record<string, number>
  exitCode: number | null
}

type StoreKind = 'redis' | 'postgres'
const storeOf = (kind: StoreKind) => (kind === 'redis' ? { kind, url: REDIS_URL, prefix } : { kind, url: PG_URL, tablePrefix: pgTablePrefix })

function race(kind: StoreKind, seed: number, progress: { taken: number }): Promise<ChildReport> {
  return new Promise((resolve, reject) => {
    const args = [REDIS_URL, prefix, `${prefix}${kind}:log`, String(KEYS), String(VERSIONS), String(seed), JSON.stringify(storeOf(kind))]
    const child = fork(fixture, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    children.add(child)
    let verdicts: Record<string, number> = {}
    child.on('message', (message: { progress?: number; verdicts?: Record<string, number> }) => {
      if (message.progress !== undefined) progress.taken += 1
      if (message.verdicts !== undefined) verdicts = message.verdicts
    })
    child.on('error', reject)
    child.on('exit', (exitCode) => {
      children.delete(child)
      resolve({ verdicts, exitCode })
    })
  })
}

describe.each<StoreKind>(['redis', 'postgres'])('version-aware keys: two processes racing on one %s store', (kind) => {
  it(`${KEYS.toLocaleString('en-US')} keys × versions 1..${VERSIONS}, shuffled and repeated: every key ends at version ${VERSIONS}, runs strictly increasing per key`, async () => {
    const progress = { taken: 0 }
    const reports: ChildReport[] = []
    const runs = Promise.all([race(kind, 1, progress), race(kind, 2, progress)]).then((done) => reports.push(...done))
    await untilDone({ what: 'both racing processes to finish', done: () => reports.length === 2, progress: () => progress.taken })
    await runs
    expect(reports.map((r) => r.exitCode)).toEqual([0, 0])

    const log = await redis.lrange(`${prefix}${kind}:log`, 0, -1)
    const lastRun = new Map<string, number>()
    let backwards = 0
    let twice = 0
    for (const line of log) {
      const [key, version] = line.split(' ')
      const v = Number(version)
      const last = lastRun.get(key) ?? 0
      if (v < last) backwards++
      if (v === last) twice++
      lastRun.set(key, Math.max(last, v))
    }
    const store =
      kind === 'redis'
        ? new RedisVersionStore(resolveRedisStore({ kind: 'redis', url: REDIS_URL, prefix }, 0, []))
        : new SqlVersionStore(resolveSqlStoreOptions({ kind: 'postgres', url: PG_URL, tablePrefix: pgTablePrefix }), new ManualClock())
    const keys = Array.from({ length: KEYS }, (_, k) => `parcel-${k}`)
    const views = await store.inspect(keys)
    await store.close()
    const five = (encodeVersion(VERSIONS) as { text: string }).text
    const notFive = views.filter((view) => view?.applied !== five).length
    const total = (name: string) => reports.reduce((sum, r) => sum + (r.verdicts[name] ?? 0), 0)
    console.log(
      `versions race (${kind}): ${log.length} runs, ${total('new')} new, ${total('stale')} stale, ${total('duplicate')} duplicate, ${total('in-flight:IN_FLIGHT')} in-flight (delivered again); ` +
        `older after newer ${backwards}, same version twice ${twice}, keys not at version ${VERSIONS}: ${notFive}`,
    )
    expect(backwards).toBe(0)
    expect(twice).toBe(0)
    expect(notFive).toBe(0)
    expect(lastRun.size).toBe(KEYS)
    // Every run is a `new` outcome, and nothing else failed.
    expect(log.length).toBe(total('new'))
    const names = new Set(reports.flatMap((r) => Object.keys(r.verdicts)))
    expect([...names].filter((name) => !['new', 'stale', 'duplicate', 'in-flight:IN_FLIGHT'].includes(name))).toEqual([])
  }, FAULT_TEST_TIMEOUT_MS)
})
