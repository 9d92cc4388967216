/**
 * The bloom filter of `idem/bloom`: idem's WASM core for users who want it on
 * its own, keyed by strings. It puts a small, checked surface over the two
 * internal pieces the engine drives directly: BloomFilter (generations, the
 * per-key path, snapshots) and KeyHasher (a batch of strings packed into wasm
 * memory and hashed in one call). Nothing here holds a pointer or a view of
 * its own; the wasm stays behind wasm.ts.
 */
import { systemClock, type Clock } from '../clock.js'
import { ConfigError, ErrorCode, IdemError } from '../errors.js'
import { BloomFilter, invalidSnapshot } from './bloom-filter.js'
import { DEFAULT_MAX_BATCH_KEYS, KeyHasher, KeyStatus } from './key-hasher.js'
import { invalidKey, mustBe, type BadKeyStatus } from '../validation.js'

export interface KeyBloomOptions {
  /**
   * Keys one generation holds at `falsePositiveRate`: the distinct keys you
   * expect per `ttlMs` (or between two calls of rotate()). Past it the filter
   * keeps working, but its false-positive rate climbs above the target (stats()
   * shows by how much). Memory: two generations of m bits each, m = -n ln p /
   * ln²2 (9.6 bits per key at 1%, 14.4 at 0.1%), so 1,000,000 keys at 1% take
   * 2 × 1.2 MB. A generation holds at most 2^32 bits.
   */
  expectedItems: number
  /**
   * The target rate, in (0, 0.5], at which has() says "maybe seen" for a key
   * it never saw, with `expectedItems` keys in the filter. Each halving costs
   * about 1.44 bits per key and one more probe per call (k = m/n ln 2, 1 to 16).
   * @default 0.01
   */
  falsePositiveRate?: number
  /**
   * How long one generation spans, in ms. With it, the filter rotates by
   * itself: a key is remembered for at least ttlMs after it was added, and
   * forgotten once two generations have passed over it (about 2 × ttlMs on
   * steady traffic). Without it, the filter only forgets when you call rotate().
   * Cost: one clock read per call (per batch for the batch methods).
   * @default undefined (rotate() by hand)
   */
  ttlMs?: number
  /**
   * Where ttlMs reads the time: anything with `now()` in ms (idem's ManualClock
   * in tests, so a TTL test moves time instead of sleeping).
   * @default Date.now
   */
  clock?: Clock
  /**
   * Keys packed and hashed per wasm call by the batch methods; longer batches
   * run in chunks of this size. Cost: the first batch call reserves
   * maxBatchKeys × 1 KiB of wasm memory for packing (4 MiB at the default),
   * kept for the filter's life; the per-key methods never reserve it.
   * @default 4096
   */
  maxBatchKeys?: number
}

export interface KeyBloomStats {
  /** The options the filter was built with: the capacity of one generation and its target rate. */
  expectedItems: number
  falsePositiveRate: number
  /** Bits per generation (m) and probes per key (k). */
  bits: number
  k: number
  /** Memory of both generations, in bytes. */
  bytes: number
  /** Share of bits set, measured: 0 empty, about 0.5 at `expectedItems` keys. */
  fill: { current: number; previous: number }
  /** Distinct keys each generation holds, estimated from its fill (-m/k ln(1 - fill)); repeats do not count. */
  estimatedItems: { current: number; previous: number }
  /** The rate at which a never-seen key is answered "maybe seen" now, from the measured fill of both generations (either one can answer). */
  estimatedFalsePositiveRate: number
  /** Rotations so far, by hand or by ttlMs. */
  rotations: number
}

const DEFAULT_FALSE_POSITIVE_RATE = 0.01
/** ttlMs is kept below 2^42 ms (~139 years), like the engine's. */
const MAX_TTL_MS = 2 ** 42

/** What this file checks itself; expectedItems, falsePositiveRate and maxBatchKeys are BloomFilter's to check. */
function ownOptionProblems(options: KeyBloomOptions): string[] {
  const problems: string[] = []
  const { ttlMs, clock } = options
  if (ttlMs !== undefined && !(Number.isInteger(ttlMs) && ttlMs >= 1 && ttlMs <= MAX_TTL_MS)) {
    problems.push(`ttlMs: must be an integer from 1 to 2^42, got ${String(ttlMs)}`)
  }
  if (clock !== undefined && typeof (clock as Partial<Clock> | null)?.now !== 'function') {
    problems.push(`clock: must be an object with a now() method, got ${String(clock)}`)
  }
  return problems
}

