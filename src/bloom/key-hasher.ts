/**
 * Validates, packs and hashes a batch of idempotency keys in one wasm call.
 * The router runs this for every message on the main thread, so it is the
 * hottest path in idem: turning strings into bytes dominates its cost, and the
 * code below is shaped by that (see #packAscii).
 */
import { ConfigError } from '../errors.js'
import { instantiateBloom, type BloomInstance } from './wasm.js'

export const KeyStatus = { OK: 0, NOT_STRING: 1, EMPTY: 2, TOO_LONG: 3, LONE_SURROGATE: 4, NUL: 5 } as const
export type KeyStatus = (typeof KeyStatus)[keyof typeof KeyStatus]

/** The longest key, in UTF-8 bytes. */
export const MAX_KEY_BYTES = 1024

/**
 * Room writeKey() needs past its offset: a key of MAX_KEY_BYTES plus 4 bytes,
 * enough for any longer key to overflow visibly (a UTF-8 char is at most 4
 * bytes, and Buffer#write never writes part of one).
 */
export const KEY_WRITE_ROOM = MAX_KEY_BYTES + 4

export const DEFAULT_MAX_BATCH_KEYS = 4096
/** Bounds the wasm memory a batch reserves (MAX_KEY_BYTES per key: 64 MiB here). */
const BATCH_KEYS_LIMIT = 65536

const keyStatusReasons: Record<KeyStatus, string> = {
  [KeyStatus.OK]: 'the key is valid',
  [KeyStatus.NOT_STRING]: 'the key is not a string',
  [KeyStatus.EMPTY]: 'the key is empty',
  [KeyStatus.TOO_LONG]: `the key is longer than ${MAX_KEY_BYTES} UTF-8 bytes`,
  [KeyStatus.LONE_SURROGATE]: 'the key contains a lone UTF-16 surrogate',
  // U+0000 separates the parts of namespaced keys; allowing it would let two namespaces collide.
  [KeyStatus.NUL]: 'the key contains U+0000',
}

export function describeKeyStatus(status: KeyStatus): string {
  return keyStatusReasons[status]
}

/** The problem with a maxBatchKeys option, if any, as ConfigError lines. */
export function maxBatchKeysProblems(maxBatchKeys: number): string[] {
  if (Number.isInteger(maxBatchKeys) && maxBatchKeys >= 1 && maxBatchKeys <= BATCH_KEYS_LIMIT) return []
  return [`maxBatchKeys must be an integer from 1 to ${BATCH_KEYS_LIMIT} (got ${String(maxBatchKeys)})`]
}

// String#isWellFormed is ES2024: Node 20 has it, our ES2023 lib types do not.
const isWellFormed = (key: string): boolean => (key as string & { isWellFormed(): boolean }).isWellFormed()

/**
 * Validates one key and writes its UTF-8 bytes to target[offset..], which
 * needs KEY_WRITE_ROOM bytes. Returns the byte length, or the negated
 * KeyStatus of a bad key.
 */
export function writeKey(key: unknown, target: Buffer, offset: number, allowNul = false): number {
  if (typeof key !== 'string') return -KeyStatus.NOT_STRING
  if (key.length === 0) return -KeyStatus.EMPTY
  // Each UTF-16 unit takes at least one UTF-8 byte.
  if (key.length > MAX_KEY_BYTES) return -KeyStatus.TOO_LONG
  if (!isWellFormed(key)) return -KeyStatus.LONE_SURROGATE
  if (!allowNul && key.indexOf('\0') !== -1) return -KeyStatus.NUL
  const written = target.write(key, offset, KEY_WRITE_ROOM, 'utf8')
  return written > MAX_KEY_BYTES ? -KeyStatus.TOO_LONG : written
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
    const maxBatchKeys = options.maxBatchKeys ?? DEFAULT_MAX_BATCH_KEYS
    const problems = maxBatchKeysProblems(maxBatchKeys)
    if (problems.length > 0) throw new ConfigError(problems)
    this.#maxBatchKeys = maxBatchKeys
    this.#core = instantiateBloom({
      wordsPerGeneration: 0,
      k: 0,
      maxKeys: maxBatchKeys,
      // The last key may be written with KEY_WRITE_ROOM after (maxBatchKeys - 1) full keys.
      maxKeyBytes: (maxBatchKeys - 1) * MAX_KEY_BYTES + KEY_WRITE_ROOM,
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
    let invalid = this.#packAscii(keys, start, end, allowNul, status)
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
   * The fast path, for a chunk of ASCII keys (the common case): one join and
   * one latin1 write for the whole chunk instead of a UTF-8 encode per key
   * (measured 8.6M keys/s against 5.9M). latin1 keeps only the low byte of
   * each UTF-16 unit, so it is exact for ASCII alone; the byteLength check
   * proves the chunk is ASCII, since every other unit takes 2+ UTF-8 bytes.
   * Returns the invalid count, or -1 when the chunk must take #packEach.
   */
  #packAscii(keys: readonly unknown[], start: number, end: number, allowNul: boolean, status: Uint8Array): number {
    const { offsets, keyBytes } = this.#core
    let offset = 0
    let invalid = 0
    offsets[0] = 0
    for (let i = start; i < end; i++) {
      const key = keys[i]
      if (typeof key !== 'string') return -1
      const length = key.length
      const keyStatus = length === 0 ? KeyStatus.EMPTY : length > MAX_KEY_BYTES ? KeyStatus.TOO_LONG : KeyStatus.OK
      status[i] = keyStatus
      if (keyStatus !== KeyStatus.OK) invalid++
      offset += length
      offsets[i - start + 1] = offset
    }
    if (offset > keyBytes.length) return -1
    const joined = (start === 0 && end === keys.length ? keys : keys.slice(start, end)).join('')
    if (Buffer.byteLength(joined, 'utf8') !== offset || (!allowNul && joined.indexOf('\0') !== -1)) return -1
    keyBytes.write(joined, 0, 'latin1')
    return invalid
  }

  /** The general path: validates and UTF-8 encodes key by key; bad keys take no bytes. */
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
