import { setTimeout as sleep } from 'node:timers/promises'
import { readFileSync } from 'node:fs'
import { Cluster, Redis } from 'ioredis'
import { errorText, ErrorCode, IdemError } from '../../errors.js'
import { ClaimCode, CommitCode, type ClaimReplies, type DedupStore, type StoreHealth } from '../store.js'
import { encodeResult } from '../result-json.js'
import type { RedisStoreConfig } from './redis-options.js'
import { decodeRecord, encodeFingerprint, hashTagOf, recordKey } from './redis-records.js'

type Operation = 'claim' | 'commit' | 'release' | 'renew'
const readLua = (file: string): string => readFileSync(new URL(file, import.meta.url), 'utf8')
/**
 * One script, read once per process: each operation's file becomes a local
 * function, and batch.lua runs a list of them in one call. ioredis sends
 * EVALSHA and loads the script again after NOSCRIPT (a restarted server).
 */
const batchLua = [
  readLua('split-keys.lua'),
  ...(['claim', 'commit', 'release', 'renew'] as const).map((operation) => `local function ${operation}(KEYS, ARGV)\n${readLua(`${operation}.lua`)}\nend`),
  readLua('batch.lua'),
].join('\n')

type Reply = string | (string | number)[]
/** batch.lua's reply: one per operation, an Error for one that raised. */
type Replies = (Reply | Error)[]
type ScriptClient = (Redis | Cluster) & { idemBatch(keyCount: number, ...args: string[]): Promise<Replies> }

function onlyReply(replies: Replies): Reply {
  if (replies[0] instanceof Error) throw replies[0]
  return replies[0]
}

/** An operation waiting for the turn's batch call. */
interface Queued {
  operation: Operation
  leaseKey: string
  args: string[]
  keys: number
  resolve: (reply: Reply) => void
  reject: (error: unknown) => void
}

/** The keys of one script call: on a cluster one call per hash tag, on a single Redis one call in all. */
interface Group {
  positions: number[]
  /** The record keys, in positions' order; empty for a commit the lease record answers alone. */
  keys: string[]
  /** Prefix of the lease records of this group's batches (the lease record shares the group's slot). */
  leasePrefix: string
}

/** Joins a batch's values into the one packed argument the scripts split (split-keys.lua). */
function pack(group: Group, value: (i: number) => string): string {
  return group.positions.map(value).join('\0')
}

/**
 * Operations of one turn share a call until they hold this many record keys.
 * Small ones gain most from sharing (a call's fixed cost is most of theirs);
 * big ones keep their own call, so Redis works on one while the client
 * encodes the next and reads the one before (one call for a whole turn of
 * 1,024-key batches measured 0.6x the throughput of a call per batch).
 */
const MERGE_KEYS = 64

/** Claimed keys of a token not yet committed or released; beyond this many tokens the oldest are forgotten (their commits take the per-key path). */
const MAX_OPEN_TOKENS = 65_536

/**
 * The state machine of DESIGN.md §2 in Redis: each batch operation is one Lua
 * operation per hash tag group. On a single Redis, the small operations that
 * the shards sharing this store make in one turn travel as one script call;
 * on a cluster, each group is a call of its own, sent
 * together to every node. Leases and TTLs are Redis's own PX; commit, release
 * and renewal are fenced by the owner token in the record. Failed calls are
 * retried with backoff, then fail closed.
 *
 * A batch's lease is one record (claim.lua says why): committing every key a
 * token still holds is one write. The store counts, per token, the keys
 * claimed and not yet settled, to know when a commit covers them all.
 */
