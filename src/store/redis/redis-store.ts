import { setTimeout as sleep } from 'node:timers/promises'
import { readFileSync } from 'node:fs'
import { Cluster, Redis } from 'ioredis'
import { describe, ErrorCode, IdemError } from '../../errors.js'
import { ClaimCode, CommitCode, type ClaimReplies, type DedupStore, type StoreHealth } from '../store.js'
import { encodeResult } from '../result-json.js'
import type { RedisStoreConfig } from './redis-options.js'
import { decodeRecord, encodeFingerprint, hashTagOf, recordKey } from './redis-records.js'

type ScriptName = 'idemClaim' | 'idemCommit' | 'idemRelease' | 'idemRenew'
const scripts: Record<ScriptName, string> = {
  idemClaim: 'claim.lua',
  idemCommit: 'commit.lua',
  idemRelease: 'release.lua',
  idemRenew: 'renew.lua',
}
const readLua = (file: string): string => readFileSync(new URL(file, import.meta.url), 'utf8')
const splitKeys = readLua('split-keys.lua')
/** Read once per process; ioredis sends EVALSHA and loads a script again after NOSCRIPT (a restarted server). */
const lua = Object.fromEntries(Object.entries(scripts).map(([name, file]) => [name, `${splitKeys}\n${readLua(file)}`])) as Record<ScriptName, string>

type Reply = string | string[]
type ScriptCall = (keyCount: number, ...args: string[]) => Promise<Reply>
type ScriptClient = (Redis | Cluster) & Record<ScriptName, ScriptCall>

/** The keys of one script call: on a cluster one call per hash tag, on a single Redis one call in all. */
interface Group {
  positions: number[]
  keys: string[]
}

/** Joins a batch's values into the one packed argument the scripts split (split-keys.lua). */
function pack(group: Group, value: (i: number) => string): string {
  return group.positions.map(value).join('\0')
}

/**
 * The state machine of DESIGN.md §2 in Redis: each batch operation is one Lua
 * script call per hash tag group (one round trip per batch on a single Redis,
 * calls sent together to every node on a cluster). Leases and TTLs are Redis's
 * own PX; commit, release and renewal are fenced by the owner token in the
 * record. Failed calls are retried with backoff, then fail closed.
 */
export class RedisStore implements DedupStore {
  readonly health: StoreHealth = { retries: 0, failures: 0 }
  private readonly client: ScriptClient
  private readonly ownsClient: boolean
  private readonly isCluster: boolean

  constructor(private readonly config: RedisStoreConfig) {
    const clientOptions = {
      commandTimeout: config.commandTimeoutMs,
      // Our retry loop owns retries (bounded, counted); a command queued while
      // the connection is down fails at once instead of waiting unboundedly.
      maxRetriesPerRequest: 0,
      retryStrategy: (attempt: number) => Math.min(50 * attempt, 1000),
    }
    if (config.client !== undefined) {
      this.client = config.client as ScriptClient
      this.ownsClient = false
    } else if (config.cluster !== undefined) {
      this.client = new Cluster(config.cluster, {
        redisOptions: clientOptions,
        clusterRetryStrategy: (attempt: number) => Math.min(100 * attempt, 2000),
      }) as ScriptClient
      this.ownsClient = true
    } else {
      this.client = new Redis(config.url!, clientOptions) as ScriptClient
      this.ownsClient = true
    }
    // ioredis reports connection errors as events too; the calls that hit them fail and are retried.
    if (this.ownsClient) this.client.on('error', () => {})
    // isCluster, not instanceof: a Cluster built by another copy of ioredis is still a cluster.
    this.isCluster = (this.client as { isCluster?: boolean }).isCluster === true
    for (const name of Object.keys(lua) as ScriptName[]) {
      if (typeof this.client[name] !== 'function') this.client.defineCommand(name, { lua: lua[name] })
    }
  }

  async claim(keys: readonly string[], fingerprints: readonly (string | undefined)[], token: string, leaseMs: number): Promise<ClaimReplies> {
    const n = keys.length
    const codes = new Uint8Array(n)
    const storedFingerprints: (string | undefined)[] = new Array(n)
    const results: unknown[] = new Array(n)
    const doneExpiresInMs = new Float64Array(n)
    const groups = this.group(keys)
    const replies = await this.call('claim', groups, 'idemClaim', (g) => [token, String(leaseMs), g.keys.join('\0'), pack(g, (i) => encodeFingerprint(fingerprints[i]))])
    groups.forEach((g, k) => {
      const [answers, ...records] = replies[k] as (string | number)[]
      let next = 0
      g.positions.forEach((i, j) => {
        const answer = (answers as string).charCodeAt(j)
        if (answer === 0x30 /* '0' */) codes[i] = ClaimCode.CLAIMED
        else if (answer === 0x33 /* '3' */) codes[i] = ClaimCode.REPEAT
        else {
          const record = decodeRecord(records[next++] as string)
          doneExpiresInMs[i] = Number(records[next++])
          codes[i] = record.done ? ClaimCode.DONE : ClaimCode.IN_PROGRESS
          storedFingerprints[i] = record.fingerprint
          results[i] = record.result
        }
      })
    })
    if (this.config.requireReplicas > 0) await this.awaitReplicas(groups, replies, token)
    return { codes, fingerprints: storedFingerprints, results, doneExpiresInMs }
  }

