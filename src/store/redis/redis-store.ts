import { Cluster, Redis } from 'ioredis'
import { ErrorCode, IdemError, errorText } from '../../errors.js'
import { jsonValues, StoreBase, storeOperations, type GroupClaim, type KeyGroup, type StoredRecord, type StoreOperation } from '../store-base.js'
import { ClaimCode } from '../store.js'
import type { RedisStoreConfig } from './redis-options.js'
import { hashTagOf, readRecord, recordKey } from './redis-records.js'
import { redisClientOptions } from './redis-client.js'
import { permanentRedisError } from './redis-errors.js'
import { deleteScanned, globEscaped } from './delete-keys.js'
import { defineScripts, readLua } from './script-loader.js'
import { readServerInfo, refuseUntrustedServer } from './server-check.js'
import { acceptIdentity, acknowledges, formatIdentity, freshIdentity, identityKey, okRecordOf, parseIdentity, resetError, type StoreIdentity } from './store-identity.js'

/**
 * One script: each operation's file becomes a local function, and batch.lua
 * runs a list of them in one call.
 */
const batchLua = [
  readLua(import.meta.url, 'split-keys.lua'),
  readLua(import.meta.url, 'check-identity.lua'),
  // In storeOperations' order: forget calls inspect, so inspect comes first.
  ...storeOperations.map((operation) => `local function ${operation}(KEYS, ARGV)\n${readLua(import.meta.url, `${operation}.lua`)}\nend`),
  readLua(import.meta.url, 'batch.lua'),
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
  operation: StoreOperation
  leaseKey: string
  args: string[]
  keys: number
  resolve: (reply: Reply) => void
  reject: (error: unknown) => void
}

/** The keys of one script call: on a cluster one call per hash tag, on a single Redis one call in all. */
interface TagGroup extends KeyGroup {
  /** The tag all of the group's records carry (their cluster slot). */
  tag: number | undefined
  /** Prefix of the lease records of this group's batches (a lease record shares the group's slot). */
  leasePrefix: string
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

/** How often the identity record is checked without traffic: a reset is seen within about this long even on a quiet store (and on a cluster, where calls do not check it). */
const IDENTITY_CHECK_MS = 1000

/** How often a store with allowEviction reads the server's evicted_keys. */
const EVICTION_CHECK_MS = 5000

/** At most one IDEM_EVICTED_KEYS warning this often; the evictions in between are summed into the next. */
const EVICTION_WARNING_MS = 60_000

/** The error batch.lua answers when the identity record is not the one the store accepted. */
const RESET_REPLY = 'IDEM_STORE_RESET '

/**
 * The state machine of DESIGN.md §2 in Redis: each primitive is one Lua
 * operation per hash tag group. On a single Redis, the small operations that
 * the shards sharing this store make in one turn travel as one script call;
 * on a cluster, each group is a call of its own, sent together to every node.
 * Leases and TTLs are Redis's own PX; commit, release and renewal are fenced
 * by the owner token in the record. Tokens, repeats, values and retries are
 * the store base's.
 *
 * A batch's lease is one record (claim.lua says why): committing every key a
 * token still holds is one write. The store counts, per token, the keys
 * claimed and not yet settled, to know when a commit covers them all.
 */
export class RedisStore extends StoreBase<TagGroup> {
  /** One connection applies calls in order; a cluster spreads them over nodes. */
  readonly ordered: boolean
  private readonly client: ScriptClient
  private readonly ownsClient: boolean
  private readonly isCluster: boolean
  /** Per token: claimed keys not yet committed or released. */
  private readonly claimedPerToken = new Map<string, number>()
  private queued: Queued[] = []
  /** Commits waiting for their microtask to go out on a transport's connection (commitOn). */
  private readonly riding = new Map<Redis, Queued[]>()
  private serverChecked = false
  /** The one server check under way: calls made before it answers share it. */
  private serverCheck: Promise<void> | undefined
  /** The identity record this store accepted at its first call (store-identity.ts), exactly as stored (every single-Redis call compares it), and its fields. */
  private identityRecord = ''
  private identity: StoreIdentity | undefined
  /** Set once the store found its data lost: every call fails with it (STORE_RESET) until the reset is acknowledged. */
  private lost: IdemError | undefined
  private identityTimer: NodeJS.Timeout | undefined
  private checkingIdentity = false
  private evictionTimer: NodeJS.Timeout | undefined
  /** The server's evicted_keys at the last reading (allowEviction). */
  private evictedKeys: number | undefined
  /** Evictions not yet in a warning, and when the last warning went out. */
  private unwarnedEvictions = 0
  private evictionWarnedAt = -Infinity
  /** The connection's last error while it is down (ECONNREFUSED…): it says more than the command's own failure. */
  private connectionError: unknown
  /** Set by close(): a server check still under way then starts no timer. */
  private closed = false

