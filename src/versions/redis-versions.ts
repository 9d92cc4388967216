import { Redis } from 'ioredis'
import { ErrorCode, errorText, IdemError } from '../errors.js'
import { withRetries } from '../retry.js'
import type { RedisStoreConfig } from '../store/redis/redis-options.js'
import { permanentRedisError } from '../store/redis/redis-errors.js'
import { hashTagOf, recordKey } from '../store/redis/redis-records.js'
import { defineScripts, readLua } from '../store/redis/script-loader.js'
import type { VersionClaims, VersionStore, VersionView } from './version-store.js'

type VersionClient = Redis & {
  idemVersionClaim(...args: string[]): Promise<[string, ...(string | number)[]]>
  idemVersionCommit(...args: string[]): Promise<string>
  idemVersionRelease(...args: string[]): Promise<string>
  idemVersionRenew(...args: string[]): Promise<string>
  idemVersionInspect(...args: string[]): Promise<(string | number)[]>
}

/** The strict store's `split` of NUL-joined arguments and the versions' record helpers, prepended to each script. */
const commonLua = `${readLua(import.meta.url, '../store/redis/split-keys.lua')}\n${readLua(import.meta.url, 'version-compare.lua')}`
const script = (file: string) => ({ lua: `${commonLua}\n${readLua(import.meta.url, file)}`, numberOfKeys: 0 })
const scripts = {
  idemVersionClaim: script('claim-versions.lua'),
  idemVersionCommit: script('commit-versions.lua'),
  idemVersionRelease: script('release-versions.lua'),
  idemVersionRenew: script('renew-versions.lua'),
  idemVersionInspect: script('inspect-versions.lua'),
}

/**
 * Version-aware records on a single Redis: one string per key under
 * `${prefix}v:` (apart from the strict store's records, so a key handled both
 * ways is two records) and one lease record per claim call under
 * `${prefix}vt:`; one script call per batch and operation, the batch packed
 * into NUL-joined arguments (version-compare.lua says why the lease is apart).
 */
export class RedisVersionStore implements VersionStore {
  readonly health = { retries: 0, failures: 0 }
  private readonly client: VersionClient
  private readonly ownsClient: boolean
  private readonly prefix: string
  /** Each claim's lease: prefix .. token ('p' while held, 'd' once its keys are committed). */
  private readonly tokenPrefix: string

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
    this.tokenPrefix = `${config.prefix}vt:`
  }

  /** The record keys of a batch, NUL-joined (no record key holds NUL). */
  private names(keys: readonly string[]): string {
    let packed = ''
    for (let i = 0; i < keys.length; i++) packed += (i === 0 ? '' : '\0') + recordKey(this.prefix, hashTagOf(keys[i], this.config.hashTags), keys[i])
    return packed
  }

  async claim(keys: readonly string[], versions: readonly string[], states: readonly (string | undefined)[], token: string, leaseMs: number, ttlMs: number): Promise<VersionClaims> {
    const packedStates = states.map((state) => state ?? '').join('\0')
    const [codes, ...values] = await this.call('claim', () => this.client.idemVersionClaim(token, String(leaseMs), String(ttlMs), this.tokenPrefix, this.names(keys), versions.join('\0'), packedStates))
    const n = keys.length
    const answer: VersionClaims = { codes: new Uint8Array(n), applied: new Array(n), states: new Array(n), expiresInMs: new Float64Array(n) }
    for (let i = 0; i < n; i++) {
      answer.codes[i] = codes.charCodeAt(i) - 0x30
      answer.applied[i] = (values[3 * i] as string) || undefined
      answer.states[i] = (values[3 * i + 1] as string) || undefined
      answer.expiresInMs[i] = values[3 * i + 2] as number
    }
    return answer
  }

  async commit(keys: readonly string[], token: string, ttlMs: number, every: boolean): Promise<Uint8Array> {
    const reply = every
      ? await this.call('commit', () => this.client.idemVersionCommit(token, String(ttlMs), this.tokenPrefix, 'all', String(keys.length)))
      : await this.call('commit', () => this.client.idemVersionCommit(token, String(ttlMs), this.tokenPrefix, 'each', this.names(keys)))
    return flags(reply)
  }

  async release(keys: readonly string[], token: string): Promise<Uint8Array> {
    return flags(await this.call('release', () => this.client.idemVersionRelease(token, this.names(keys))))
  }

  async renew(keys: readonly string[], token: string, leaseMs: number, ttlMs: number): Promise<Uint8Array> {
    return flags(await this.call('renew', () => this.client.idemVersionRenew(token, String(leaseMs), String(ttlMs), this.tokenPrefix, this.names(keys))))
  }

  async inspect(keys: readonly string[]): Promise<(VersionView | undefined)[]> {
    const fields = await this.call('inspect', () => this.client.idemVersionInspect(this.tokenPrefix, this.names(keys)))
    return keys.map((_, i) => {
      const [applied, state, claimed, token, leaseLeftMs, pttl] = fields.slice(6 * i, 6 * i + 6)
      const live = Number(leaseLeftMs) > 0
      // A record whose claim lapsed (or whose commit's token record expired with its TTL) and that holds no applied version is as good as absent.
      if (Number(pttl) < 0 || (applied === '' && !live)) return undefined
      return {
        applied: (applied as string) || undefined,
        state: (state as string) || undefined,
        claimed: live ? (claimed as string) : undefined,
        token: live ? (token as string) : undefined,
        leaseLeftMs: live ? Number(leaseLeftMs) : 0,
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