  async commit(keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    const kept = new Uint8Array(keys.length).fill(CommitCode.COMMITTED)
    const encoded = keys.map((_, i) => {
      if (results === undefined) return ''
      const encoding = encodeResult(results[i], this.config.maxResultBytes)
      if (typeof encoding === 'number') {
        kept[i] = encoding
        return ''
      }
      return encoding ?? ''
    })
    const groups = this.group(keys)
    const replies = await this.call('commit', groups, 'idemCommit', (g) => [token, String(ttlMs), g.keys.join('\0'), pack(g, (i) => encoded[i])])
    return this.perKey(keys.length, groups, replies, (i, applied) => (applied ? kept[i] : CommitCode.REFUSED))
  }

  async release(keys: readonly string[], token: string): Promise<Uint8Array> {
    const groups = this.group(keys)
    return this.perKey(keys.length, groups, await this.call('release', groups, 'idemRelease', (g) => [token, g.keys.join('\0')]), (_, applied) => Number(applied))
  }

  async renew(keys: readonly string[], token: string, leaseMs: number): Promise<Uint8Array> {
    const groups = this.group(keys)
    return this.perKey(keys.length, groups, await this.call('renew', groups, 'idemRenew', (g) => [token, String(leaseMs), g.keys.join('\0')]), (_, applied) => Number(applied))
  }

  async close(): Promise<void> {
    if (!this.ownsClient) return
    try {
      await this.client.quit()
    } catch {
      this.client.disconnect()
    }
  }

  /** A single Redis takes the whole batch in one call; a cluster needs one call per hash slot. */
  private group(keys: readonly string[]): Group[] {
    const { prefix, hashTags } = this.config
    if (!this.isCluster) {
      return [{ positions: keys.map((_, i) => i), keys: keys.map((key) => recordKey(prefix, hashTagOf(key, hashTags), key)) }]
    }
    const byTag = new Map<number, Group>()
    keys.forEach((key, i) => {
      const tag = hashTagOf(key, hashTags)
      let group = byTag.get(tag)
      if (group === undefined) byTag.set(tag, (group = { positions: [], keys: [] }))
      group.positions.push(i)
      group.keys.push(recordKey(prefix, tag, key))
    })
    return [...byTag.values()]
  }

  /** Runs one script per group, retrying the whole operation on failure: every script is safe to repeat under the same token. */
  private async call(operation: string, groups: Group[], script: ScriptName, args: (g: Group) => string[]): Promise<Reply[]> {
    const { retries, retryBackoffMs } = this.config
    const argv = groups.map(args)
    for (let attempt = 0; ; attempt++) {
      try {
        // Sent together, so each node gets its groups' calls back to back (an ioredis cluster pipeline would demand one slot).
        return await Promise.all(groups.map((g, k) => this.client[script](1, g.keys[0], ...argv[k])))
      } catch (error) {
        if (attempt >= retries) {
          this.health.failures++
          throw new IdemError(ErrorCode.STORE_FAILED, `redis ${operation} failed after ${attempt + 1} attempt(s): ${describe(error)}`, { cause: error })
        }
        this.health.retries++
        await sleep(retryBackoffMs * 2 ** attempt)
      }
    }
  }

  /** Reads a reply of one '1'/'0' character per key. */
  private perKey(n: number, groups: Group[], replies: Reply[], code: (i: number, applied: boolean) => number): Uint8Array {
    const out = new Uint8Array(n)
    groups.forEach((g, k) => {
      const answers = replies[k] as string
      g.positions.forEach((i, j) => (out[i] = code(i, answers.charCodeAt(j) === 0x31)))
    })
    return out
  }

  /**
   * WAIT on the connection that wrote the claims: a failover to a replica that
   * never got them would let a second owner claim the same keys. A shortfall
   * releases this batch's claims and fails it with its own code.
   */
  private async awaitReplicas(groups: Group[], replies: Reply[], token: string): Promise<void> {
    const { requireReplicas, replicaTimeoutMs } = this.config
    let acknowledged: number
    try {
      acknowledged = (await (this.client as Redis).wait(requireReplicas, replicaTimeoutMs)) as number
    } catch (error) {
      throw new IdemError(ErrorCode.STORE_FAILED, `redis WAIT failed: ${describe(error)}`, { cause: error })
    }
    if (acknowledged >= requireReplicas) return
    const claimed = groups.flatMap((g, k) => g.keys.filter((_, j) => (replies[k] as string[])[0].charCodeAt(j) === 0x30))
    if (claimed.length > 0) await this.client.idemRelease(1, claimed[0], token, claimed.join('\0')).catch(() => {})
    throw new IdemError(
      ErrorCode.REPLICA_SHORTFALL,
      `claims reached ${acknowledged} of the ${requireReplicas} required replicas within ${replicaTimeoutMs} ms; released them, retry later`,
    )
  }
}