  constructor(private readonly config: RedisStoreConfig) {
    super({ name: 'redis', retries: config.retries, retryBackoffMs: config.retryBackoffMs, maxResultBytes: config.maxResultBytes, values: jsonValues })
    const clientOptions = redisClientOptions(config)
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
    if (this.ownsClient) this.client.on('error', (error: unknown) => (this.connectionError = error))
    this.client.on('ready', () => (this.connectionError = undefined))
    // isCluster, not instanceof: a Cluster built by another copy of ioredis is still a cluster.
    this.isCluster = (this.client as { isCluster?: boolean }).isCluster === true
    this.ordered = !this.isCluster
    defineScripts(this.client, { idemBatch: { lua: batchLua } })
  }

  override async claim(keys: readonly string[], fingerprints: readonly (string | undefined)[], token: string, leaseMs: number, ttlMs: number) {
    const replies = await super.claim(keys, fingerprints, token, leaseMs, ttlMs)
    let claimed = 0
    for (let i = 0; i < replies.codes.length; i++) if (replies.codes[i] === ClaimCode.CLAIMED) claimed++
    if (claimed > 0) this.countClaimed(token, claimed)
    if (claimed > 0 && this.config.requireReplicas > 0) await this.awaitReplicas(keys, replies.codes, token)
    return replies
  }

  /**
   * With requireReplicas, a commit is durable once the replicas hold it too:
   * until then its outcome (and so its ack) waits, and a shortfall fails the
   * commit, which the actor keeps and applies again (a commit this token
   * already applied answers committed), so no ack outruns replication.
   */
  override async commit(keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    const committed = await super.commit(keys, results, token, ttlMs)
    this.countSettled(token, keys.length)
    if (this.config.requireReplicas > 0) {
      const shortfall = await this.replicaShortfall('commits', 'the commit is applied again before its messages are acked')
      if (shortfall !== undefined) throw shortfall
    }
    return committed
  }

  override async release(keys: readonly string[], token: string): Promise<Uint8Array> {
    const released = await super.release(keys, token)
    this.countSettled(token, keys.length)
    return released
  }

  /** An UNKNOWN key is no longer held by its token: a later commit of the others may still be the whole batch's. */
  override async markUnknown(keys: readonly string[], token: string, ttlMs: number): Promise<Uint8Array> {
    const marked = await super.markUnknown(keys, token, ttlMs)
    this.countSettled(token, keys.length)
    return marked
  }

  /** A single Redis takes the whole batch in one call; a cluster needs one call per hash slot. */
  protected group(keys: readonly string[], positions: readonly number[]): TagGroup[] {
    const { prefix, hashTags } = this.config
    if (!this.isCluster) return [{ positions, tag: undefined, leasePrefix: `${prefix}t:` }]
    const byTag = new Map<number, TagGroup & { positions: number[] }>()
    for (const i of positions) {
      const tag = hashTagOf(keys[i], hashTags)
      let group = byTag.get(tag)
      if (group === undefined) byTag.set(tag, (group = { positions: [], tag, leasePrefix: `${prefix}{${tag}}t:` }))
      group.positions.push(i)
    }
    return [...byTag.values()]
  }

