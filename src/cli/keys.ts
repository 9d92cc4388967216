/**
 * `idem keys inspect|forget|purge|resolve`: an operator's look at single keys
 * of a store, and the decisions only an operator may take: forgetting a key
 * (or a whole namespace) so it runs again, or resolving a key whose outcome is
 * UNKNOWN (DESIGN.md §2). It talks to the store, not to a running engine: an
 * engine's LRU may still answer a forgotten key as a duplicate until it
 * expires there (engine.forget drops it from the LRU as well).
 */
import { parseArgs } from 'node:util'
import { systemClock } from '../clock.js'
import { defaults, resolveConfig, type StoreConfig } from '../config.js'
import { ConfigError, ErrorCode, IdemError } from '../errors.js'
import { inspectionOf } from '../store/key-inspection.js'
import { StoreFactory } from '../store/store-factory.js'
import { CommitCode, type DedupStore } from '../store/store.js'
import { invalidKey, KeyStatus, keyStatusOf, type BadKeyStatus } from '../validation.js'
import { parseStoreFlag } from './migrate.js'
import { formatTable } from './table.js'

export const keysUsage = `idem keys inspect|forget|purge|resolve --store redis://…|postgres://…|mysql://…|sqlite:PATH [KEY…]
             [--namespace NS] [--json] [--prefix P] [--hash-tags N] [--table-prefix P] [--tables N]
             inspect KEY… (show: the same)   forget KEY… [--force]   purge --namespace NS
             resolve KEY…: --done [--result JSON] [--ttl-ms N] | --not-done`

/** How long the command waits for the store in all before it gives up (exit 1). */
const STORE_DEADLINE_MS = 10_000

const actions = ['inspect', 'show', 'forget', 'purge', 'resolve'] as const
type Action = (typeof actions)[number]

export async function runKeys(args: string[]): Promise<number> {
  const [action, ...rest] = args
  if (!actions.includes(action as Action)) return fail(2, `the first word must be ${actions.join(', ')}, got ${action === undefined ? 'nothing' : JSON.stringify(action)}`)
  let parsed
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        store: { type: 'string' },
        namespace: { type: 'string' },
        prefix: { type: 'string' },
        'hash-tags': { type: 'string' },
        'table-prefix': { type: 'string' },
        tables: { type: 'string' },
        json: { type: 'boolean' },
        force: { type: 'boolean' },
        done: { type: 'boolean' },
        'not-done': { type: 'boolean' },
        result: { type: 'string' },
        'ttl-ms': { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    })
  } catch (error) {
    return fail(2, (error as Error).message)
  }
  const { values, positionals } = parsed
  if (action === 'purge') {
    if (positionals.length > 0) return fail(2, `purge takes no KEY (it removes every key of --namespace), got ${positionals.map((k) => JSON.stringify(k)).join(' ')}`)
    if (values.namespace === undefined) return fail(2, 'purge needs --namespace: the namespace whose every record goes')
    const status = keyStatusOf(values.namespace)
    if (status !== KeyStatus.OK) return fail(2, invalidKey('--namespace', status as BadKeyStatus, values.namespace).message)
  } else if (positionals.length === 0) return fail(2, 'name at least one KEY')
  if (values.force !== undefined && action !== 'forget') return fail(2, `--force goes with forget, not ${action}`)
  // A key named twice is one key: answered once.
  const named = [...new Set(positionals)]
  const keys: string[] = []
  for (const key of named) {
    const scoped = scopedKey(key, values.namespace)
    if (scoped instanceof IdemError) return fail(2, scoped.message)
    keys.push(scoped)
  }
  let result: unknown
  if (action === 'resolve') {
    if (values.done === values['not-done']) return fail(2, 'resolve needs exactly one of --done and --not-done')
    if (values.result !== undefined) {
      if (values['not-done'] === true) return fail(2, '--result goes with --done only')
      try {
        result = JSON.parse(values.result)
      } catch (error) {
        return fail(2, `--result must be JSON: ${(error as Error).message}`)
      }
    }
  } else if (values.done !== undefined || values['not-done'] !== undefined || values.result !== undefined || values['ttl-ms'] !== undefined) {
    return fail(2, `--done, --not-done, --result and --ttl-ms go with resolve, not ${action}`)
  }
  // A DONE record from `resolve --done` lives as long as the engine's default dedup window, unless told otherwise.
  const ttlMs = values['ttl-ms'] === undefined ? defaults.ttlMs : Number(values['ttl-ms'])
  if (!Number.isSafeInteger(ttlMs) || ttlMs < 1) return fail(2, `--ttl-ms must be a positive integer, got ${JSON.stringify(values['ttl-ms'])}`)

  let store: DedupStore
  let factory: StoreFactory
  try {
    const config = storeConfig(values)
    if (typeof config === 'string') return fail(2, config)
    factory = new StoreFactory(config, systemClock)
    store = factory.forShard(0)
  } catch (error) {
    if (error instanceof ConfigError) return fail(2, error.problems.join('; '))
    throw error
  }
  const out = new Output(values.json === true)
  const namespaced = values.namespace === undefined ? {} : { namespace: values.namespace }
  const work = async (): Promise<number> => {
    if (action === 'inspect' || action === 'show') {
      const views = await store.inspect(keys)
      out.rows(
        ['KEY', 'STATE', 'EXPIRES IN (s)', 'FINGERPRINT', 'RESULT BYTES'],
        named.map((key, i) => {
          const inspection = inspectionOf(views[i])
          const seconds = inspection.state === 'absent' ? '-' : (inspection.expiresInMs / 1000).toFixed(1)
          return [{ key, ...namespaced, ...inspection }, [key, inspection.state, seconds, inspection.fingerprint ?? '-', inspection.resultBytes ?? '-']]
        }),
      )
      return 0
    }
    if (action === 'forget') {
      if (values.force !== true) {
        // Checked first, and nothing forgotten when a key is in progress: its handler may be running.
        const views = await store.inspect(keys)
        const running = named.filter((_, i) => views[i]?.state === 'in-progress')
        if (running.length > 0) {
          console.error(`idem keys: ${ErrorCode.KEY_IN_PROGRESS}: in progress (its handler may be running): ${running.map((k) => JSON.stringify(k)).join(' ')}; nothing forgotten. Forget it with --force once its owner is gone, or wait for its lease to end`)
          return 1
        }
      }
      const removed = await store.forget(keys)
      out.rows(
        ['KEY', 'FORGOTTEN'],
        named.map((key, i) => [{ key, ...namespaced, forgotten: removed[i] === 1 }, [key, removed[i] === 1 ? 'yes: its next delivery runs the handler' : 'absent already']]),
      )
      return 0
    }
    if (action === 'purge') {
      const removed = await store.purge(values.namespace!)
      out.rows(['NAMESPACE', 'RECORDS REMOVED'], [[{ namespace: values.namespace, removed }, [values.namespace!, removed]]])
      return 0
    }
    const done = values.done === true
    const before = await store.inspect(keys)
    const resolved = await store.resolve(keys, keys.map(() => done), done && result !== undefined ? keys.map(() => result) : undefined, ttlMs)
    out.rows(
      ['KEY', 'RESOLVED'],
      named.map((key, i) => {
        const applied = resolved[i] !== CommitCode.REFUSED
        const text = applied ? (done ? 'done: its deliveries are duplicates from now on' : 'not done: its next delivery runs the handler') : `no: not UNKNOWN (${before[i]?.state ?? 'absent'}), left as it was`
        return [{ key, ...namespaced, resolved: applied, state: applied ? (done ? 'done' : 'absent') : (before[i]?.state ?? 'absent') }, [key, text]]
      }),
    )
    return resolved.every((r) => r !== CommitCode.REFUSED) ? 0 : 1
  }
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new IdemError(ErrorCode.STORE_FAILED, `no answer from the store within ${STORE_DEADLINE_MS / 1000} s`)), STORE_DEADLINE_MS)
  })
  try {
    return await Promise.race([work(), deadline])
  } catch (error) {
    if (!(error instanceof IdemError)) throw error
    return fail(1, `${error.code}: ${error.message}`, false)
  } finally {
    clearTimeout(timer)
    // A store that never connected may never finish closing: the exit does not wait for it past a moment.
    await Promise.race([factory.close().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 1000).unref())])
  }
}