/**
 * A bloom filter of string keys with two generations: "never seen" is
 * certain, "maybe seen" is wrong at about `falsePositiveRate` (so confirm a
 * "maybe seen" where a wrong one would cost you). Keys are strings of 1 to
 * 1024 UTF-8 bytes, well-formed (no lone surrogate) and without U+0000, the
 * same rule as idem's idempotency keys; anything else throws INVALID_KEY.
 *
 * ```ts
 * const seen = new KeyBloomFilter({ expectedItems: 1_000_000, falsePositiveRate: 0.01, ttlMs: 3_600_000 })
 * if (!seen.testAndAdd(event.id)) handleFirstTime(event)   // false: certainly new
 * const repeats = seen.testAndAddBatch(ids)                 // 1 = maybe seen, 0 = new, per key
 * ```
 */
export class KeyBloomFilter {
  readonly #expectedItems: number
  readonly #falsePositiveRate: number
  readonly #maxBatchKeys: number
  readonly #ttlMs: number | undefined
  readonly #clock: Clock
  /** Replaced whole by restore(). */
  #filter: BloomFilter
  /** Made on the first batch call: its packing buffer is the big part of a small filter. */
  #hasher: KeyHasher | undefined
  /** Scratch for the batch methods, grown to the longest batch seen. */
  #hashes = new Uint32Array(0)
  #status = new Uint8Array(0)
  #generationStartedAt: number
  #rotations = 0

  /** Throws ConfigError (INVALID_CONFIG) naming every bad option. */
  constructor(options: KeyBloomOptions) {
    if (options === null || typeof options !== 'object') throw new ConfigError([`options: must be an object, got ${String(options)}`])
    const falsePositiveRate = options.falsePositiveRate ?? DEFAULT_FALSE_POSITIVE_RATE
    const maxBatchKeys = options.maxBatchKeys ?? DEFAULT_MAX_BATCH_KEYS
    const problems = ownOptionProblems(options)
    let filter: BloomFilter | undefined
    try {
      filter = new BloomFilter({ expectedItems: options.expectedItems, falsePositiveRate, maxBatchKeys })
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error
      problems.unshift(...error.problems)
    }
    if (filter === undefined || problems.length > 0) throw new ConfigError(problems)
    this.#filter = filter
    this.#expectedItems = options.expectedItems
    this.#falsePositiveRate = falsePositiveRate
    this.#maxBatchKeys = maxBatchKeys
    this.#ttlMs = options.ttlMs
    this.#clock = options.clock ?? systemClock
    this.#generationStartedAt = this.#clock.now()
  }

  /** Adds the key. */
  add(key: string): void {
    this.#rotateIfDue()
    this.#filter.add(key)
  }

  /** false: the key was never added (within the last one to two generations). true: maybe it was. Adds nothing. */
  has(key: string): boolean {
    this.#rotateIfDue()
    return this.#filter.has(key)
  }

  /** has(key), then add(key), in one probe: the dedup question. */
  testAndAdd(key: string): boolean {
    this.#rotateIfDue()
    return this.#filter.testAndAdd(key)
  }

  /**
   * Adds every key. The keys are checked first: one bad key throws INVALID_KEY
   * naming its index, and nothing of the batch is added.
   */
  addBatch(keys: readonly string[]): void {
    const n = this.#hashBatch(keys)
    // The statuses are read by now: their array takes the answers nobody asked for.
    this.#filter.testAndAddHashes(this.#hashes, n, this.#status)
  }

  /** has() for each key: 1 maybe seen, 0 never seen. Adds nothing. Bad keys as for addBatch(). */
  hasBatch(keys: readonly string[]): Uint8Array {
    const n = this.#hashBatch(keys)
    const maybeSeen = new Uint8Array(n)
    this.#filter.testHashes(this.#hashes, n, maybeSeen)
    return maybeSeen
  }

  /**
   * testAndAdd() for each key in order, so a key repeated inside the batch is
   * "maybe seen" at its second copy. Bad keys as for addBatch().
   */
  testAndAddBatch(keys: readonly string[]): Uint8Array {
    const n = this.#hashBatch(keys)
    const maybeSeen = new Uint8Array(n)
    this.#filter.testAndAddHashes(this.#hashes, n, maybeSeen)
    return maybeSeen
  }

  /** Forgets the previous generation; the current one becomes previous and a new one starts. */
  rotate(): void {
    this.#filter.rotate()
    this.#rotations++
    this.#generationStartedAt = this.#clock.now()
  }

