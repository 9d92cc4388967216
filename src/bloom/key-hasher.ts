/**
 * Validates, packs and hashes a batch of idempotency keys in one wasm call.
 * The router runs this for every message on the main thread, so it is the
 * hottest path in idem: turning strings into bytes dominates its cost, and the
 * code below is shaped by that (see #packJoined).
 */
import { KeyStatus, keyStatusOf, MAX_KEY_BYTES, OptionReader } from '../validation.js'
import { instantiateBloom, type BloomInstance } from './wasm.js'

// What a valid key is, and the words for a bad one, are validation.ts's; the hasher reports its statuses.
export { KeyStatus, MAX_KEY_BYTES }

export const DEFAULT_MAX_BATCH_KEYS = 4096
/** Bounds the wasm memory a batch reserves (MAX_KEY_BYTES per key: 64 MiB here). */
const BATCH_KEYS_LIMIT = 65536
const utf8 = new TextEncoder()

/** The maxBatchKeys option of the hasher and the bloom filter; a bad one is a problem of the reader. */
export function readMaxBatchKeys(options: OptionReader): number {
  return options.integer('maxBatchKeys', DEFAULT_MAX_BATCH_KEYS, 1, BATCH_KEYS_LIMIT)
}

/**
 * Validates one key (keyStatusOf) and writes its UTF-8 bytes to
 * target[offset..], which needs MAX_KEY_BYTES bytes. Returns the byte
 * length, or the negated KeyStatus of a bad key.
 */
export function writeKey(key: unknown, target: Buffer, offset: number, allowNul = false): number {
  const status = keyStatusOf(key, allowNul)
  return status === KeyStatus.OK ? target.write(key as string, offset, MAX_KEY_BYTES, 'utf8') : -status
}

export interface HashOptions {
  /**
   * Accept U+0000: for keys the caller has already validated part by part and
   * joined with U+0000 itself (namespace, NUL, key).
   * @default false
   */
  allowNul?: boolean
}

export interface KeyHasherOptions {
  /**
   * Keys packed and hashed per wasm call; larger batches run in chunks of this
   * size. Each key reserves MAX_KEY_BYTES of wasm memory (4 MiB by default).
   * @default 4096
   */
  maxBatchKeys?: number
}

export class KeyHasher {
  readonly #core: BloomInstance
  readonly #maxBatchKeys: number

