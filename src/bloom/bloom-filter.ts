/**
 * A two-generation bloom filter over the wasm core (DESIGN.md §6). A bloom
 * filter cannot delete, so forgetting happens by generations: a key is "maybe
 * seen" if it is in the current or the previous generation, and rotate() drops
 * the older one. When to rotate is the caller's policy (the engine rotates on
 * its injected clock, each generation spanning one dedup TTL): the filter
 * keeps no time of its own, which keeps it deterministic under test.
 */
import { ErrorCode, IdemError } from '../errors.js'
import { invalidKey, MAX_KEY_BYTES, OptionReader, type BadKeyStatus, type Interval } from '../validation.js'
import { readMaxBatchKeys, writeKey } from './key-hasher.js'
import { instantiateBloom, type BloomInstance } from './wasm.js'

export interface BloomOptions {
  /** Keys one generation holds at the target rate: the keys expected per rotation period. */
  expectedItems: number
  /** False-positive rate at expectedItems, in (0, 0.5]. Each halving costs ~1.44 bits per item. */
  falsePositiveRate: number
  /**
   * Hashes per wasm call in testAndAddHashes(); larger batches run in chunks.
   * @default 4096
   */
  maxBatchKeys?: number
}

export interface BloomGeometry {
  /** Bits per generation (m), a multiple of 64. */
  bits: number
  /** Probes per key. */
  k: number
  bytesPerGeneration: number
}

export interface BloomStats {
  bits: number
  k: number
  bytes: number
  /** Set bits in the current and the previous generation. */
  setBits: [number, number]
  estimatedFalsePositiveRate: number
}

/** The wasm core maps 32-bit probe values onto the bits, so a generation holds at most 2^32. */
const MAX_BITS = 2 ** 32
const MAX_K = 16

/** The false-positive rates a filter can be built for. */
export const FALSE_POSITIVE_RATES: Interval = { above: 0, to: 0.5 }

/** The most items one generation holds at this rate within MAX_BITS. */
export function maxBloomItems(falsePositiveRate: number): number {
  // The closed form, then exact against bitsFor's rounding.
  let items = Math.floor((MAX_BITS * Math.LN2 ** 2) / -Math.log(falsePositiveRate))
  while (bitsFor(items + 1, falsePositiveRate) <= MAX_BITS) items++
  while (items > 0 && bitsFor(items, falsePositiveRate) > MAX_BITS) items--
  return items
}

/** m = ceil(-n ln p / ln²2), rounded up to whole 64-bit words. */
function bitsFor(expectedItems: number, falsePositiveRate: number): number {
  return Math.ceil((-expectedItems * Math.log(falsePositiveRate)) / Math.LN2 ** 2 / 64) * 64
}

/** Reads expectedItems and falsePositiveRate, recording what is wrong with them; their geometry when both are good. */
function readGeometry(options: OptionReader): BloomGeometry | undefined {
  const before = options.problems.length
  const expectedItems = options.integer('expectedItems', undefined, 1)
  const falsePositiveRate = options.number('falsePositiveRate', undefined, FALSE_POSITIVE_RATES)
  if (options.problems.length > before) return undefined
  const most = maxBloomItems(falsePositiveRate)
  if (expectedItems > most) {
    options.mustBe('expectedItems', `at most ${most} at falsePositiveRate ${falsePositiveRate} (one generation holds at most 2^32 bits)`)
    return undefined
  }
  const bits = bitsFor(expectedItems, falsePositiveRate)
  const k = Math.min(MAX_K, Math.max(1, Math.round((bits / expectedItems) * Math.LN2)))
  return { bits, k, bytesPerGeneration: bits / 8 }
}

/** Size of one generation for n items at rate p; k = round(m/n · ln 2) clamped to [1, 16]. Throws ConfigError on bad input. */
export function bloomGeometry(expectedItems: number, falsePositiveRate: number): BloomGeometry {
  const options = new OptionReader({ expectedItems, falsePositiveRate })
  const geometry = readGeometry(options)
  options.check()
  return geometry!
}

