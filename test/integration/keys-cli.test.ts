/**
 * `idem keys inspect|forget|purge` run as an operator runs them, on records an
 * engine's store wrote: Redis (a random prefix of its own), PostgreSQL,
 * MariaDB and SQLite (tables of their own); every bad command line and an unreachable
 * store get their exit code and reason.
 */
import { randomUUID } from 'node:crypto'
import { rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { RedisStore } from '../../dist/src/store/redis/redis-store.js'
import { resolveRedisStore } from '../../dist/src/store/redis/redis-options.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { dropSqlTables, resolveSqlStoreOptions } from '../../dist/src/store/sql/sql-admin.js'
import { createSqlStore } from '../../dist/src/store/sql/sql-backends.js'
import type { SqlStoreOptions } from '../../dist/src/store/sql/sql-options.js'
import type { DedupStore } from '../../dist/src/store/store.js'
import { MYSQL_URL, PG_URL } from '../support/sql.js'
import { idem } from '../support/idem-cli.js'

const REDIS_URL = 'redis://127.0.0.1:6379'
const prefix = `test:keys-cli:${randomUUID()}:`
const tablePrefix = `t_${randomUUID().replaceAll('-', '').slice(0, 10)}_`
const file = join(tmpdir(), `idem-keys-cli-${randomUUID()}.db`)
const opened: DedupStore[] = []
afterAll(async () => {
  await Promise.all(opened.map((store) => store.close()))
  const redis = new Redis(REDIS_URL)
  await deleteKeysUnder(redis, prefix)
  redis.disconnect()
  await dropSqlTables({ kind: 'postgres', url: PG_URL, tablePrefix })
  await dropSqlTables({ kind: 'mysql', url: MYSQL_URL, tablePrefix })
  for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true })
})

const LEASE_MS = 60_000
const TTL_MS = 600_000

/** In namespace "a": done (with fingerprint and result) and running; in "b" and without a namespace: done. */
async function seed(store: DedupStore): Promise<void> {
  await store.claim(['a\0done', 'a\0running', 'b\0done', 'done'], ['fp', undefined, undefined, undefined], 'T', LEASE_MS, TTL_MS)
  await store.commit(['a\0done', 'b\0done', 'done'], [{ id: 7 }, null, null], 'T', TTL_MS)
}

const jsonLines = (stdout: string): unknown[] => stdout.trim().split('\n').map((line) => JSON.parse(line))

const stores: [string, string[], () => DedupStore][] = [
  ['redis', ['--store', REDIS_URL, '--prefix', prefix], () => new RedisStore(resolveRedisStore({ kind: 'redis', url: REDIS_URL, prefix }, 0, []))],
  ['postgres', ['--store', PG_URL, '--table-prefix', tablePrefix], () => createSqlStore(resolveSqlStoreOptions({ kind: 'postgres', url: PG_URL, tablePrefix } as SqlStoreOptions))],
  ['mysql (MariaDB)', ['--store', MYSQL_URL, '--table-prefix', tablePrefix], () => createSqlStore(resolveSqlStoreOptions({ kind: 'mysql', url: MYSQL_URL, tablePrefix } as SqlStoreOptions))],
  ['sqlite', ['--store', `sqlite:${file}`], () => createSqlStore(resolveSqlStoreOptions({ kind: 'sqlite', path: file } as SqlStoreOptions))],
]

