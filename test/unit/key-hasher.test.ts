import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ConfigError } from '../../dist/src/errors.js'
import { KeyHasher, KeyStatus, MAX_KEY_BYTES } from '../../dist/src/bloom/key-hasher.js'
import { instantiateBloom } from '../../dist/src/bloom/wasm.js'
import { jumpHash, split, xxh64, xxh64String } from '../support/bloom-oracle.js'

/** xxHash64 of raw bytes straight from the wasm core, bypassing key validation. */
const core = instantiateBloom({ wordsPerGeneration: 0, k: 0, maxKeys: 1, maxKeyBytes: 4096 })
function wasmXxh64(bytes: Uint8Array): bigint {
  core.keyBytes.set(bytes)
  core.offsets[0] = 0
  core.offsets[1] = bytes.length
  core.exports.hashKeys(1, 0)
  return (BigInt(core.hashes[1]) << 32n) | BigInt(core.hashes[0])
}

function hashAll(hasher: KeyHasher, keys: readonly unknown[], shardCount = 0) {
  const hashes = new Uint32Array(2 * keys.length)
  const shards = new Uint32Array(keys.length)
  const status = new Uint8Array(keys.length)
  const invalid = hasher.hash(keys, shardCount, hashes, shards, status)
  return { invalid, hashes, shards, status, hashOf: (i: number) => (BigInt(hashes[2 * i + 1]) << 32n) | BigInt(hashes[2 * i]) }
}

const utf8 = (text: string) => new TextEncoder().encode(text)
const validKey = fc
  .string({ unit: fc.oneof(fc.constant('a'), fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })), minLength: 1, maxLength: 60 })
  .filter((key) => !key.includes('\0') && utf8(key).length <= MAX_KEY_BYTES)

describe('xxHash64 (seed 0)', () => {
  const vectors: [string, bigint][] = [
    ['', 0xef46db3751d8e999n],
    ['a', 0xd24ec4f1a98c6e5bn],
    ['abc', 0x44bc2cf5ad770999n],
  ]
  it.each(vectors)('%j has the published hash in wasm and oracle', (text, expected) => {
    expect(wasmXxh64(utf8(text))).toBe(expected)
    expect(xxh64String(text)).toBe(expected)
  })

  it('agrees with the oracle past the 32-byte stripe loop and at 1 KiB', () => {
    for (const text of ['Nobody inspects the spammish repetition', 'x'.repeat(33), 'ab'.repeat(512)]) {
      expect(wasmXxh64(utf8(text))).toBe(xxh64String(text))
    }
    const bytes = Uint8Array.from({ length: 1024 }, (_, i) => (i * 131 + 7) & 0xff)
    expect(wasmXxh64(bytes)).toBe(xxh64(bytes))
  })

  it('agrees with the oracle on random byte strings of every tail length', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 100 }), (bytes) => {
        expect(wasmXxh64(bytes)).toBe(xxh64(bytes))
      }),
    )
  })

  it('KeyHasher gives the oracle hash for random keys, ASCII, non-ASCII and emoji', () => {
    const hasher = new KeyHasher()
    fc.assert(
      fc.property(fc.array(validKey, { minLength: 1, maxLength: 40 }), (keys) => {
        const { invalid, hashOf } = hashAll(hasher, keys)
        expect(invalid).toBe(0)
        keys.forEach((key, i) => expect(hashOf(i)).toBe(xxh64String(key)))
      }),
    )
  })
})

describe('jump consistent hash', () => {
  const hasher = new KeyHasher()
  const keys = Array.from({ length: 1_000_000 }, (_, i) => `order-${i}:customer-${i % 977}`)
  const shardsFor = (shardCount: number) => hashAll(hasher, keys, shardCount).shards

  it('puts a key on the same shard every time, as the oracle does', () => {
    const sample = ['a', 'order-1', 'ключ', '🔑-42']
    const first = hashAll(hasher, sample, 8)
    const second = hashAll(hasher, sample, 8)
    expect(second.shards).toEqual(first.shards)
    sample.forEach((key, i) => expect(first.shards[i]).toBe(jumpHash(xxh64String(key), 8)))
  })

  // Chi-square critical values at p = 0.001 for 7 and 6 degrees of freedom.
  it.each([
    [8, 24.32],
    [7, 22.46],
  ])('spreads 1,000,000 keys evenly over %i shards', (shardCount, critical) => {
    const counts = new Array<number>(shardCount).fill(0)
    for (const shard of shardsFor(shardCount)) counts[shard]++
    const expected = keys.length / shardCount
    const chiSquare = counts.reduce((sum, count) => sum + (count - expected) ** 2 / expected, 0)
    expect(chiSquare).toBeLessThan(critical)
    expect(Math.max(...counts) / Math.min(...counts)).toBeLessThan(1.02)
  })

  it('moves only ~1/9 of keys, all to the new shard, when growing from 8 to 9', () => {
    const before = shardsFor(8)
    const after = shardsFor(9)
    let moved = 0
    let movedElsewhere = 0
    for (let i = 0; i < keys.length; i++) {
      if (before[i] !== after[i]) moved++
      if (before[i] !== after[i] && after[i] !== 8) movedElsewhere++
    }
    expect(movedElsewhere).toBe(0)
    expect(moved / keys.length).toBeCloseTo(1 / 9, 2)
  })
})

