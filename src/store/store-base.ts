/**
 * The one base under every store (Powertools' BasePersistenceLayer is the
 * model). It owns the semantics of DESIGN.md §2 that do not depend on where
 * records live, once for memory, Redis, PostgreSQL, MySQL and SQLite:
 *
 *  - owner tokens: checked before anything is written;
 *  - repeats: a key twice in one claim is answered REPEAT here, so a backend
 *    never sees a key twice in one call (decided after its first copy settles);
 *  - grouping: the backend splits a batch into groups (a Redis hash tag, a SQL
 *    table), each written by one primitive call; the base scatters the answers
 *    back to batch positions;
 *  - values: results encoded under the store's byte cap (or the CommitCode that
 *    says why a result is not kept), fingerprints and results decoded on the way back;
 *  - failures: bounded retries with doubling backoff (retry.ts), counted in
 *    `health`, then STORE_FAILED: the actor fails closed. Every operation is
 *    safe to repeat under the same token, so an ambiguous failure is harmless.
 *
 * A backend writes only its primitives, one call per group, each answering
 * per key in the group's order: claimGroup, commitGroup, releaseGroup,
 * renewGroup, markUnknownGroup, resolveGroup, inspectGroup, forgetGroup;
 * and purgeNamespace, one call for a whole namespace;
 * plus `group` and `closeBackend`.
 */
import { ErrorCode, IdemError, errorText } from '../errors.js'
import { withRetries } from '../retry.js'
import { invalidKey, KeyStatus, keyStatusOf, type BadKeyStatus } from '../validation.js'
import { decodeFingerprint, decodeResult, encodeFingerprint, encodeResult } from './record-codec.js'
import { ClaimCode, CommitCode, type ClaimReplies, type DedupStore, type KeyView, type StoreHealth } from './store.js'

/** Keys of one batch that one primitive call writes: positions into the batch, in the order the primitive answers. */
export interface KeyGroup {
  readonly positions: readonly number[]
}

/**
 * How a backend keeps fingerprints and results: JSON text for a store outside
 * the process, the values themselves for the memory store (which never leaves
 * its thread, so a result needs no encoding and no cap).
 */
export interface ValueCodec {
  /** The stored form of a result, or the CommitCode that says why it is not kept; null for none. Absent: results are kept as they are. */
  encodeResult?(result: unknown, maxBytes: number): string | null | CommitCode
  decodeResult(stored: unknown): unknown
  encodeFingerprint(fingerprint: string | undefined): unknown
  decodeFingerprint(stored: unknown): string | undefined
}

export const jsonValues: ValueCodec = {
  encodeResult,
  decodeResult: (stored) => decodeResult(stored as string | null | undefined),
  encodeFingerprint,
  decodeFingerprint: (stored) => decodeFingerprint(stored as string | null | undefined),
}

export const plainValues: ValueCodec = {
  decodeResult: (stored) => stored,
  encodeFingerprint: (fingerprint) => fingerprint,
  decodeFingerprint: (stored) => stored as string | undefined,
}

/** A claim primitive's answer for one group. */
export interface GroupClaim {
  /** ClaimCode.CLAIMED, DONE, IN_PROGRESS or UNKNOWN per key (never REPEAT: the base answers those). */
  codes: Uint8Array
  /** For DONE, IN_PROGRESS and UNKNOWN: the stored fingerprint, as the codec keeps it. */
  fingerprints: unknown[]
  /** For UNKNOWN: the token of the claim that was marked. */
  tokens?: (string | null | undefined)[]
  /** For DONE: the stored result, as the codec keeps it. */
  results: unknown[]
  /** For DONE, when the backend can tell: ms until the record expires. */
  expiresInMs?: ArrayLike<number>
}

/** A record as a backend read it for `inspect`, values still encoded. */
export interface StoredRecord {
  done: boolean
  /** An UNKNOWN record (done is false). */
  unknown?: boolean
  token: string
  fingerprint: unknown
  result: unknown
  expiresInMs: number
}

export interface StorePolicy {
  /** The store's name in error messages ('redis', 'postgres'…). */
  name: string
  retries: number
  retryBackoffMs: number
  /** Largest kept result (encoded bytes); ignored by a codec that keeps values. */
  maxResultBytes: number
  values: ValueCodec
}

/** Owner tokens are written into records: at most this many bytes, no NUL or newline (the Redis record's separators). */
export const MAX_TOKEN_BYTES = 255

