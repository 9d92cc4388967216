import type { Redis } from 'ioredis'
import { ErrorCode, errorText, IdemError } from '../errors.js'
import { withRetries } from '../retry.js'
import type { RedisStoreConfig } from '../store/redis/redis-options.js'
import { singleRedisClient } from '../store/redis/redis-client.js'
import { permanentRedisError } from '../store/redis/redis-errors.js'
import { hashTagOf, readRecord, recordKey } from '../store/redis/redis-records.js'
import { defineScripts, readLua } from '../store/redis/script-loader.js'
import { readServerInfo, refuseUntrustedServer } from '../store/redis/server-check.js'
import { acceptIdentity, formatIdentity, freshIdentity, identityKey, resetError } from '../store/redis/store-identity.js'
import type { Heartbeat, HeldPartition, LogEntry, PartitionCommit, PartitionCommitReply, PartitionStore, ReadRecord, Snapshot } from './partition-store.js'

type OwnedClient = Redis & {
  idemHeartbeat(members: string, identity: string, ...args: string[]): Promise<[string, ...string[]]>
  idemAcquire(...args: string[]): Promise<number[]>
  idemRelease(...args: string[]): Promise<number>
  idemGroupCommit(identity: string, ...args: (string | Buffer)[]): Promise<[string, string, number][]>
  idemWriteSnapshot(epochKey: string, snapshotKey: string, ...args: (string | Buffer)[]): Promise<number>
  idemReadRecords(keys: string): Promise<(string | number)[]>
}

/** The strict store's identity check (a record gone becomes the reset marker), prepended to the scripts that fail closed on it. */
const checkIdentityLua = readLua(import.meta.url, '../store/redis/check-identity.lua')
/** The strict store's `split` of NUL-joined arguments, prepended to the scripts that take packed keys. */
const splitLua = readLua(import.meta.url, '../store/redis/split-keys.lua')

const scripts = {
  idemHeartbeat: { lua: `${checkIdentityLua}\n${readLua(import.meta.url, 'heartbeat.lua')}`, numberOfKeys: 2 },
  idemAcquire: { lua: readLua(import.meta.url, 'acquire.lua'), numberOfKeys: 0 },
  idemRelease: { lua: readLua(import.meta.url, 'release.lua'), numberOfKeys: 0 },
  idemGroupCommit: { lua: `${checkIdentityLua}\n${splitLua}\n${readLua(import.meta.url, 'group-commit.lua')}`, numberOfKeys: 1 },
  idemWriteSnapshot: { lua: readLua(import.meta.url, 'write-snapshot.lua'), numberOfKeys: 2 },
  idemReadRecords: { lua: `${splitLua}\n${readLua(import.meta.url, 'read-records.lua')}`, numberOfKeys: 0 },
}

const RESET_REPLY = 'IDEM_STORE_RESET '

/**
 * Owned mode's store on a single Redis. Under `${prefix}own:${group}:` it
 * keeps the partition count, the members (a sorted set by expiry), each
 * partition's lease ("member\nepoch", PX), epoch (never expires), log (a
 * stream of hashes, trimmed to the dedup window) and snapshot (a hash). The
 * key records are the strict store's (same names, same layout), so `idem
 * keys` reads and resolves them alike, and the store's identity record is
 * shared with it: a Redis that lost its data fails heartbeats and group
 * commits closed (STORE_RESET) until an engine restarts after `idem store ack-reset`.
 */
export class RedisPartitionStore implements PartitionStore {
  private readonly client: OwnedClient
  private readonly ownsClient: boolean
  private readonly base: string
  /** Group commits waiting for this turn's call. */
  private queuedCommits: { parts: PartitionCommit[]; ttlMs: number; resolve: (replies: PartitionCommitReply[]) => void; reject: (error: unknown) => void }[] = []
  /** The identity record accepted at checkPartitions, compared by every heartbeat and group commit. */
  private identity = ''

  constructor(
    private readonly config: RedisStoreConfig,
    group: string,
  ) {
    const { client, owned } = singleRedisClient<OwnedClient>(config)
    this.client = client
    this.ownsClient = owned
    defineScripts(this.client, scripts)
    this.base = `${config.prefix}own:${group}:`
  }