  protected async claimGroup(g: TagGroup, keys: readonly string[], fingerprints: readonly unknown[], token: string, leaseMs: number, ttlMs: number): Promise<GroupClaim> {
    const reply = (await this.send('claim', g, token, [
      token,
      String(leaseMs),
      String(leaseMs + ttlMs),
      g.leasePrefix,
      this.recordKeys(g, keys),
      pack(g, (i) => (fingerprints[i] as string | null) ?? ''),
    ])) as (string | number)[]
    // { codes, record, ttl, record, ttl… }: read in place, the records start at 1.
    const answers = reply[0] as string
    const n = g.positions.length
    const answer: GroupClaim = { codes: new Uint8Array(n), fingerprints: new Array(n), results: new Array(n), expiresInMs: new Float64Array(n) }
    let next = 1
    for (let j = 0; j < n; j++) {
      if (answers.charCodeAt(j) === 0x30 /* '0' */) continue // CLAIMED is 0
      const record = readRecord(reply[next++] as string)
      ;(answer.expiresInMs as Float64Array)[j] = Number(reply[next++])
      answer.codes[j] = record.done ? ClaimCode.DONE : record.unknown ? ClaimCode.UNKNOWN : ClaimCode.IN_PROGRESS
      if (record.unknown) (answer.tokens ??= new Array(n))[j] = record.token
      answer.fingerprints[j] = record.fingerprint
      answer.results[j] = record.result
    }
    return answer
  }

  protected async commitGroup(g: TagGroup, keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    const { args, keyCount } = this.commitArgs(g, keys, results, token, ttlMs)
    return flags(await this.send('commit', g, token, args, keyCount))
  }

  /**
   * Whether commitOn(client) keeps its promise: a single Redis (a cluster
   * routes by slot, on connections of its own), no requireReplicas (whose WAIT
   * must follow the commit on the connection that wrote it), and `client`
   * connected to this store's server and database without a keyPrefix.
   */
  canCommitOn(client: Redis): boolean {
    const mine = (this.client as Redis).options
    const theirs = client.options
    if (this.isCluster || this.config.requireReplicas > 0 || (theirs.keyPrefix ?? '') !== '') return false
    return mine.host === theirs.host && mine.port === theirs.port && (mine.db ?? 0) === (theirs.db ?? 0) && mine.path === theirs.path
  }

  /**
   * Commits on `client`, another connection to this store's server (a BullMQ
   * Worker's), written before this call returns and with no retry: whatever
   * that client sends next, Redis applies after this commit. A failure is the
   * caller's to apply again through commit().
   */
  commitOn(client: Redis, keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    const committed = this.commitThrough(keys, results, token, (groups, encoded) =>
      Promise.all(
        groups.map((g) => {
          const { args } = this.commitArgs(g, keys, encoded, token, ttlMs)
          return new Promise<Reply>((resolve, reject) => this.rideOn(client, { operation: 'commit', leaseKey: g.leasePrefix + token, args, keys: 1, resolve, reject })).then(flags)
        }),
      ),
    )
    this.countSettled(token, keys.length)
    // A ridden commit skips the retry loop and its permanent(): a reset it met is reported as one here.
    return committed.catch((error: unknown) => {
      const found = resetReplyOf(error)
      throw (found === undefined ? undefined : this.meetIdentity(found)) ?? error
    })
  }

  /**
   * Queues a commit for `client` and sends the queue as one script call in a
   * microtask queued with the first of them. Microtasks run in order, so the
   * call is written before anything the caller does after handing out the
   * outcome (a BullMQ completion takes several microtasks to reach the wire):
   * the commits of the handlers that end in one turn share one call and still
   * go first.
   */
  private rideOn(client: Redis, call: Queued): void {
    let queued = this.riding.get(client)
    if (queued === undefined) {
      this.riding.set(client, (queued = []))
      queueMicrotask(() => {
        this.riding.delete(client)
        defineScripts(client, { idemBatch: { lua: batchLua } })
        this.sendMerged(queued!, client as Redis & ScriptClient)
      })
    }
    queued.push(call)
  }