  /** Forgets every key. */
  clear(): void {
    this.#filter.clear()
    this.#generationStartedAt = this.#clock.now()
  }

  /** Measured, not counted: costs one pass over both generations (popcount), so call it for reporting, not per key. */
  stats(): KeyBloomStats {
    const { bits, k, bytes, setBits, estimatedFalsePositiveRate } = this.#filter.stats()
    const fill = { current: setBits[0] / bits, previous: setBits[1] / bits }
    const itemsAt = (share: number): number => (share >= 1 ? Infinity : Math.round((-bits / k) * Math.log1p(-share)))
    return {
      expectedItems: this.#expectedItems,
      falsePositiveRate: this.#falsePositiveRate,
      bits,
      k,
      bytes,
      fill,
      estimatedItems: { current: itemsAt(fill.current), previous: itemsAt(fill.previous) },
      estimatedFalsePositiveRate,
      rotations: this.#rotations,
    }
  }

  /**
   * Both generations and the sizing, as bytes to store anywhere (32 bytes of
   * header + m/4). Little-endian, so a snapshot moves between machines. The
   * ttlMs clock is not in it: a restored filter starts a new generation period.
   */
  snapshot(): Uint8Array {
    return this.#filter.snapshot()
  }

  /**
   * A filter built from `options`, holding the keys of `snapshot`. Throws
   * BLOOM_SNAPSHOT_INVALID for bytes that are not an intact snapshot, and for
   * a snapshot of another size (expectedItems and falsePositiveRate giving
   * another m or k), so a filter resized in your config never silently keeps
   * the old size. Holds the filter's memory twice while it reads.
   */
  static restore(snapshot: Uint8Array, options: KeyBloomOptions): KeyBloomFilter {
    const filter = new KeyBloomFilter(options)
    if (!(snapshot instanceof Uint8Array)) {
      throw invalidSnapshot(`a snapshot is a Uint8Array or Buffer, got ${snapshot === null ? 'null' : typeof snapshot}`)
    }
    const restored = BloomFilter.restore(snapshot, { maxBatchKeys: filter.#maxBatchKeys })
    const own = filter.#filter
    if (restored.bits !== own.bits || restored.k !== own.k) {
      throw invalidSnapshot(
        `it holds a filter of ${restored.bits} bits and k = ${restored.k}; expectedItems ${filter.#expectedItems} at ` +
          `falsePositiveRate ${filter.#falsePositiveRate} gives ${own.bits} bits and k = ${own.k}`,
      )
    }
    filter.#filter = restored
    return filter
  }

  /**
   * Each generation spans ttlMs, as in the engine's shard actor: current +
   * previous then cover at least the last ttlMs, so a key is never forgotten
   * inside it. Two periods gone means both generations are past it.
   */
  #rotateIfDue(): void {
    if (this.#ttlMs === undefined) return
    const now = this.#clock.now()
    const elapsed = now - this.#generationStartedAt
    if (elapsed < this.#ttlMs) return
    if (elapsed >= 2 * this.#ttlMs) {
      this.#filter.clear()
      this.#rotations += 2
    } else {
      this.#filter.rotate()
      this.#rotations++
    }
    this.#generationStartedAt = now
  }

  /** Checks and hashes the whole batch into #hashes before anything is added; returns its length. */
  #hashBatch(keys: readonly string[]): number {
    if (!Array.isArray(keys)) {
      throw new IdemError(ErrorCode.INVALID_KEY, mustBe('keys', 'an array of keys', keys))
    }
    this.#rotateIfDue()
    const n = keys.length
    if (this.#status.length < n) {
      this.#hashes = new Uint32Array(2 * n)
      this.#status = new Uint8Array(n)
    }
    this.#hasher ??= new KeyHasher({ maxBatchKeys: this.#maxBatchKeys })
    // shardCount 0: no jump hash, so no shards array is written.
    if (this.#hasher.hash(keys, 0, this.#hashes, NO_SHARDS, this.#status) > 0) {
      const index = this.#status.findIndex((status, i) => i < n && status !== KeyStatus.OK)
      const key: unknown = keys[index]
      const problem = invalidKey(`keys[${index}]`, this.#status[index] as BadKeyStatus, key)
      throw new IdemError(ErrorCode.INVALID_KEY, `${problem.message}; nothing of the batch was added`, typeof key === 'string' ? { key } : {})
    }
    return n
  }
}

const NO_SHARDS = new Uint32Array(0)
