/**
 * `idem store show|ack-reset`: the operator's side of the Redis store's
 * identity record (store-identity.ts). After a reset (the record found gone:
 * a restart without persistence, a flush) every engine on the prefix fails
 * closed with STORE_RESET; `ack-reset` is the decision that keys settled
 * before the loss may run again, and the running engines resume on it.
 */
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { errorText } from '../errors.js'
import { redisDefaults } from '../store/redis/redis-options.js'
import { acknowledgeReset, formatIdentity, identityKey, readIdentity } from '../store/redis/store-identity.js'
import { parseStoreFlag } from './migrate.js'

export const storeUsage = `idem store show|ack-reset --store redis://HOST:PORT[/DB] [--prefix P]`

/** How long the command waits for the server before it gives up. */
const CONNECT_TIMEOUT_MS = 3000

export async function runStoreAdmin(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { store: { type: 'string' }, prefix: { type: 'string', default: redisDefaults.prefix } }, allowPositionals: true, strict: true })
  const [action, ...extra] = positionals
  const problems: string[] = []
  if (action !== 'show' && action !== 'ack-reset') problems.push(`the action must be show or ack-reset, got ${action === undefined ? 'none' : JSON.stringify(action)}`)
  if (extra.length > 0) problems.push(`unexpected arguments: ${extra.map((a) => JSON.stringify(a)).join(' ')}`)
  if (values.store === undefined) problems.push('--store: give the Redis the engines use, as redis://HOST:PORT[/DB]')
  else if (!isRedisStore(values.store)) problems.push(`--store: must be a redis:// or rediss:// URL, got ${JSON.stringify(values.store)}`)
  if (problems.length > 0) {
    console.error(`idem store: ${problems.join('\n            ')}\nusage: ${storeUsage}`)
    return 2
  }
  const prefix = values.prefix
  const client = new Redis(values.store!, { lazyConnect: true, connectTimeout: CONNECT_TIMEOUT_MS, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false })
  // The connection's own error (ECONNREFUSED…) says more than the "Connection is closed." a failed connect() rejects with.
  let connectionError: unknown
  client.on('error', (error: unknown) => (connectionError = error))
  try {
    await client.connect()
    return action === 'show' ? await show(client, prefix) : await ackReset(client, prefix)
  } catch (error) {
    console.error(`idem store: ${values.store}: ${errorText(connectionError ?? error)}`)
    return 1
  } finally {
    client.disconnect()
  }
}

async function show(client: Redis, prefix: string): Promise<number> {
  const read = await readIdentity(client, prefix)
  if (read.state === 'absent') {
    console.log(`idem store: no identity record under ${JSON.stringify(prefix)} (no engine has used this prefix yet)`)
    return 1
  }
  console.log(`${identityKey(prefix)}: ${read.record}`)
  if (read.state === 'foreign') console.log('not an idem identity record: engines refuse this prefix (STORE_LAYOUT_MISMATCH)')
  if (read.state === 'reset') console.log(`state reset since ${new Date(read.identity.since!).toISOString()}: engines fail closed (STORE_RESET) until \`idem store ack-reset\``)
  return 0
}

async function ackReset(client: Redis, prefix: string): Promise<number> {
  const read = await readIdentity(client, prefix)
  switch (read.state) {
    case 'absent':
      console.error(`idem store: no identity record under ${JSON.stringify(prefix)} (no engine has used it, or the reset has not been seen yet)`)
      return 1
    case 'foreign':
      console.error(`idem store: ${identityKey(prefix)} holds ${JSON.stringify(read.record.slice(0, 200))}, not an idem identity record; nothing acknowledged`)
      return 1
    case 'ok':
      console.log(`idem store: no reset to acknowledge under ${JSON.stringify(prefix)} (${read.record})`)
      return 0
    case 'reset': {
      const acknowledged = await acknowledgeReset(client, prefix, read.record, read.identity)
      if (acknowledged === undefined) {
        console.error(`idem store: the identity record under ${JSON.stringify(prefix)} changed while it was acknowledged; nothing written, run the command again`)
        return 1
      }
      console.log(
        `idem store: acknowledged the reset of store ${read.identity.storeId} under ${JSON.stringify(prefix)} (found at ${new Date(read.identity.since!).toISOString()}); new identity ${formatIdentity(acknowledged)}\n` +
          'warning: the running engines resume within a second or so; every key settled before the loss runs again when it is delivered again',
      )
      return 0
    }
  }
}

/** The idem store a --store value names is Redis (redis:// or rediss://). */
function isRedisStore(value: string): boolean {
  const store = parseStoreFlag(value)
  return typeof store !== 'string' && store.kind === 'redis'
}