/** Rows as an aligned table, or as JSON lines (--json): one object per row. */
class Output {
  constructor(private readonly json: boolean) {}

  rows(header: string[], rows: [object, (string | number)[]][]): void {
    if (this.json) for (const [line] of rows) console.log(JSON.stringify(line))
    else console.log(formatTable(header, rows.map(([, cells]) => cells)))
  }
}

/** The key as the store names it: "namespace NUL key" under a namespace, as the engine's router scopes it. */
function scopedKey(key: string, namespace: string | undefined): string | IdemError {
  const status = keyStatusOf(key)
  if (status !== KeyStatus.OK) return invalidKey('KEY', status as BadKeyStatus, key)
  if (namespace === undefined) return key
  const namespaceStatus = keyStatusOf(namespace)
  if (namespaceStatus !== KeyStatus.OK) return invalidKey('--namespace', namespaceStatus as BadKeyStatus, namespace)
  return `${namespace}\0${key}`
}

/** The store the flags name, validated as createEngine validates it (a ConfigError), or a text saying what is wrong with the flags. */
function storeConfig(values: { store?: string; prefix?: string; 'hash-tags'?: string; 'table-prefix'?: string; tables?: string }): StoreConfig | string {
  if (values.store === undefined) return 'give the store with --store'
  const parsed = parseStoreFlag(values.store)
  if (typeof parsed === 'string') return `--store ${parsed}`
  if (parsed.kind === 'memory') return '--store memory: the memory store lives inside its engine; name a shared store'
  const store: Record<string, unknown> = { ...parsed, retries: 0 }
  if (parsed.kind === 'redis') {
    if (values.prefix !== undefined) store.prefix = values.prefix
    if (values['hash-tags'] !== undefined) store.hashTags = Number(values['hash-tags'])
  } else {
    if (values['table-prefix'] !== undefined) store.tablePrefix = values['table-prefix']
    if (values.tables !== undefined) store.tables = Number(values.tables)
    store.createTables = false
  }
  return resolveConfig({ store }).store
}

/** Prints the reason (and the usage, for a bad command line) and answers the exit code. */
function fail(code: number, message: string, usage = true): number {
  console.error(usage ? `idem keys: ${message}\nusage: ${keysUsage}` : `idem keys: ${message}`)
  return code
}