  private commitArgs(g: TagGroup, keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): { args: string[]; keyCount: number } {
    // Every key the token holds, none with a result to keep: the lease record alone turns DONE
    // (per group: the commit holds every key the token claimed, so each group holds all of its tag's).
    const all = this.claimedPerToken.get(token) === keys.length && (results === undefined || g.positions.every((i) => results[i] === null))
    const args = all
      ? [token, String(ttlMs), 'all', String(g.positions.length)]
      : [token, String(ttlMs), 'each', this.recordKeys(g, keys), pack(g, (i) => (results?.[i] as string | null | undefined) ?? '')]
    return { args, keyCount: all ? 1 : g.positions.length }
  }

  protected async releaseGroup(g: TagGroup, keys: readonly string[], token: string): Promise<Uint8Array> {
    return flags(await this.send('release', g, token, [token, this.recordKeys(g, keys)]))
  }

  protected async renewGroup(g: TagGroup, keys: readonly string[], token: string, leaseMs: number, ttlMs: number): Promise<Uint8Array> {
    return flags(await this.send('renew', g, token, [token, String(leaseMs), String(leaseMs + ttlMs), this.recordKeys(g, keys)]))
  }

  protected async markUnknownGroup(g: TagGroup, keys: readonly string[], token: string, ttlMs: number): Promise<Uint8Array> {
    return flags(await this.send('markUnknown', g, token, [token, String(ttlMs), this.recordKeys(g, keys)]))
  }

  protected async resolveGroup(g: TagGroup, keys: readonly string[], done: readonly boolean[], results: readonly unknown[] | undefined, ttlMs: number, token: string | undefined): Promise<Uint8Array> {
    return flags(
      await this.send('resolve', g, '', [
        String(ttlMs),
        this.recordKeys(g, keys),
        pack(g, (i) => (done[i] ? '1' : '0')).replaceAll('\0', ''),
        pack(g, (i) => (results?.[i] as string | null | undefined) ?? ''),
        token ?? '',
      ]),
    )
  }

  protected async inspectGroup(g: TagGroup, keys: readonly string[]): Promise<(StoredRecord | undefined)[]> {
    const reply = (await this.send('inspect', g, '', [g.leasePrefix, this.recordKeys(g, keys)])) as (string | number)[]
    const states = reply[0] as string
    let next = 1
    return g.positions.map((_, j) => {
      if (states[j] === '-') return undefined
      const record = readRecord(reply[next++] as string)
      return { done: states[j] === 'd', unknown: states[j] === 'u', token: record.token, fingerprint: record.fingerprint, result: record.result, expiresInMs: Number(reply[next++]) }
    })
  }

  protected async forgetGroup(g: TagGroup, keys: readonly string[]): Promise<Uint8Array> {
    return flags(await this.send('forget', g, '', [g.leasePrefix, this.recordKeys(g, keys)]))
  }

  /**
   * SCAN (by pages, on every master of a cluster) for the records of the
   * namespace under this store's prefix, then UNLINK each page's, one call per
   * hash tag: bounded calls, never KEYS, never a flush. The pattern is loose
   * (a glob cannot say "digits"); the exact shape is checked on each key, so a
   * plain key that happens to look like a namespace's is never taken.
   */
  protected async purgeNamespace(namespace: string): Promise<number> {
    const { prefix } = this.config
    const nodes: Redis[] = this.isCluster ? (this.client as Cluster).nodes('master') : [this.client as Redis]
    let removed = 0
    const marker = `}n${Buffer.byteLength(namespace)}:${namespace}:`
    const pattern = `${globEscaped(prefix)}{*${globEscaped(marker)}*`
    for (const node of nodes) {
      removed += await deleteScanned(node, pattern, (key) => {
        const close = key.indexOf('}', prefix.length)
        const tag = key.slice(prefix.length + 1, close)
        if (!key.startsWith(prefix) || !/^\d+$/.test(tag) || !key.startsWith(marker, close)) return undefined
        return tag
      })
    }
    return removed
  }