  /**
   * First the server, as the strict store checks it (server-check.ts): an
   * evicted lease or epoch would let a second owner in. Then the identity
   * record, accepted or created as the strict store does; a reset marker
   * fails closed here. Then the partition count, recorded at first use.
   */
  async checkPartitions(partitions: number): Promise<void> {
    await this.call('check', async () => {
      const { prefix, hashTags, allowEviction } = this.config
      const info = await readServerInfo(this.client)
      if (info !== undefined) refuseUntrustedServer(info, allowEviction)
      const created = formatIdentity(freshIdentity(hashTags))
      const found = await this.client.set(identityKey(prefix), created, 'NX', 'GET')
      if (found === null) this.identity = created
      else {
        const identity = acceptIdentity(found, prefix, hashTags)
        if (identity.state !== 'ok') throw resetError(prefix, found)
        this.identity = found
      }
    })
    const key = `${this.base}partitions`
    const stored = await this.call('check', () => this.client.set(key, String(partitions), 'NX', 'GET'))
    if (stored !== null && stored !== String(partitions)) {
      throw new IdemError(
        ErrorCode.PARTITIONS_MISMATCH,
        `the group was set up with ${/^\d+$/.test(stored) ? `${stored} partitions` : `${JSON.stringify(stored.slice(0, 100))} as its partition count`} (${JSON.stringify(key)}), this engine has ${partitions}: keys would map to other partitions (partitions is fixed per deployment)`,
      )
    }
  }

  async heartbeat(member: string, leaseMs: number, held: HeldPartition[]): Promise<Heartbeat> {
    const args = [member, String(leaseMs), `${this.base}lease:`]
    for (const { partition, epoch } of held) args.push(String(partition), String(epoch))
    const [flags, ...members] = await this.call('heartbeat', () => this.client.idemHeartbeat(`${this.base}members`, identityKey(this.config.prefix), this.identity, ...args))
    const renewed = held.map((_, k) => flags.charCodeAt(k) === 0x31)
    return { members: members.sort(), renewed }
  }

  async acquire(member: string, partitions: number[], leaseMs: number): Promise<number[]> {
    const epochs = await this.call('acquire', () => this.client.idemAcquire(member, String(leaseMs), `${this.base}lease:`, `${this.base}epoch:`, ...partitions.map(String)))
    return epochs.map(Number)
  }

  async release(member: string, held: HeldPartition[]): Promise<void> {
    const args = [member, `${this.base}lease:`]
    for (const { partition, epoch } of held) args.push(String(partition), String(epoch))
    await this.call('release', () => this.client.idemRelease(...args))
  }

  async leave(member: string): Promise<void> {
    await this.call('leave', () => this.client.zrem(`${this.base}members`, member))
  }

  async read(keys: string[]): Promise<ReadRecord[]> {
    const { prefix, hashTags } = this.config
    const names = keys.map((key) => recordKey(prefix, hashTagOf(key, hashTags), key)).join('\0')
    const reply = await this.call('read', () => this.client.idemReadRecords(names))
    return keys.map((_, k) => {
      const text = reply[2 * k] as string
      if (text === '') return { state: 'absent', fingerprint: '', result: '', token: '', expiresInMs: 0 }
      const record = readRecord(text)
      return {
        state: record.done ? 'done' : record.unknown ? 'unknown' : 'in-progress',
        fingerprint: record.fingerprint,
        result: record.result,
        token: record.token,
        expiresInMs: Math.max(0, Number(reply[2 * k + 1])),
      }
    })
  }

  /**
   * The group commits the shards make in one turn of the event loop share one
   * script call (their partitions differ: a partition lives in one shard),
   * as the strict store's small operations do.
   */
  groupCommit(parts: PartitionCommit[], ttlMs: number): Promise<PartitionCommitReply[]> {
    return new Promise((resolve, reject) => {
      if (this.queuedCommits.length === 0) queueMicrotask(this.sendCommits)
      this.queuedCommits.push({ parts, ttlMs, resolve, reject })
    })
  }

  private readonly sendCommits = (): void => {
    const queued = this.queuedCommits
    this.queuedCommits = []
    for (const ttlMs of new Set(queued.map((q) => q.ttlMs))) {
      const same = queued.filter((q) => q.ttlMs === ttlMs)
      this.commitNow(
        same.flatMap((q) => q.parts),
        ttlMs,
      ).then(
        (replies) => {
          let at = 0
          for (const q of same) {
            q.resolve(replies.slice(at, at + q.parts.length))
            at += q.parts.length
          }
        },
        (error: unknown) => same.forEach((q) => q.reject(error)),
      )
    }
  }