describe('KeyHasher', () => {
  const hasher = new KeyHasher()

  it.each([
    ['a number', 42, KeyStatus.NOT_STRING],
    ['undefined', undefined, KeyStatus.NOT_STRING],
    ['an object', { id: 'a' }, KeyStatus.NOT_STRING],
    ['empty', '', KeyStatus.EMPTY],
    ['1025 ASCII bytes', 'x'.repeat(1025), KeyStatus.TOO_LONG],
    ['1025 bytes of 2-byte chars', 'é'.repeat(512) + 'x', KeyStatus.TOO_LONG],
    ['1025 bytes ending in an emoji', 'x'.repeat(1021) + '🔑', KeyStatus.TOO_LONG],
    ['a lone high surrogate', 'key-\ud83d', KeyStatus.LONE_SURROGATE],
    ['a lone low surrogate', '\ude00-key', KeyStatus.LONE_SURROGATE],
    ['a NUL', 'tenant\0key', KeyStatus.NUL],
  ])('refuses %s', (_, key, expected) => {
    const { invalid, status, hashes } = hashAll(hasher, [key], 4)
    expect(invalid).toBe(1)
    expect(status[0]).toBe(expected)
    expect([...hashes]).toEqual([0, 0])
  })

  it('accepts keys of exactly 1024 bytes, ASCII and multibyte', () => {
    const keys = ['x'.repeat(1024), 'é'.repeat(512), '🔑'.repeat(256), '€'.repeat(341) + 'x']
    const { invalid, hashOf } = hashAll(hasher, keys)
    expect(invalid).toBe(0)
    keys.forEach((key, i) => expect(hashOf(i)).toBe(xxh64String(key)))
  })

  it('hashes good keys in a mixed batch exactly as when alone', () => {
    const bad = [7, '', 'x'.repeat(2000), '\ud800', 'a\0b', null]
    const good = ['order-1', 'ключ-2', '🔑', 'order-4']
    const batch = [bad[0], good[0], bad[1], good[1], bad[2], good[2], bad[3], bad[4], good[3], bad[5]]
    const mixed = hashAll(hasher, batch, 16)
    expect(mixed.invalid).toBe(bad.length)
    for (const key of good) {
      const alone = hashAll(hasher, [key], 16)
      const i = batch.indexOf(key)
      expect(mixed.status[i]).toBe(KeyStatus.OK)
      expect(mixed.hashOf(i)).toBe(alone.hashOf(0))
      expect(mixed.shards[i]).toBe(alone.shards[0])
    }
    batch.forEach((key, i) => {
      if (mixed.status[i] !== KeyStatus.OK) expect([mixed.hashOf(i), mixed.shards[i]]).toEqual([0n, 0])
    })
  })

  it('zeroes bad keys in an all-ASCII batch (the joined fast path)', () => {
    const keys = ['a', '', 'x'.repeat(1025), 'b']
    const { invalid, status, hashOf } = hashAll(hasher, keys)
    expect(invalid).toBe(2)
    expect([...status]).toEqual([KeyStatus.OK, KeyStatus.EMPTY, KeyStatus.TOO_LONG, KeyStatus.OK])
    expect([hashOf(0), hashOf(1), hashOf(2), hashOf(3)]).toEqual([xxh64String('a'), 0n, 0n, xxh64String('b')])
  })

  it('does not mistake non-ASCII for its latin1 low byte', () => {
    // U+0141 keeps 0x41 ('A') as its low byte: a latin1 write would collide it with 'A'.
    const { hashOf } = hashAll(hasher, ['A', '\u0141', 'é'])
    expect([hashOf(0), hashOf(1), hashOf(2)]).toEqual(['A', '\u0141', 'é'].map(xxh64String))
  })

  it('splits batches larger than maxBatchKeys into chunks', () => {
    const small = new KeyHasher({ maxBatchKeys: 7 })
    const keys = Array.from({ length: 100 }, (_, i) => (i % 13 === 0 ? `ключ-${i}` : i % 17 === 0 ? '' : `key-${i}`))
    const { invalid, status, hashOf, shards } = hashAll(small, keys, 5)
    expect(invalid).toBe(keys.filter((key) => key === '').length)
    keys.forEach((key, i) => {
      if (key === '') return expect(status[i]).toBe(KeyStatus.EMPTY)
      expect(hashOf(i)).toBe(xxh64String(key))
      expect(shards[i]).toBe(jumpHash(xxh64String(key), 5))
    })
  })

  it("writes each hash as the (lo, hi) pair the oracle's split() gives", () => {
    const { hashes } = hashAll(hasher, ['order-1'])
    expect([hashes[0], hashes[1]]).toEqual(split(xxh64String('order-1')))
  })

  it('accepts U+0000 with allowNul, for keys the caller joined itself, ASCII or not', () => {
    const keys = ['tenant-a\0order-1', 'арендатор\0заказ-1']
    for (const batch of [[keys[0]], keys]) {
      const hashes = new Uint32Array(2 * batch.length)
      const status = new Uint8Array(batch.length)
      expect(hasher.hash(batch, 0, hashes, new Uint32Array(0), status, { allowNul: true })).toBe(0)
      batch.forEach((key, i) => expect([hashes[2 * i], hashes[2 * i + 1]]).toEqual(split(xxh64String(key))))
    }
  })

  it('leaves shards untouched when shardCount is 0', () => {
    const shards = new Uint32Array([99])
    hasher.hash(['a'], 0, new Uint32Array(2), shards, new Uint8Array(1))
    expect(shards[0]).toBe(99)
  })

  it.each([0, -1, 1.5, 65537, Number.NaN])('refuses maxBatchKeys %s with a ConfigError naming it', (maxBatchKeys) => {
    expect(() => new KeyHasher({ maxBatchKeys })).toThrow(ConfigError)
    expect(() => new KeyHasher({ maxBatchKeys })).toThrow(/maxBatchKeys/)
  })
})