  protected override errorText(error: unknown): string {
    return this.connectionError === undefined ? errorText(error) : `${errorText(error)} (connection: ${errorText(this.connectionError)})`
  }

  protected async closeBackend(): Promise<void> {
    this.closed = true
    clearInterval(this.identityTimer)
    clearInterval(this.evictionTimer)
    if (!this.ownsClient) return
    try {
      await this.client.quit()
    } catch {
      this.client.disconnect()
    }
  }

  protected override prepare(): Promise<void> | void {
    if (this.serverChecked) {
      if (this.lost !== undefined) throw this.lost
      return
    }
    this.serverCheck ??= this.checkServer().finally(() => (this.serverCheck = undefined))
    return this.serverCheck.then(() => {
      if (this.lost !== undefined) throw this.lost
    })
  }

  /**
   * Refuses, at the first call, a server idem cannot trust: Redis older than 7
   * (its claims would all fail), and one whose maxmemory-policy evicts keys
   * (an evicted DONE record lets a settled key run again, an evicted lease
   * lets a second owner in) unless allowEviction says so. A server that will
   * not say (an ACL user without INFO, a renamed command) is let through: a
   * claim on a server too old then fails on its own syntax.
   *
   * Then the identity record: created at first use, checked against this
   * store's layout (STORE_LAYOUT_MISMATCH), and watched from then on
   * (watchIdentity) for a loss of data.
   */
  private async checkServer(): Promise<void> {
    const info = await readServerInfo(this.client)
    if (info !== undefined) refuseUntrustedServer(info, this.config.allowEviction)
    await this.establishIdentity()
    this.serverChecked = true
    if (this.closed) return
    this.identityTimer = setInterval(this.watchIdentity, IDENTITY_CHECK_MS).unref()
    if (this.config.allowEviction) {
      this.evictedKeys = info === undefined ? undefined : evictedKeysOf(info)
      this.evictionTimer = setInterval(this.watchEvictions, EVICTION_CHECK_MS).unref()
    }
  }

  /**
   * One round trip: SET NX GET creates the identity record when the prefix
   * has none (first use) or answers the one there, so stores starting at once
   * agree on one record. A reset marker found here fails the store closed
   * from its first call; it keeps the lost store's id, so an acknowledgement
   * of that reset lets this store resume like the ones that saw it happen.
   */
  private async establishIdentity(): Promise<void> {
    const { prefix, hashTags } = this.config
    const created = formatIdentity(freshIdentity(hashTags))
    const found = await this.client.set(identityKey(prefix), created, 'NX', 'GET')
    if (found === null) return this.adopt(created, parseIdentity(created)!)
    const identity = acceptIdentity(found, prefix, hashTags)
    if (identity.state === 'ok') return this.adopt(found, identity)
    this.adopt(okRecordOf(found), parseIdentity(okRecordOf(found))!)
    this.detectReset(found)
  }

  private adopt(record: string, identity: StoreIdentity): void {
    this.identityRecord = record
    this.identity = identity
    this.lost = undefined
  }

  /**
   * A record other than the one this store accepted, found by batch.lua (a
   * call or the timer). The acknowledgement of this store's reset (an ok
   * record whose ackOf is this store's id, written by `idem store ack-reset`)
   * is adopted, and the store resumes: undefined, so a call that met it is
   * tried again under it. Adopted also by a store that had not seen the reset
   * yet: the operator accepted the loss for every engine of that store. Any
   * other record (the marker, a second reset, someone else's record) is a
   * loss: the STORE_RESET error, until it restarts or an acknowledgement.
   */
  private meetIdentity(found: string): IdemError | undefined {
    const identity = parseIdentity(found)
    if (!acknowledges(identity, this.identity!)) return this.detectReset(found)
    this.adopt(found, identity!)
    return undefined
  }