  private async commitNow(parts: PartitionCommit[], ttlMs: number): Promise<PartitionCommitReply[]> {
    const { prefix, hashTags } = this.config
    const args: (string | Buffer)[] = [String(ttlMs), `${this.base}epoch:`, `${this.base}log:`, String(parts.length)]
    for (const part of parts) {
      const n = part.keys.length
      let kinds = ''
      const names: string[] = new Array(n)
      const fingerprints: string[] = new Array(n)
      const results: string[] = new Array(n)
      for (let k = 0; k < n; k++) {
        const key = part.keys[k]
        kinds += key.unknown ? 'u' : 'd'
        names[k] = recordKey(prefix, hashTagOf(key.key, hashTags), key.key)
        fingerprints[k] = key.fingerprint
        // An UNKNOWN record's since is Redis's clock (group-commit.lua), so its result is not sent.
        results[k] = key.unknown ? '' : key.result
      }
      args.push(String(part.partition), String(part.epoch), part.token, part.hashes, kinds, names.join('\0'), fingerprints.join('\0'), results.join('\0'))
    }
    // Safe to repeat: the same records again, and a second log entry of the same hashes.
    const reply = await this.call('group commit', () => this.client.idemGroupCommit(identityKey(prefix), this.identity, ...args))
    return reply.map(([status, logId, storeEpoch]) => ({ status: status as PartitionCommitReply['status'], logId, storeEpoch: Number(storeEpoch) }))
  }

  async writeSnapshot(partition: number, snapshot: Snapshot): Promise<boolean> {
    const written = await this.call('snapshot', () =>
      this.client.idemWriteSnapshot(`${this.base}epoch:${partition}`, `${this.base}snap:${partition}`, String(snapshot.epoch), snapshot.bytes, snapshot.logId, String(snapshot.generationStartedAt)),
    )
    return written === 1
  }

  async readSnapshot(partition: number): Promise<Snapshot | undefined> {
    const fields = await this.call('snapshot', () => this.client.hgetallBuffer(`${this.base}snap:${partition}`))
    if (Object.keys(fields).length === 0) return undefined
    const logId = fields.logId?.toString() ?? ''
    const generationStartedAt = Number(fields.generationStartedAt?.toString() ?? NaN)
    const epoch = Number(fields.epoch?.toString() ?? NaN)
    // A hash missing a field, or holding one that is not what writeSnapshot wrote, reads as an
    // empty snapshot: the caller refuses it and replays the whole log, which is always safe.
    const whole = fields.bytes !== undefined && /^\d+-\d+$/.test(logId) && Number.isFinite(generationStartedAt) && Number.isInteger(epoch)
    if (!whole) return { bytes: Buffer.alloc(0), logId: '0-0', generationStartedAt: Number.isFinite(generationStartedAt) ? generationStartedAt : 0, epoch: Number.isInteger(epoch) ? epoch : 0 }
    return { bytes: fields.bytes, logId, generationStartedAt, epoch }
  }

  async readLog(partition: number, afterId: string, count: number): Promise<LogEntry[]> {
    const entries = await this.call('log read', () => this.client.xrangeBuffer(`${this.base}log:${partition}`, `(${afterId}`, '+', 'COUNT', count))
    return entries.map(([id, fields]) => {
      let hashes: Buffer = Buffer.alloc(0)
      for (let f = 0; f + 1 < fields.length; f += 2) if (fields[f].toString() === 'h') hashes = fields[f + 1]
      return { id: id.toString(), hashes }
    })
  }

  async epochOf(partition: number): Promise<number> {
    return Number((await this.call('epoch read', () => this.client.get(`${this.base}epoch:${partition}`))) ?? 0)
  }

  async close(): Promise<void> {
    if (!this.ownsClient) return
    try {
      await this.client.quit()
    } catch {
      this.client.disconnect()
    }
  }

  /** One call with the store's bounded retries; a changed identity record fails closed at once (STORE_RESET). */
  private call<T>(what: string, run: () => Promise<T>): Promise<T> {
    return withRetries(run, { retries: this.config.retries, backoffMs: this.config.retryBackoffMs }, {
      permanent: (error) => {
        if (error instanceof IdemError) return error
        const text = errorText(error)
        if (text.startsWith(RESET_REPLY)) return resetError(this.config.prefix, text.slice(RESET_REPLY.length))
        return permanentRedisError(error, `owned mode ${what}`)
      },
      exhausted: (error, attempts) => new IdemError(ErrorCode.STORE_FAILED, `owned mode ${what} failed after ${attempts} attempts: ${errorText(error)}`, { cause: error }),
    })
  }
}