describe.each(stores)('idem keys on the %s store', (_, storeFlags, make) => {
  it('inspect (table and --json), forget (refused in progress without --force), purge of one namespace', async () => {
    const store = make()
    opened.push(store)
    await seed(store)

    const table = idem('keys', 'inspect', ...storeFlags, '--namespace', 'a', 'done', 'running', 'none')
    expect(table.stderr).toBe('')
    expect(table.code).toBe(0)
    const lines = table.stdout.trim().split('\n')
    expect(lines[0]).toMatch(/^KEY\s+STATE\s+EXPIRES IN \(s\)\s+FINGERPRINT\s+RESULT BYTES$/)
    expect(lines.slice(2).map((line) => line.split(/\s+/).slice(0, 2))).toEqual([
      ['done', 'done'],
      ['running', 'in-progress'],
      ['none', 'absent'],
    ])
    const json = idem('keys', 'show', ...storeFlags, '--namespace', 'a', '--json', 'done', 'running', 'none')
    expect(json.code).toBe(0)
    const [done, running, none] = jsonLines(json.stdout) as Record<string, unknown>[]
    expect(done).toMatchObject({ key: 'done', namespace: 'a', state: 'done', fingerprint: 'fp', resultBytes: 8 })
    expect(done.expiresInMs).toBeGreaterThan(LEASE_MS)
    expect(running).toMatchObject({ key: 'running', namespace: 'a', state: 'in-progress' })
    expect(running.leaseLeftMs).toBe(running.expiresInMs)
    expect(none).toEqual({ key: 'none', namespace: 'a', state: 'absent', expiresInMs: 0 })

    const refused = idem('keys', 'forget', ...storeFlags, '--namespace', 'a', 'done', 'running')
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/KEY_IN_PROGRESS: in progress .*"running"; nothing forgotten\. Forget it with --force/)
    expect((await store.inspect(['a\0done', 'a\0running'])).map((view) => view?.state)).toEqual(['done', 'in-progress'])

    const forgot = idem('keys', 'forget', ...storeFlags, '--namespace', 'a', '--json', 'done', 'never')
    expect(forgot.code).toBe(0)
    expect(jsonLines(forgot.stdout)).toEqual([
      { key: 'done', namespace: 'a', forgotten: true },
      { key: 'never', namespace: 'a', forgotten: false },
    ])
    const forced = idem('keys', 'forget', ...storeFlags, '--namespace', 'a', '--force', 'running')
    expect(forced.code).toBe(0)
    expect(forced.stdout).toMatch(/running\s+yes: its next delivery runs the handler/)
    expect(await store.inspect(['a\0done', 'a\0running'])).toEqual([undefined, undefined])

    await seed(store)
    const purged = idem('keys', 'purge', ...storeFlags, '--namespace', 'a', '--json')
    expect(purged.stderr).toBe('')
    expect(jsonLines(purged.stdout)).toEqual([{ namespace: 'a', removed: 2 }])
    expect((await store.inspect(['a\0done', 'a\0running', 'b\0done', 'done'])).map((view) => view?.state)).toEqual([undefined, undefined, 'done', 'done'])
    const table2 = idem('keys', 'purge', ...storeFlags, '--namespace', 'a')
    expect(table2.stdout.trim()).toMatch(/^NAMESPACE\s+RECORDS REMOVED\n-+\s+-+\na\s+0$/)
  })
})

describe('idem keys: bad input', () => {
  const redis = ['--store', REDIS_URL, '--prefix', prefix]
  it.each([
    ['no action', [], /the first word must be inspect, show, forget, purge, resolve, got nothing/],
    ['an unknown action', ['drop', ...redis, 'k'], /got "drop"/],
    ['no KEY', ['inspect', ...redis], /name at least one KEY/],
    ['purge with a KEY', ['purge', ...redis, '--namespace', 'a', 'k'], /purge takes no KEY/],
    ['purge without --namespace', ['purge', ...redis], /purge needs --namespace/],
    ['an empty --namespace', ['purge', ...redis, '--namespace', ''], /--namespace/],
    ['--force on inspect', ['inspect', ...redis, '--force', 'k'], /--force goes with forget, not inspect/],
    ['an unknown flag', ['forget', ...redis, '--bogus', 'k'], /Unknown option '--bogus'/],
    ['no --store', ['inspect', 'k'], /give the store with --store/],
    ['the memory store', ['inspect', '--store', 'memory', 'k'], /the memory store lives inside its engine/],
    ['--result on forget', ['forget', ...redis, '--result', '1', 'k'], /go with resolve, not forget/],
  ])('%s: exit 2 with the reason and the usage', (_, args, reason) => {
    const run = idem('keys', ...(args as string[]))
    expect(run.code).toBe(2)
    expect(run.stderr).toMatch(reason as RegExp)
    expect(run.stderr).toMatch(/usage: idem keys inspect\|forget\|purge\|resolve/)
  })

  it.each([
    ['redis', (port: number) => `redis://127.0.0.1:${port}`],
    ['postgres', (port: number) => `postgres://postgres@127.0.0.1:${port}/test`],
  ])('a %s store it cannot reach (a closed loopback port): exit 1 with the reason, within the command bound', async (_, urlOf) => {
    const port = await closedPort()
    const run = idem('keys', 'inspect', '--store', urlOf(port), 'k')
    expect(run.code).toBe(1)
    expect(run.stderr).toMatch(/STORE_FAILED: .*ECONNREFUSED/)
    expect(run.stderr).not.toMatch(/usage:/)
  })
})

/** A loopback port nothing listens on: one the system gave out and took back. */
async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}