  /** The store's data is gone: fail closed from now on, count it and warn, once per loss. */
  private detectReset(found: string): IdemError {
    if (this.lost === undefined) {
      this.lost = resetError(this.config.prefix, found)
      this.health.resets++
      process.emitWarning(this.lost.message, { code: 'IDEM_STORE_RESET' })
    }
    return this.lost
  }

  /**
   * Every IDENTITY_CHECK_MS: batch.lua with no operation, routed to the
   * record's own slot (so on a cluster too), which finds a loss and writes the
   * reset marker without waiting for traffic. A store that failed closed
   * resumes here once the operator acknowledged the reset (meetIdentity). A
   * failed call (the server away) is the calls' to report; one check at a
   * time, so a server away does not pile them up.
   */
  private readonly watchIdentity = (): void => {
    if (this.checkingIdentity) return
    this.checkingIdentity = true
    const key = identityKey(this.config.prefix)
    this.client
      .idemBatch(1, key, key, this.identityRecord, '0')
      .then(
        () => {},
        (error: unknown) => {
          const found = resetReplyOf(error)
          if (found !== undefined) this.meetIdentity(found)
        },
      )
      .finally(() => (this.checkingIdentity = false))
  }

  /**
   * With allowEviction, every EVICTION_CHECK_MS: the growth of the server's
   * evicted_keys (summed over the primaries of a cluster) is counted
   * (evictedKeys in stats) and reported by a warning at most once a minute.
   * evicted_keys counts every key of the server, not only idem's.
   */
  private readonly watchEvictions = (): void => {
    const nodes: Redis[] = this.isCluster ? (this.client as Cluster).nodes('master') : [this.client as Redis]
    Promise.all(nodes.map(async (node) => evictedKeysOf(String(await node.info('stats'))))).then(
      (counts) => {
        const total = counts.reduce<number>((sum, n) => sum + (n ?? 0), 0)
        const grown = this.evictedKeys === undefined ? 0 : Math.max(0, total - this.evictedKeys)
        this.evictedKeys = total
        if (grown === 0) return
        this.health.evictions += grown
        this.unwarnedEvictions += grown
        const now = Date.now()
        if (now - this.evictionWarnedAt < EVICTION_WARNING_MS) return
        process.emitWarning(
          `the redis store's server evicted ${this.unwarnedEvictions} key(s) since the last warning (allowEviction: true): a settled key among them runs again on redelivery, an evicted lease lets a second owner in`,
          { code: 'IDEM_EVICTED_KEYS' },
        )
        this.unwarnedEvictions = 0
        this.evictionWarnedAt = now
      },
      () => {},
    )
  }

  protected override permanent(error: unknown): IdemError | undefined {
    const found = resetReplyOf(error)
    if (found !== undefined) return this.meetIdentity(found)
    return permanentRedisError(error, 'redis store')
  }

  /** The group's record keys, NUL-joined (split-keys.lua). */
  private recordKeys(g: TagGroup, keys: readonly string[]): string {
    const { prefix, hashTags } = this.config
    return pack(g, (i) => recordKey(prefix, g.tag ?? hashTagOf(keys[i], hashTags), keys[i]))
  }

  private countClaimed(token: string, claimed: number): void {
    this.claimedPerToken.set(token, claimed)
    if (this.claimedPerToken.size > MAX_OPEN_TOKENS) this.claimedPerToken.delete(this.claimedPerToken.keys().next().value as string)
  }

  private countSettled(token: string, keys: number): void {
    const left = (this.claimedPerToken.get(token) ?? 0) - keys
    if (left > 0) this.claimedPerToken.set(token, left)
    else this.claimedPerToken.delete(token)
  }