// Snapshot layout, little-endian: the header, then the current and the
// previous generation as the wasm holds them (wasm memory is little-endian on
// every host, so the bytes are portable). The header keeps the options rather
// than only the geometry so that restore() rebuilds the same filter through
// the constructor; bits and k double as a check that the geometry formula has
// not changed since.
const SNAPSHOT_MAGIC = 'IDMB'
const SNAPSHOT_VERSION = 1
const HEADER_BYTES = 32
const Header = { MAGIC: 0, VERSION: 4, K: 6, BITS: 8, EXPECTED_ITEMS: 16, FALSE_POSITIVE_RATE: 24 } as const

export function invalidSnapshot(reason: string): IdemError {
  return new IdemError(ErrorCode.BLOOM_SNAPSHOT_INVALID, `bloom snapshot refused: ${reason}`)
}

export class BloomFilter {
  readonly bits: number
  readonly k: number
  /** Bytes of both generations. */
  readonly bytes: number
  readonly #options: Required<BloomOptions>
  readonly #core: BloomInstance

  constructor(options: BloomOptions) {
    const reader = new OptionReader(options)
    const geometry = readGeometry(reader)
    const maxBatchKeys = readMaxBatchKeys(reader)
    reader.check()
    const { bits, k, bytesPerGeneration } = geometry!
    this.bits = bits
    this.k = k
    this.bytes = 2 * bytesPerGeneration
    this.#options = { ...options, maxBatchKeys }
    this.#core = instantiateBloom({
      wordsPerGeneration: bits / 64,
      k,
      maxKeys: maxBatchKeys,
      // The per-key methods pack one key at a time.
      maxKeyBytes: MAX_KEY_BYTES,
    })
  }

  /**
   * The engine path: hashes (lo, hi pairs, as KeyHasher writes them) of n
   * keys. Writes 1 (maybe seen) or 0 (never seen) per key into maybeSeen,
   * adds every key, and returns the maybe-seen count.
   */
  testAndAddHashes(hashes: Uint32Array, n: number, maybeSeen: Uint8Array): number {
    return this.#probeHashes(hashes, n, maybeSeen, true)
  }

  /** testAndAddHashes without the add: asks, changes nothing. */
  testHashes(hashes: Uint32Array, n: number, maybeSeen: Uint8Array): number {
    return this.#probeHashes(hashes, n, maybeSeen, false)
  }

  /** true if the key was maybe seen (then confirm with the store); adds it either way. */
  testAndAdd(key: string): boolean {
    this.#hashKey(key)
    return this.#core.exports.testAndAdd(1) === 1
  }

  has(key: string): boolean {
    this.#hashKey(key)
    return this.#core.exports.test(1) === 1
  }

  add(key: string): void {
    this.#hashKey(key)
    this.#core.exports.add(1)
  }

  /** Forget the previous generation; the current one becomes previous. */
  rotate(): void {
    this.#core.exports.rotate()
  }

  clear(): void {
    this.#core.exports.clear()
  }

  /**
   * The estimate counts both generations, since testAndAdd answers "maybe
   * seen" from either: right after a rotation the current one is empty but
   * the previous one still produces false positives.
   */
  stats(): BloomStats {
    const { popcount } = this.#core.exports
    const setBits: [number, number] = [popcount(0), popcount(1)]
    const [current, previous] = setBits.map((set) => (set / this.bits) ** this.k)
    return {
      bits: this.bits,
      k: this.k,
      bytes: this.bytes,
      setBits,
      estimatedFalsePositiveRate: 1 - (1 - current) * (1 - previous),
    }
  }

  snapshot(): Buffer {
    const snapshot = Buffer.alloc(HEADER_BYTES + this.bytes)
    snapshot.write(SNAPSHOT_MAGIC, Header.MAGIC, 'latin1')
    snapshot.writeUInt16LE(SNAPSHOT_VERSION, Header.VERSION)
    snapshot.writeUInt16LE(this.k, Header.K)
    snapshot.writeBigUInt64LE(BigInt(this.bits), Header.BITS)
    snapshot.writeDoubleLE(this.#options.expectedItems, Header.EXPECTED_ITEMS)
    snapshot.writeDoubleLE(this.#options.falsePositiveRate, Header.FALSE_POSITIVE_RATE)
    snapshot.set(this.#core.generation(0), HEADER_BYTES)
    snapshot.set(this.#core.generation(1), HEADER_BYTES + this.bytes / 2)
    return snapshot
  }

  /** Rebuilds a filter from snapshot(); refuses anything else with BLOOM_SNAPSHOT_INVALID. */
  static restore(snapshot: Buffer | Uint8Array, options: { maxBatchKeys?: number } = {}): BloomFilter {
    const bytes = Buffer.from(snapshot.buffer, snapshot.byteOffset, snapshot.byteLength)
    if (bytes.length < HEADER_BYTES) throw invalidSnapshot(`${bytes.length} bytes is shorter than the ${HEADER_BYTES}-byte header`)
    if (bytes.toString('latin1', Header.MAGIC, Header.MAGIC + 4) !== SNAPSHOT_MAGIC) throw invalidSnapshot('bad magic')
    const version = bytes.readUInt16LE(Header.VERSION)
    if (version !== SNAPSHOT_VERSION) throw invalidSnapshot(`version ${version}, expected ${SNAPSHOT_VERSION}`)
    const expectedItems = bytes.readDoubleLE(Header.EXPECTED_ITEMS)
    const falsePositiveRate = bytes.readDoubleLE(Header.FALSE_POSITIVE_RATE)
    const header = new OptionReader({ expectedItems, falsePositiveRate })
    const geometry = readGeometry(header)
    if (geometry === undefined) throw invalidSnapshot(header.problems.join('; '))
    const bits = Number(bytes.readBigUInt64LE(Header.BITS))
    const k = bytes.readUInt16LE(Header.K)
    if (bits !== geometry.bits || k !== geometry.k) {
      throw invalidSnapshot(`header says ${bits} bits and k ${k}, its options give ${geometry.bits} and ${geometry.k}`)
    }
    const expectedLength = HEADER_BYTES + 2 * geometry.bytesPerGeneration
    if (bytes.length !== expectedLength) throw invalidSnapshot(`${bytes.length} bytes, expected ${expectedLength}`)
    const filter = new BloomFilter({ expectedItems, falsePositiveRate, ...options })
    filter.#core.generation(0).set(bytes.subarray(HEADER_BYTES, HEADER_BYTES + filter.bytes / 2))
    filter.#core.generation(1).set(bytes.subarray(HEADER_BYTES + filter.bytes / 2))
    return filter
  }

  #probeHashes(hashes: Uint32Array, n: number, maybeSeen: Uint8Array, add: boolean): number {
    if (hashes.length < 2 * n || maybeSeen.length < n) throw new RangeError(`arrays too short for ${n} hashes`)
    const core = this.#core
    const batch = this.#options.maxBatchKeys
    let count = 0
    for (let start = 0; start < n; start += batch) {
      const end = Math.min(n, start + batch)
      core.hashes.set(hashes.subarray(2 * start, 2 * end))
      count += add ? core.exports.testAndAdd(end - start) : core.exports.test(end - start)
      maybeSeen.set(core.results.subarray(0, end - start), start)
    }
    return count
  }

  #hashKey(key: string): void {
    const core = this.#core
    const length = writeKey(key, core.keyBytes, 0)
    if (length < 0) throw invalidKey('key', -length as BadKeyStatus, key)
    core.offsets[0] = 0
    core.offsets[1] = length
    core.exports.hashKeys(1, 0)
  }
}