/** The operations of the store contract, one primitive each. */
export const storeOperations = ['claim', 'commit', 'release', 'renew', 'inspect', 'forget', 'markUnknown', 'resolve'] as const
export type StoreOperation = (typeof storeOperations)[number]

export abstract class StoreBase<G extends KeyGroup = KeyGroup> implements DedupStore {
  readonly health: Required<StoreHealth> = { retries: 0, failures: 0, resets: 0, evictions: 0 }
  /** True when calls are applied in the order they are made (see DedupStore.ordered). */
  abstract readonly ordered: boolean

  constructor(protected readonly policy: StorePolicy) {}

  /** Splits the keys at `positions` into the groups the backend writes with one call each. */
  protected abstract group(keys: readonly string[], positions: readonly number[]): G[]
  protected abstract claimGroup(g: G, keys: readonly string[], fingerprints: readonly unknown[], token: string, leaseMs: number, ttlMs: number): Promise<GroupClaim>
  /** `results` are encoded and indexed by batch position; undefined when results are not kept. 1 = committed (now, or earlier by this token), 0 = fenced. */
  protected abstract commitGroup(g: G, keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array>
  /** 1 = released, or absent already; 0 = another owner's live record, or a DONE one. */
  protected abstract releaseGroup(g: G, keys: readonly string[], token: string): Promise<Uint8Array>
  /** 1 = renewed, 0 = not this token's live lease any more. */
  protected abstract renewGroup(g: G, keys: readonly string[], token: string, leaseMs: number, ttlMs: number): Promise<Uint8Array>
  /** 1 = IN_PROGRESS(token), live or lapsed but not taken over, now UNKNOWN (or UNKNOWN under this token already), 0 = fenced. */
  protected abstract markUnknownGroup(g: G, keys: readonly string[], token: string, ttlMs: number): Promise<Uint8Array>
  /**
   * `done` and `results` (encoded, undefined when none is kept) are indexed by batch position.
   * 1 = was UNKNOWN (under `token`, when given), now DONE or absent; 0 = not: untouched.
   */
  protected abstract resolveGroup(g: G, keys: readonly string[], done: readonly boolean[], results: readonly unknown[] | undefined, ttlMs: number, token: string | undefined): Promise<Uint8Array>
  protected abstract inspectGroup(g: G, keys: readonly string[]): Promise<(StoredRecord | undefined)[]>
  protected abstract forgetGroup(g: G, keys: readonly string[]): Promise<Uint8Array>
  /** Removes every record (any state, expired ones too) of keys "namespace NUL …", in bounded steps; returns how many. */
  protected abstract purgeNamespace(namespace: string): Promise<number>
  protected abstract closeBackend(): Promise<void>
  /** Runs before every attempt: connect, check the schema or the server. May return nothing when there is nothing to wait for, which spares the call an await. */
  protected prepare(): Promise<void> | void {}
  /** A failure no retry can fix, as the error to report now. */
  protected permanent(_error: unknown): IdemError | undefined {
    return undefined
  }
  /** Called on every failed attempt, the last one too: a backend may forget what the failure made stale (a schema check). */
  protected onFailure(_error: unknown): void {}
  /** The failure as a readable text, with the driver's code when it has one. */
  protected errorText(error: unknown): string {
    return errorText(error)
  }

  async claim(keys: readonly string[], fingerprints: readonly (string | undefined)[], token: string, leaseMs: number, ttlMs: number): Promise<ClaimReplies> {
    checkToken(token)
    const n = keys.length
    const codes = new Uint8Array(n)
    const storedFingerprints: (string | undefined)[] = new Array(n)
    const results: unknown[] = new Array(n)
    let doneExpiresInMs: Float64Array | undefined
    let unknownTokens: (string | undefined)[] | undefined
    const firsts = firstCopies(keys, codes)
    const { values } = this.policy
    const encoded = fingerprints.map((f) => values.encodeFingerprint(f))
    const groups = this.group(keys, firsts)
    const answers = await this.run('claim', () => Promise.all(groups.map((g) => this.claimGroup(g, keys, encoded, token, leaseMs, ttlMs))))
    for (let k = 0; k < groups.length; k++) {
      const { positions } = groups[k]
      const answer = answers[k]
      for (let j = 0; j < positions.length; j++) {
        const i = positions[j]
        const code = answer.codes[j] as ClaimCode
        codes[i] = code
        if (code === ClaimCode.CLAIMED) continue
        storedFingerprints[i] = values.decodeFingerprint(answer.fingerprints[j])
        if (code === ClaimCode.UNKNOWN) (unknownTokens ??= new Array(n))[i] = answer.tokens?.[j] ?? undefined
        if (code !== ClaimCode.DONE) continue
        results[i] = values.decodeResult(answer.results[j])
        if (answer.expiresInMs !== undefined) (doneExpiresInMs ??= new Float64Array(n))[i] = answer.expiresInMs[j]
      }
    }
    const replies: ClaimReplies = { codes, fingerprints: storedFingerprints, results, doneExpiresInMs }
    if (unknownTokens !== undefined) replies.unknownTokens = unknownTokens
    return replies
  }

  async commit(keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    return this.commitThrough(keys, results, token, (groups, encoded) => this.run('commit', () => Promise.all(groups.map((g) => this.commitGroup(g, keys, encoded, token, ttlMs)))))
  }

  /**
   * A commit's encoding and scatter around `send`, which writes the groups: the
   * store's own retried calls (commit), or a backend's other way to send one
   * (RedisStore.commitOn). `send` is called synchronously.
   */
  protected async commitThrough(
    keys: readonly string[],
    results: readonly unknown[] | undefined,
    token: string,
    send: (groups: G[], encoded: readonly unknown[] | undefined) => Promise<Uint8Array[]>,
  ): Promise<Uint8Array> {
    checkToken(token)
    const n = keys.length
    const kept = new Uint8Array(n).fill(CommitCode.COMMITTED)
    const encoded = this.encodeResults(results, kept)
    const groups = this.group(keys, allPositions(n))
    const answers = await send(groups, encoded)
    return scatter(n, groups, answers, (i, applied) => (applied ? kept[i] : CommitCode.REFUSED))
  }

  /** Results in the stored form; where one is not kept, null, and `kept` says why (the key is done all the same). */
  private encodeResults(results: readonly unknown[] | undefined, kept: Uint8Array): readonly unknown[] | undefined {
    const encode = this.policy.values.encodeResult
    if (results === undefined || encode === undefined) return results
    const json: (string | null)[] = new Array(results.length)
    for (let i = 0; i < results.length; i++) {
      const value = encode(results[i], this.policy.maxResultBytes)
      if (typeof value === 'number') {
        kept[i] = value
        json[i] = null
      } else json[i] = value
    }
    return json
  }

  async release(keys: readonly string[], token: string): Promise<Uint8Array> {
    checkToken(token)
    const groups = this.group(keys, allPositions(keys.length))
    const answers = await this.run('release', () => Promise.all(groups.map((g) => this.releaseGroup(g, keys, token))))
    return scatter(keys.length, groups, answers, (_, applied) => Number(applied))
  }

  async renew(keys: readonly string[], token: string, leaseMs: number, ttlMs: number): Promise<Uint8Array> {
    checkToken(token)
    const groups = this.group(keys, allPositions(keys.length))
    const answers = await this.run('renew', () => Promise.all(groups.map((g) => this.renewGroup(g, keys, token, leaseMs, ttlMs))))
    return scatter(keys.length, groups, answers, (_, applied) => Number(applied))
  }

  async markUnknown(keys: readonly string[], token: string, ttlMs: number): Promise<Uint8Array> {
    checkToken(token)
    const groups = this.group(keys, allPositions(keys.length))
    const answers = await this.run('markUnknown', () => Promise.all(groups.map((g) => this.markUnknownGroup(g, keys, token, ttlMs))))
    return scatter(keys.length, groups, answers, (_, applied) => Number(applied))
  }

  async resolve(keys: readonly string[], done: readonly boolean[], results: readonly unknown[] | undefined, ttlMs: number, token?: string): Promise<Uint8Array> {
    if (done.length !== keys.length || (results !== undefined && results.length !== keys.length)) throw new IdemError(ErrorCode.INVALID_MESSAGE, 'resolve: done (and results, when given) must have one entry per key')
    if (token !== undefined) checkToken(token)
    // A result that cannot be kept resolves the key all the same, without it (as a commit does), and the code says why.
    const kept = new Uint8Array(keys.length).fill(CommitCode.COMMITTED)
    const encoded = this.encodeResults(results, kept)
    const groups = this.group(keys, allPositions(keys.length))
    const answers = await this.run('resolve', () => Promise.all(groups.map((g) => this.resolveGroup(g, keys, done, encoded, ttlMs, token))))
    return scatter(keys.length, groups, answers, (i, applied) => (!applied ? CommitCode.REFUSED : done[i] ? kept[i] : CommitCode.COMMITTED))
  }

  async inspect(keys: readonly string[]): Promise<(KeyView | undefined)[]> {
    const groups = this.group(keys, allPositions(keys.length))
    const answers = await this.run('inspect', () => Promise.all(groups.map((g) => this.inspectGroup(g, keys))))
    const { values } = this.policy
    const out: (KeyView | undefined)[] = new Array(keys.length).fill(undefined)
    groups.forEach((g, k) =>
      g.positions.forEach((i, j) => {
        const record = answers[k][j]
        if (record === undefined) return
        out[i] = {
          state: record.done ? 'done' : record.unknown === true ? 'unknown' : 'in-progress',
          token: record.token,
          fingerprint: values.decodeFingerprint(record.fingerprint),
          result: record.done ? values.decodeResult(record.result) : undefined,
          expiresInMs: record.expiresInMs,
        }
      }),
    )
    return out
  }

  async forget(keys: readonly string[]): Promise<Uint8Array> {
    const groups = this.group(keys, allPositions(keys.length))
    const answers = await this.run('forget', () => Promise.all(groups.map((g) => this.forgetGroup(g, keys))))
    return scatter(keys.length, groups, answers, (_, removed) => Number(removed))
  }

  async purge(namespace: string): Promise<number> {
    const status = keyStatusOf(namespace)
    if (status !== KeyStatus.OK) throw invalidKey('namespace', status as BadKeyStatus, namespace)
    return this.run('purge', () => this.purgeNamespace(namespace))
  }

  async close(): Promise<void> {
    await this.closeBackend()
  }

  /** One operation, all its groups, retried as a whole. */
  private run<T>(operation: StoreOperation | 'purge', call: () => Promise<T>): Promise<T> {
    const { name, retries, retryBackoffMs } = this.policy
    return withRetries(
      async () => {
        const preparing = this.prepare()
        if (preparing !== undefined) await preparing
        return call()
      },
      { retries, backoffMs: retryBackoffMs },
      {
        permanent: (error) => {
          const permanent = error instanceof IdemError ? error : this.permanent(error)
          if (permanent !== undefined) this.health.failures++
          return permanent
        },
        onFailure: (error) => this.onFailure(error),
        onRetry: () => {
          this.health.retries++
        },
        exhausted: (error, attempts) => {
          this.health.failures++
          return new IdemError(ErrorCode.STORE_FAILED, `${name} ${operation} failed after ${attempts} attempt(s): ${this.errorText(error)}`, { cause: error })
        },
      },
    )
  }
}

export function checkToken(token: string): void {
  if (typeof token !== 'string' || token.length === 0 || /[\0\n]/.test(token) || Buffer.byteLength(token) > MAX_TOKEN_BYTES) {
    throw new IdemError(ErrorCode.INVALID_MESSAGE, `owner token must be a non-empty string of at most ${MAX_TOKEN_BYTES} bytes without NUL or newline, got ${JSON.stringify(token)}`)
  }
}

/** Positions of the first copy of each key; later copies are marked REPEAT in `codes`. */
function firstCopies(keys: readonly string[], codes: Uint8Array): number[] {
  const seen = new Set<string>()
  const firsts: number[] = []
  for (let i = 0; i < keys.length; i++) {
    if (seen.has(keys[i])) codes[i] = ClaimCode.REPEAT
    else {
      seen.add(keys[i])
      firsts.push(i)
    }
  }
  return firsts
}

function allPositions(n: number): number[] {
  const positions = new Array<number>(n)
  for (let i = 0; i < n; i++) positions[i] = i
  return positions
}

/** Per-group answers (1/0 per key in group order) → one code per batch position. */
function scatter(n: number, groups: readonly KeyGroup[], answers: readonly ArrayLike<number>[], code: (i: number, applied: boolean) => number): Uint8Array {
  const out = new Uint8Array(n)
  for (let k = 0; k < groups.length; k++) {
    const { positions } = groups[k]
    for (let j = 0; j < positions.length; j++) out[positions[j]] = code(positions[j], answers[k][j] === 1)
  }
  return out
}