  /**
   * A cluster gets one call per group, sent together so each node gets its
   * groups' calls back to back (an ioredis cluster pipeline would demand one
   * slot). On a single Redis, the operations of this turn from all the shards
   * sharing this store wait for the turn's microtasks to end, then go out
   * together, small ones sharing a call (MERGE_KEYS): one connection, so the
   * server applies them in the order they were made, as separate calls would be.
   */
  private send(operation: StoreOperation, g: TagGroup, token: string, args: string[], keys = g.positions.length): Promise<Reply> {
    const leaseKey = g.leasePrefix + token
    // A cluster call's slot need not hold the identity record: the timer checks it instead (watchIdentity).
    if (this.isCluster) return this.client.idemBatch(1, leaseKey, '', '', '1', operation, leaseKey, String(args.length), ...args).then(onlyReply)
    return new Promise<Reply>((resolve, reject) => {
      if (this.queued.push({ operation, leaseKey, args, keys: Math.max(1, keys), resolve, reject }) === 1) process.nextTick(this.flush)
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

  private sendMerged(calls: Queued[], client: ScriptClient = this.client): void {
    const argv = [identityKey(this.config.prefix), this.identityRecord, String(calls.length)]
    for (const { operation, leaseKey, args } of calls) argv.push(operation, leaseKey, String(args.length), ...args)
    client.idemBatch(1, calls[0].leaseKey, ...argv).then(
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

  /**
   * WAIT on the connection that wrote the claims: a failover to a replica that
   * never got them would let a second owner claim the same keys. A shortfall,
   * or a WAIT that failed, releases this batch's claims (so they do not hold
   * their keys until the lease lapses) and fails the batch: no handler runs.
   */
  private async awaitReplicas(keys: readonly string[], codes: Uint8Array, token: string): Promise<void> {
    const shortfall = await this.replicaShortfall('claims', 'released them, retry later')
    if (shortfall === undefined) return
    const claimed = this.group(keys, [...codes.keys()].filter((i) => codes[i] === ClaimCode.CLAIMED))[0]
    this.claimedPerToken.delete(token)
    await this.send('release', claimed, token, [token, this.recordKeys(claimed, keys)]).catch(() => {})
    throw shortfall
  }

  /**
   * WAIT for requireReplicas replicas to hold what this connection wrote;
   * the error that says why they do not, or undefined when they do.
   */
  private async replicaShortfall(what: 'claims' | 'commits', then: string): Promise<IdemError | undefined> {
    const { requireReplicas, replicaTimeoutMs } = this.config
    let acknowledged: number
    try {
      acknowledged = (await (this.client as Redis).wait(requireReplicas, replicaTimeoutMs)) as number
    } catch (error) {
      return new IdemError(ErrorCode.STORE_FAILED, `redis WAIT after ${what} failed: ${errorText(error)}; ${then}`, { cause: error })
    }
    if (acknowledged >= requireReplicas) return undefined
    return new IdemError(ErrorCode.REPLICA_SHORTFALL, `${what} reached ${acknowledged} of the ${requireReplicas} required replicas within ${replicaTimeoutMs} ms; ${then}`)
  }
}

/** Joins a group's values into the one packed argument the scripts split (split-keys.lua). */
function pack(g: KeyGroup, value: (i: number) => string): string {
  return g.positions.map(value).join('\0')
}

/** A reply of one '1'/'0' character per key. */
function flags(reply: Reply): Uint8Array {
  const answers = reply as string
  const out = new Uint8Array(answers.length)
  for (let j = 0; j < answers.length; j++) out[j] = answers.charCodeAt(j) === 0x31 ? 1 : 0
  return out
}

/** The record batch.lua found (or the reset marker it wrote) when its identity check failed; undefined for any other error. */
function resetReplyOf(error: unknown): string | undefined {
  const text = errorText(error)
  return text.startsWith(RESET_REPLY) ? text.slice(RESET_REPLY.length) : undefined
}

/** The evicted_keys field of INFO (stats). */
function evictedKeysOf(info: string): number | undefined {
  const match = /evicted_keys:(\d+)/.exec(info)
  return match === null ? undefined : Number(match[1])
}
