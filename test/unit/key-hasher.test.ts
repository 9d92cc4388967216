import fc from 'fast-check'
import { describe, expect, it, vi } from 'vitest'
import { ConfigError } from '../../dist/src/errors.js'
import { KeyHasher, KeyStatus, MAX_KEY_BYTES } from '../../dist/src/bloom/key-hasher.js'
import { keyStatusOf } from '../../dist/src/validation.js'
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

/** What keyStatusOf says of one key, as the hasher reports it when the key is alone. */
function statusAlone(hasher: KeyHasher, key: unknown): number {
  return hashAll(hasher, [key]).status[0]
}

describe('KeyHasher on non-ASCII batches', () => {
  const hasher = new KeyHasher()
  const cjkOrder = (i: number) => `订单-20261204-${String(i).padStart(6, '0')}`

  it('packs a batch with CJK, Cyrillic, emoji and Latin-1 keys in one write, no key written alone', () => {
    const keys = ['order-1', cjkOrder(123), 'заказ-2', '🔑-3', 'café', '注文/1000000042/決済', 'order-4', '👍🏽', 'x']
    const write = vi.spyOn(Buffer.prototype, 'write')
    try {
      const { invalid, hashOf } = hashAll(hasher, keys, 8)
      expect(invalid).toBe(0)
      keys.forEach((key, i) => expect(hashOf(i)).toBe(xxh64String(key)))
      expect(write).not.toHaveBeenCalled()
    } finally {
      write.mockRestore()
    }
  })

  const anyKey = fc.oneof(
    fc.string({ unit: fc.constantFrom('a', '7', '-', '/'), minLength: 1, maxLength: 40 }),
    fc.string({ unit: fc.constantFrom('订', '单', '注', '文', 'é', 'ж', '🔑', '👍', '\ufffd', '-', '1'), minLength: 1, maxLength: 20 }),
    fc.string({ unit: 'binary', maxLength: 12 }),
    // Bad keys, rarer: a lone surrogate, U+0000, empty, too long, not a string.
    fc.constantFrom('\ud83d', '\ude00', 'a\ud800b', '订单\0', '', '订'.repeat(342), 42, null),
  )

  it('gives every key of a mixed batch the status and hash it has alone (oracle)', () => {
    const small = new KeyHasher({ maxBatchKeys: 5 })
    fc.assert(
      fc.property(fc.array(anyKey, { maxLength: 30 }), (keys) => {
        for (const batchHasher of [hasher, small]) {
          const { invalid, status, hashOf } = hashAll(batchHasher, keys)
          expect(invalid).toBe(keys.filter((key) => keyStatusOf(key) !== KeyStatus.OK).length)
          keys.forEach((key, i) => {
            expect(status[i]).toBe(keyStatusOf(key))
            expect(hashOf(i)).toBe(status[i] === KeyStatus.OK ? xxh64String(key as string) : 0n)
          })
        }
      }),
      { numRuns: 300 },
    )
  })

  it('refuses lone surrogates as it does alone, and only those keys, even where two halves meet across keys', () => {
    // Joined, 'a\ud83d' + '\ude00b' read as 'a😀b': each key is still ill-formed on its own.
    const keys = [cjkOrder(1), 'a\ud83d', '\ude00b', cjkOrder(2), '\ud83d', '', '\ude00', '😀', '\ufffd']
    const { invalid, status, hashOf } = hashAll(hasher, keys)
    const { OK, LONE_SURROGATE, EMPTY } = KeyStatus
    const expected = [OK, LONE_SURROGATE, LONE_SURROGATE, OK, LONE_SURROGATE, EMPTY, LONE_SURROGATE, OK, OK]
    expect(keys.map((key) => statusAlone(hasher, key))).toEqual(expected)
    expect([...status]).toEqual(expected)
    expect(invalid).toBe(5)
    for (const i of [0, 3, 7, 8]) expect(hashOf(i)).toBe(xxh64String(keys[i] as string))
  })

  it('takes keys of exactly 1024 bytes beside short CJK keys, and refuses 1025+ bytes of fewer than 1024 units', () => {
    const atMax = ['x'.repeat(1024), 'é'.repeat(512), '🔑'.repeat(256), '€'.repeat(341) + 'x', '订'.repeat(341) + 'x']
    const overByBytes = ['订'.repeat(341) + 'xy', '🔑'.repeat(256) + 'x']
    const keys = [cjkOrder(1), ...atMax, cjkOrder(2), ...overByBytes, 'order-3']
    const { invalid, status, hashOf } = hashAll(hasher, keys)
    expect(invalid).toBe(overByBytes.length)
    keys.forEach((key, i) => {
      if (overByBytes.includes(key)) return expect([status[i], hashOf(i)]).toEqual([KeyStatus.TOO_LONG, 0n])
      expect(hashOf(i)).toBe(xxh64String(key))
    })
  })

  it('hashes chunks whose UTF-8 fills the buffer exactly, and chunks of long keys that overflow it', () => {
    // maxBatchKeys 4 packs at most 4 KiB per chunk.
    const small = new KeyHasher({ maxBatchKeys: 4 })
    const fits = ['€'.repeat(341) + 'x', '订'.repeat(341) + 'x', 'é'.repeat(512), '🔑'.repeat(256)]
    const overflows = ['订'.repeat(1000), '订单-1', 'ж'.repeat(1000), '🔑'.repeat(500)]
    const keys = [...fits, ...overflows, ...Array.from({ length: 30 }, (_, i) => (i % 3 === 0 ? cjkOrder(i) : `order-${i}`))]
    const { invalid, status, hashOf } = hashAll(small, keys, 3)
    expect(invalid).toBe(3)
    keys.forEach((key, i) => {
      expect(status[i]).toBe(keyStatusOf(key))
      if (status[i] === KeyStatus.OK) expect(hashOf(i)).toBe(xxh64String(key))
    })
  })

  it('keeps U+0000 out of non-ASCII batches, and lets it in with allowNul', () => {
    const keys = [cjkOrder(1), '租户\0订单-2', 'order-3']
    expect([...hashAll(hasher, keys).status]).toEqual([KeyStatus.OK, KeyStatus.NUL, KeyStatus.OK])
    const hashes = new Uint32Array(2 * keys.length)
    expect(hasher.hash(keys, 0, hashes, new Uint32Array(0), new Uint8Array(keys.length), { allowNul: true })).toBe(0)
    keys.forEach((key, i) => expect([hashes[2 * i], hashes[2 * i + 1]]).toEqual(split(xxh64String(key))))
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
