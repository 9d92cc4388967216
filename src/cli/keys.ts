/**
 * `idem keys show|resolve|forget`: an operator's look at single keys of a
 * store, and the decisions only an operator may take: resolving a key whose
 * outcome is UNKNOWN (DESIGN.md §2), or forgetting a key so it runs again.
 */
import { parseArgs } from 'node:util'
import { systemClock } from '../clock.js'
import { defaults, resolveConfig, type StoreConfig } from '../config.js'
import { ConfigError, IdemError } from '../errors.js'
import { StoreFactory } from '../store/store-factory.js'
import { CommitCode, type DedupStore, type KeyView } from '../store/store.js'
import { invalidKey, KeyStatus, keyStatusOf, type BadKeyStatus } from '../validation.js'
import { parseStoreFlag } from './migrate.js'

export const keysUsage = `idem keys show|resolve|forget --store redis://…|postgres://…|mysql://…|sqlite:PATH KEY…
             [--namespace NS] [--prefix P] [--hash-tags N] [--table-prefix P] [--tables N]
             resolve: --done [--result JSON] [--ttl-ms N] | --not-done`

export async function runKeys(args: string[]): Promise<number> {
  const [action, ...rest] = args
  if (action !== 'show' && action !== 'resolve' && action !== 'forget') return fail(2, `the first word must be show, resolve or forget, got ${action === undefined ? 'nothing' : JSON.stringify(action)}`)
  const { values, positionals } = parseArgs({
    args: rest,
    options: {
      store: { type: 'string' },
      namespace: { type: 'string' },
      prefix: { type: 'string' },
      'hash-tags': { type: 'string' },
      'table-prefix': { type: 'string' },
      tables: { type: 'string' },
      done: { type: 'boolean' },
      'not-done': { type: 'boolean' },
      result: { type: 'string' },
      'ttl-ms': { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  })
  if (positionals.length === 0) return fail(2, 'name at least one KEY')
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
  try {
    if (action === 'show') {
      const views = await store.inspect(keys)
      named.forEach((key, i) => console.log(`${key}\t${describe(views[i])}`))
      return 0
    }
    if (action === 'forget') {
      const removed = await store.forget(keys)
      named.forEach((key, i) => console.log(`${key}\t${removed[i] === 1 ? 'forgotten: its next delivery runs the handler' : 'absent already'}`))
      return 0
    }
    const done = values.done === true
    const before = await store.inspect(keys)
    const resolved = await store.resolve(keys, keys.map(() => done), done && result !== undefined ? keys.map(() => result) : undefined, ttlMs)
    named.forEach((key, i) => {
      if (resolved[i] !== CommitCode.REFUSED) console.log(`${key}\tresolved ${done ? 'done: its deliveries are duplicates from now on' : 'not done: its next delivery runs the handler'}`)
      else console.log(`${key}\tnot UNKNOWN (${before[i]?.state ?? 'absent'}): left as it was`)
    })
    return resolved.every((r) => r !== CommitCode.REFUSED) ? 0 : 1
  } catch (error) {
    if (!(error instanceof IdemError)) throw error
    return fail(1, `${error.code}: ${error.message}`)
  } finally {
    await factory.close()
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

function describe(view: KeyView | undefined): string {
  if (view === undefined) return 'absent'
  const seconds = (view.expiresInMs / 1000).toFixed(1)
  const parts = [view.state, `token ${view.token}`, `fingerprint ${JSON.stringify(view.fingerprint ?? null)}`]
  if (view.state === 'done') parts.push(`result ${JSON.stringify(view.result ?? null)}`)
  parts.push(view.state === 'in-progress' ? `lease ends in ${seconds} s` : `expires in ${seconds} s`)
  return parts.join('\t')
}

function fail(code: number, message: string): number {
  console.error(`idem keys: ${message}\nusage: ${keysUsage}`)
  return code
}
