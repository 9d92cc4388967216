import { Redis } from 'ioredis'
import { ErrorCode, errorText, IdemError } from '../errors.js'
import { withRetries } from '../retry.js'
import type { RedisStoreConfig } from '../store/redis/redis-options.js'
import { permanentRedisError } from '../store/redis/redis-errors.js'
import { hashTagOf, recordKey } from '../store/redis/redis-records.js'
import { defineScripts, readLua } from '../store/redis/script-loader.js'
import type { VersionClaims, VersionStore, VersionView } from './version-store.js'

type VersionClient = Redis & {
  idemVersionClaim(count: number, ...args: string[]): Promise<string[]>
  idemVersionCommit(count: number, ...args: string[]): Promise<string>
  idemVersionRelease(count: number, ...args: string[]): Promise<string>
  idemVersionRenew(count: number, ...args: string[]): Promise<string>
  idemVersionInspect(count: number, ...keys: string[]): Promise<(string | number)[]>
}

const compareLua = readLua(import.meta.url, 'version-compare.lua')
const scripts = {
  idemVersionClaim: { lua: `${compareLua}\n${readLua(import.meta.url, 'claim-versions.lua')}` },
  idemVersionCommit: { lua: `${compareLua}\n${readLua(import.meta.url, 'commit-versions.lua')}` },
  idemVersionRelease: { lua: readLua(import.meta.url, 'release-versions.lua') },
  idemVersionRenew: { lua: `${compareLua}\n${readLua(import.meta.url, 'renew-versions.lua')}` },
  idemVersionInspect: { lua: `${compareLua}\n${readLua(import.meta.url, 'inspect-versions.lua')}` },
}

/**
 * Version-aware records on a single Redis: one hash per key under
 * `${prefix}v:` (apart from the strict store's records, so a key handled both
 * ways is two records), one script call per batch and operation, leases on
 * the server's clock.
 */
export class RedisVersionStore implements VersionStore {
  readonly health = { retries: 0, failures: 0 }
  private readonly client: VersionClient
  private readonly ownsClient: boolean
  private readonly prefix: string

  constructor(private readonly config: RedisStoreConfig) {
    if (config.client !== undefined) {
      this.client = config.client as VersionClient
      this.ownsClient = false
    } else {
      this.client = new Redis(config.url!, {
        commandTimeout: config.commandTimeoutMs,
        maxRetriesPerRequest: 0,
        retryStrategy: (attempt: number) => Math.min(50 * attempt, 1000),
      }) as VersionClient
      this.ownsClient = true
      // Connection errors surface as failed calls, retried and counted there.
      this.client.on('error', () => {})
    }
    defineScripts(this.client, scripts)
    this.prefix = `${config.prefix}v:`
  }

  private names(keys: readonly string[]): string[] {
    return keys.map((key) => recordKey(this.prefix, hashTagOf(key, this.config.hashTags), key))
  }

  async claim(keys: readonly string[], versions: readonly string[], states: readonly (string | undefined)[], token: string, leaseMs: number, ttlMs: number): Promise<VersionClaims> {
    const args = [...this.names(keys), token, String(leaseMs), String(ttlMs)]
    for (let i = 0; i < keys.length; i++) args.push(versions[i], states[i] ?? '')
    const [codes, ...values] = await this.call('claim', () => this.client.idemVersionClaim(keys.length, ...args))
    const n = keys.length
    const answer: VersionClaims = { codes: new Uint8Array(n), applied: new Array(n), states: new Array(n) }
    for (let i = 0; i < n; i++) {
      answer.codes[i] = codes.charCodeAt(i) - 0x30
      answer.applied[i] = values[2 * i] || undefined
      answer.states[i] = values[2 * i + 1] || undefined
    }
    return answer
  }

  async commit(keys: readonly string[], token: string, ttlMs: number): Promise<Uint8Array> {
    return flags(await this.call('commit', () => this.client.idemVersionCommit(keys.length, ...this.names(keys), token, String(ttlMs))))
  }

  async release(keys: readonly string[], token: string): Promise<Uint8Array> {
    return flags(await this.call('release', () => this.client.idemVersionRelease(keys.length, ...this.names(keys), token)))
  }

  async renew(keys: readonly string[], token: string, leaseMs: number, ttlMs: number): Promise<Uint8Array> {
    return flags(await this.call('renew', () => this.client.idemVersionRenew(keys.length, ...this.names(keys), token, String(leaseMs), String(ttlMs))))
  }

  async inspect(keys: readonly string[]): Promise<(VersionView | undefined)[]> {
    const [now, ...fields] = await this.call('inspect', () => this.client.idemVersionInspect(keys.length, ...this.names(keys)))
    return keys.map((_, i) => {
      const [applied, state, claimed, token, leaseEnd, pttl] = fields.slice(6 * i, 6 * i + 6)
      if (Number(pttl) < 0) return undefined
      return {
        applied: (applied as string) || undefined,
        state: (state as string) || undefined,
        claimed: (claimed as string) || undefined,
        token: (token as string) || undefined,
        leaseLeftMs: token === '' ? 0 : Math.max(0, Number(leaseEnd) - Number(now)),
        expiresInMs: Number(pttl),
      }
    })
  }

  async close(): Promise<void> {
    if (this.ownsClient) await this.client.quit().catch(() => this.client.disconnect())
  }

  private call<T>(what: string, run: () => Promise<T>): Promise<T> {
    return withRetries(run, { retries: this.config.retries, backoffMs: this.config.retryBackoffMs }, {
      permanent: (error) => permanentRedisError(error, `version ${what}`),
      onRetry: () => this.health.retries++,
      exhausted: (error, attempts) => {
        this.health.failures++
        return new IdemError(ErrorCode.STORE_FAILED, `version ${what} failed after ${attempts} attempts: ${errorText(error)}`, { cause: error })
      },
    })
  }
}

function flags(reply: string): Uint8Array {
  const out = new Uint8Array(reply.length)
  for (let i = 0; i < reply.length; i++) out[i] = reply.charCodeAt(i) === 0x31 ? 1 : 0
  return out
}