export class RedisStore implements DedupStore {
  readonly health: StoreHealth = { retries: 0, failures: 0 }
  /** One connection applies calls in order; a cluster spreads them over nodes. */
  readonly ordered: boolean
  private readonly client: ScriptClient
  private readonly ownsClient: boolean
  private readonly isCluster: boolean
  private readonly open = new Map<string, number>()
  private queued: Queued[] = []

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
    this.ordered = !this.isCluster
    if (typeof this.client.idemBatch !== 'function') this.client.defineCommand('idemBatch', { lua: batchLua })
  }

  async claim(keys: readonly string[], fingerprints: readonly (string | undefined)[], token: string, leaseMs: number, ttlMs: number): Promise<ClaimReplies> {
    const n = keys.length
    const codes = new Uint8Array(n)
    const storedFingerprints: (string | undefined)[] = new Array(n)
    const results: unknown[] = new Array(n)
    const doneExpiresInMs = new Float64Array(n)
    // A key twice in one batch is answered here (REPEAT), so the scripts never see one twice.
    const first = new Set<string>()
    const positions: number[] = []
    for (let i = 0; i < n; i++) {
      if (first.has(keys[i])) codes[i] = ClaimCode.REPEAT
      else {
        first.add(keys[i])
        positions.push(i)
      }
    }
    const groups = this.group(keys, positions)
    const replies = await this.call('claim', groups, token, (g) => [
      token,
      String(leaseMs),
      String(leaseMs + ttlMs),
      g.leasePrefix,
      g.keys.join('\0'),
      pack(g, (i) => encodeFingerprint(fingerprints[i])),
    ])
    let claimed = 0
    groups.forEach((g, k) => {
      // { codes, record, ttl, record, ttl… }: read in place, the records start at 1.
      const reply = replies[k] as (string | number)[]
      const answers = reply[0] as string
      let next = 1
      g.positions.forEach((i, j) => {
        if (answers.charCodeAt(j) === 0x30 /* '0' */) {
          codes[i] = ClaimCode.CLAIMED
          claimed++
        } else {
          const record = decodeRecord(reply[next++] as string)
          doneExpiresInMs[i] = Number(reply[next++])
          codes[i] = record.done ? ClaimCode.DONE : ClaimCode.IN_PROGRESS
          storedFingerprints[i] = record.fingerprint
          results[i] = record.result
        }
      })
    })
    if (claimed > 0) this.opened(token, claimed)
    if (this.config.requireReplicas > 0) await this.awaitReplicas(groups, replies, token)
    return { codes, fingerprints: storedFingerprints, results, doneExpiresInMs }
  }

  async commit(keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    const kept = new Uint8Array(keys.length).fill(CommitCode.COMMITTED)
    let anyResult = false
    // No results (keepResults off): nothing to encode per key.
    const encoded = results?.map((result, i) => {
      const encoding = encodeResult(result, this.config.maxResultBytes)
      if (typeof encoding === 'number') {
        kept[i] = encoding
        return ''
      }
      if (encoding === null) return ''
      anyResult = true
      return encoding
    })
    // Every key the token holds and no result to keep: the lease record alone turns DONE.
    const all = !anyResult && this.open.get(token) === keys.length
    // The lease record answers for all keys: their record keys are not needed, only their count per group.
    const groups = this.group(keys, undefined, !all)
    const replies = await this.call('commit', groups, token, (g) =>
      all ? [token, String(ttlMs), 'all', String(g.positions.length)] : [token, String(ttlMs), 'each', g.keys.join('\0'), pack(g, (i) => encoded?.[i] ?? '')],
    )
    this.settled(token, keys.length)
    return this.perKey(keys.length, groups, replies, (i, applied) => (applied ? kept[i] : CommitCode.REFUSED))
  }

  async release(keys: readonly string[], token: string): Promise<Uint8Array> {
    const groups = this.group(keys)
    const replies = await this.call('release', groups, token, (g) => [token, g.keys.join('\0')])
    this.settled(token, keys.length)
    return this.perKey(keys.length, groups, replies, (_, applied) => Number(applied))
  }

  async renew(keys: readonly string[], token: string, leaseMs: number, ttlMs: number): Promise<Uint8Array> {
    const groups = this.group(keys)
    const replies = await this.call('renew', groups, token, (g) => [token, String(leaseMs), String(leaseMs + ttlMs), g.keys.join('\0')])
    return this.perKey(keys.length, groups, replies, (_, applied) => Number(applied))
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
  private group(keys: readonly string[], positions: readonly number[] = keys.map((_, i) => i), withRecordKeys = true): Group[] {
    const { prefix, hashTags } = this.config
    if (!this.isCluster) {
      const recordKeys = withRecordKeys ? positions.map((i) => recordKey(prefix, hashTagOf(keys[i], hashTags), keys[i])) : []
      return [{ positions: positions as number[], keys: recordKeys, leasePrefix: `${prefix}t:` }]
    }
    const byTag = new Map<number, Group>()
    for (const i of positions) {
      const tag = hashTagOf(keys[i], hashTags)
      let group = byTag.get(tag)
      if (group === undefined) byTag.set(tag, (group = { positions: [], keys: [], leasePrefix: `${prefix}{${tag}}t:` }))
      group.positions.push(i)
      if (withRecordKeys) group.keys.push(recordKey(prefix, tag, keys[i]))
    }
    return [...byTag.values()]
  }

  private opened(token: string, claimed: number): void {
    this.open.set(token, claimed)
    if (this.open.size > MAX_OPEN_TOKENS) this.open.delete(this.open.keys().next().value as string)
  }

  private settled(token: string, keys: number): void {
    const left = (this.open.get(token) ?? 0) - keys
    if (left > 0) this.open.set(token, left)
    else this.open.delete(token)
  }

  /** Runs the operation on each group, retrying the whole operation on failure: every operation is safe to repeat under the same token. */
  private async call(operation: Operation, groups: Group[], token: string, args: (g: Group) => string[]): Promise<Reply[]> {
    const { retries, retryBackoffMs } = this.config
    const argv = groups.map(args)
    for (let attempt = 0; ; attempt++) {
      try {
        return await Promise.all(groups.map((g, k) => this.send(operation, g.leasePrefix + token, argv[k], Math.max(1, g.keys.length))))
      } catch (error) {
        if (attempt >= retries) {
          this.health.failures++
          throw new IdemError(ErrorCode.STORE_FAILED, `redis ${operation} failed after ${attempt + 1} attempt(s): ${errorText(error)}`, { cause: error })
        }
        this.health.retries++
        await sleep(retryBackoffMs * 2 ** attempt)
      }
    }
  }

  /**
   * A cluster gets one call per group, sent together so each node gets its
   * groups' calls back to back (an ioredis cluster pipeline would demand one
   * slot). On a single Redis, the operations of this turn from all the shards
   * sharing this store wait for the turn's microtasks to end, then go out
   * together, small ones sharing a call (MERGE_KEYS): one connection, so the
   * server applies them in the order they were made, as separate calls would be.
   */
  private send(operation: Operation, leaseKey: string, args: string[], keys: number): Promise<Reply> {
    if (this.isCluster) return this.client.idemBatch(1, leaseKey, '1', operation, leaseKey, String(args.length), ...args).then(onlyReply)
    return new Promise<Reply>((resolve, reject) => {
      if (this.queued.push({ operation, leaseKey, args, keys, resolve, reject }) === 1) process.nextTick(this.flush)
    })
  }

  private readonly flush = (): void => {
    const queued = this.queued
    this.queued = []
    let call: Queued[] = []
    let keys = 0
    for (const operation of queued) {
      // The call so far goes out before a big operation (which then goes alone) or once it is full; order is kept.
      if (call.length > 0 && (operation.keys >= MERGE_KEYS || keys >= MERGE_KEYS)) {
        this.sendMerged(call)
        call = []
        keys = 0
      }
      call.push(operation)
      keys += operation.keys
    }
    if (call.length > 0) this.sendMerged(call)
  }

  private sendMerged(calls: Queued[]): void {
    const argv = [String(calls.length)]
    for (const { operation, leaseKey, args } of calls) argv.push(operation, leaseKey, String(args.length), ...args)
    this.client.idemBatch(1, calls[0].leaseKey, ...argv).then(
      (replies) => {
        // An operation that raised an error (batch.lua caught it) fails alone: the others were applied.
        for (let k = 0; k < calls.length; k++) {
          const reply = replies[k]
          if (reply instanceof Error) calls[k].reject(reply)
          else calls[k].resolve(reply as Reply)
        }
      },
      (error: unknown) => {
        for (const call of calls) call.reject(error)
      },
    )
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
      throw new IdemError(ErrorCode.STORE_FAILED, `redis WAIT failed: ${errorText(error)}`, { cause: error })
    }
    if (acknowledged >= requireReplicas) return
    const claimed = groups.flatMap((g, k) => g.keys.filter((_, j) => (replies[k] as string[])[0].charCodeAt(j) === 0x30))
    this.open.delete(token)
    if (claimed.length > 0) await this.send('release', groups[0].leasePrefix + token, [token, claimed.join('\0')], claimed.length).catch(() => {})
    throw new IdemError(
      ErrorCode.REPLICA_SHORTFALL,
      `claims reached ${acknowledged} of the ${requireReplicas} required replicas within ${replicaTimeoutMs} ms; released them, retry later`,
    )
  }
}