  constructor(options: KeyHasherOptions = {}) {
    const reader = new OptionReader(options)
    const maxBatchKeys = readMaxBatchKeys(reader)
    reader.check()
    this.#maxBatchKeys = maxBatchKeys
    this.#core = instantiateBloom({
      wordsPerGeneration: 0,
      k: 0,
      maxKeys: maxBatchKeys,
      maxKeyBytes: maxBatchKeys * MAX_KEY_BYTES,
    })
  }

  /**
   * Validate, pack and hash keys[0..n). hashes gets 2 u32 per key (lo, hi),
   * shards one u32 per key (only when shardCount > 0), status one KeyStatus
   * per key. Invalid keys get status != OK and hashes/shards of 0; valid keys
   * are unaffected by invalid neighbours. Returns the number of invalid keys.
   */
  hash(
    keys: readonly unknown[],
    shardCount: number,
    hashes: Uint32Array,
    shards: Uint32Array,
    status: Uint8Array,
    options: HashOptions = {},
  ): number {
    const n = keys.length
    if (!Number.isInteger(shardCount) || shardCount < 0 || shardCount > 0x7fffffff) {
      throw new RangeError(`shardCount must be an integer from 0 to 2^31 - 1 (got ${shardCount})`)
    }
    if (hashes.length < 2 * n || status.length < n || (shardCount > 0 && shards.length < n)) {
      throw new RangeError(`output arrays too short for ${n} keys`)
    }
    const allowNul = options.allowNul ?? false
    let invalid = 0
    for (let start = 0; start < n; start += this.#maxBatchKeys) {
      const end = Math.min(n, start + this.#maxBatchKeys)
      invalid += this.#hashChunk(keys, start, end, allowNul, shardCount, hashes, shards, status)
    }
    return invalid
  }

  #hashChunk(
    keys: readonly unknown[],
    start: number,
    end: number,
    allowNul: boolean,
    shardCount: number,
    hashes: Uint32Array,
    shards: Uint32Array,
    status: Uint8Array,
  ): number {
    const core = this.#core
    const count = end - start
    let invalid = this.#packJoined(keys, start, end, allowNul, status)
    if (invalid < 0) invalid = this.#packEach(keys, start, end, allowNul, status)
    core.exports.hashKeys(count, shardCount)
    hashes.set(core.hashes.subarray(0, 2 * count), 2 * start)
    if (shardCount > 0) shards.set(core.shards.subarray(0, count), start)
    if (invalid > 0) {
      for (let i = start; i < end; i++) {
        if (status[i] === KeyStatus.OK) continue
        hashes[2 * i] = 0
        hashes[2 * i + 1] = 0
        if (shardCount > 0) shards[i] = 0
      }
    }
    return invalid
  }

  /**
   * The batched path, for a chunk of strings, ASCII or not: one join and one
   * UTF-8 write for the whole chunk, where a write per key is a native call
   * each (measured ~17 ns a key joined against ~65 written one by one, on
   * keys from JSON.parse). The offsets go in as UTF-16 unit ends, which JS
   * reads for free (length); the write's byte count tells whether they are
   * byte ends already (every unit one byte: ASCII), and otherwise the wasm
   * walks the bytes to turn them into byte ends (utf8Offsets). Lone
   * surrogates and U+0000 are looked for on the joined string: a chunk holding
   * one, or a non-string, returns -1 and takes #packEach, so that each bad key
   * gets its own status from keyStatusOf. Returns the invalid count.
   */
  #packJoined(keys: readonly unknown[], start: number, end: number, allowNul: boolean, status: Uint8Array): number {
    const core = this.#core
    const { offsets, keyBytes } = core
    let units = 0
    let invalid = 0
    offsets[0] = 0
    for (let i = start; i < end; i++) {
      const key = keys[i]
      if (typeof key !== 'string') return -1
      const length = key.length
      const keyStatus = length === 0 ? KeyStatus.EMPTY : length > MAX_KEY_BYTES ? KeyStatus.TOO_LONG : KeyStatus.OK
      status[i] = keyStatus
      if (keyStatus !== KeyStatus.OK) invalid++
      units += length
      offsets[i - start + 1] = units
    }
    // Every unit takes a byte or more: no use joining a chunk that cannot fit.
    if (units > keyBytes.length) return -1
    const joined = (start === 0 && end === keys.length ? keys : keys.slice(start, end)).join('')
    if (!allowNul && joined.indexOf('\0') !== -1) return -1
    // encodeInto stops before a character that does not fit: read < units is a chunk too big for the buffer.
    const { read, written } = utf8.encodeInto(joined, keyBytes)
    if (read !== units) return -1
    if (written === units) return invalid
    // Only a non-ASCII chunk can hold a surrogate, so only it pays for this scan.
    if (!joined.isWellFormed()) return -1
    const longest = core.exports.utf8Offsets(end - start, written)
    if (longest < 0) return -1
    if (longest > MAX_KEY_BYTES) {
      for (let i = start; i < end; i++) {
        if (status[i] === KeyStatus.OK && offsets[i - start + 1] - offsets[i - start] > MAX_KEY_BYTES) {
          status[i] = KeyStatus.TOO_LONG
          invalid++
        }
      }
    }
    return invalid
  }

  /** The path for a chunk holding a key the joined write cannot take: validates and UTF-8 encodes key by key; bad keys take no bytes. */
  #packEach(keys: readonly unknown[], start: number, end: number, allowNul: boolean, status: Uint8Array): number {
    const { offsets, keyBytes } = this.#core
    let offset = 0
    let invalid = 0
    offsets[0] = 0
    for (let i = start; i < end; i++) {
      const written = writeKey(keys[i], keyBytes, offset, allowNul)
      if (written < 0) {
        status[i] = -written
        invalid++
      } else {
        status[i] = KeyStatus.OK
        offset += written
      }
      offsets[i - start + 1] = offset
    }
    return invalid
  }
}
