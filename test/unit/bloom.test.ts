import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { BloomFilter, bloomGeometry } from '../../dist/src/bloom/bloom-filter.js'
import { KeyHasher } from '../../dist/src/bloom/key-hasher.js'
import { ConfigError, ErrorCode, IdemError } from '../../dist/src/errors.js'
import { OracleBloom, split, xxh64String } from '../support/bloom-oracle.js'

/** The per-key surface both the wasm filter and the oracle offer: the behaviour suite runs against each. */
interface BloomModel {
  testAndAdd(key: string): boolean
  has(key: string): boolean
  add(key: string): void
  rotate(): void
  clear(): void
}

const oracleFor = (expectedItems: number, falsePositiveRate: number) => {
  const { bits, k } = bloomGeometry(expectedItems, falsePositiveRate)
  return new OracleBloom(bits, k)
}

const implementations: [string, (expectedItems: number, falsePositiveRate: number) => BloomModel][] = [
  ['wasm', (expectedItems, falsePositiveRate) => new BloomFilter({ expectedItems, falsePositiveRate })],
  ['oracle', oracleFor],
]

const noNul = (key: string) => !key.includes('\0')
/** Keys that stress the packing: 1 byte, 1 KiB, non-ASCII, emoji, ASCII and non-ASCII mixed. */
const key = fc.oneof(
  fc.string({ minLength: 1, maxLength: 40 }).filter(noNul),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }).filter(noNul),
  fc.string({ unit: fc.constantFrom('a', 'é', '🔑', '中'), minLength: 1, maxLength: 40 }),
  fc.constantFrom('a', 'x'.repeat(1024), '🔑'.repeat(256), 'é'.repeat(512)),
)

describe.each(implementations)('%s bloom filter', (_, create) => {
  it('never gives a false negative; remembers across one rotation and forgets after two', () => {
    fc.assert(
      fc.property(fc.uniqueArray(key, { minLength: 1, maxLength: 200 }), (keys) => {
        const filter = create(1000, 0.01)
        for (const k of keys) filter.add(k)
        for (const k of keys) expect(filter.has(k)).toBe(true)
        filter.rotate()
        for (const k of keys) expect(filter.has(k)).toBe(true)
        filter.rotate()
        for (const k of keys) expect(filter.has(k)).toBe(false)
      }),
      { numRuns: 50 },
    )
  })

  it('testAndAdd answers maybe seen the second time, in the same generation or the next', () => {
    fc.assert(
      fc.property(fc.array(key, { minLength: 1, maxLength: 100 }), (keys) => {
        const filter = create(1000, 0.01)
        for (const k of keys) filter.testAndAdd(k)
        for (const k of keys) expect(filter.testAndAdd(k)).toBe(true)
        filter.rotate()
        for (const k of keys) expect(filter.testAndAdd(k)).toBe(true)
      }),
      { numRuns: 50 },
    )
  })

  it('forgets everything on clear()', () => {
    const filter = create(1000, 0.01)
    filter.add('a')
    filter.rotate()
    filter.add('b')
    filter.clear()
    expect([filter.has('a'), filter.has('b')]).toEqual([false, false])
  })

  // 1000 expected false positives per case: the measurement's own noise is ~3%.
  it.each([0.01, 0.001])('measures a false-positive rate within 25 percent of %s at design load', (falsePositiveRate) => {
    const expectedItems = 100_000
    const filter = create(expectedItems, falsePositiveRate)
    for (let i = 0; i < expectedItems; i++) filter.add(`seen-${i}`)
    const probes = 1000 / falsePositiveRate
    let falsePositives = 0
    for (let i = 0; i < probes; i++) if (filter.has(`fresh-${i}`)) falsePositives++
    expect(falsePositives / probes / falsePositiveRate).toBeGreaterThan(0.75)
    expect(falsePositives / probes / falsePositiveRate).toBeLessThan(1.25)
  })
})

describe('BloomFilter', () => {
  const hasher = new KeyHasher()
  function hashesOf(keys: readonly string[]): Uint32Array {
    const hashes = new Uint32Array(2 * keys.length)
    expect(hasher.hash(keys, 0, hashes, new Uint32Array(0), new Uint8Array(keys.length))).toBe(0)
    return hashes
  }
  const generations = (filter: BloomFilter) => {
    const snapshot = filter.snapshot()
    const half = filter.bytes / 2
    return [snapshot.subarray(32, 32 + half), snapshot.subarray(32 + half)].map((bytes) => Buffer.from(bytes))
  }

  it('sets exactly the bits the oracle sets and gives its answers, batch by batch across rotations', () => {
    fc.assert(
      fc.property(fc.array(fc.array(key, { maxLength: 30 }), { minLength: 1, maxLength: 6 }), (batches) => {
        const filter = new BloomFilter({ expectedItems: 200, falsePositiveRate: 0.05, maxBatchKeys: 8 })
        const oracle = oracleFor(200, 0.05)
        for (const batch of batches) {
          const maybeSeen = new Uint8Array(batch.length)
          const count = filter.testAndAddHashes(hashesOf(batch), batch.length, maybeSeen)
          const expected = batch.map((k) => (oracle.testAndAddHash(...split(xxh64String(k))) ? 1 : 0))
          expect([...maybeSeen]).toEqual(expected)
          expect(count).toBe(expected.filter(Boolean).length)
          expect(generations(filter)).toEqual([Buffer.from(oracle.current), Buffer.from(oracle.previous)])
          filter.rotate()
          oracle.rotate()
        }
      }),
      { numRuns: 50 },
    )
  })

  it('answers the same for a key through testAndAddHashes and the per-key methods', () => {
    const keys = ['order-1', 'ключ', '🔑', 'order-1']
    const filter = new BloomFilter({ expectedItems: 1000, falsePositiveRate: 0.001 })
    const maybeSeen = new Uint8Array(keys.length)
    expect(filter.testAndAddHashes(hashesOf(keys), keys.length, maybeSeen)).toBe(1)
    expect([...maybeSeen]).toEqual([0, 0, 0, 1])
    for (const k of keys) expect(filter.has(k)).toBe(true)
    expect(filter.has('order-2')).toBe(false)
  })

  it('refuses a bad key in the per-key methods with INVALID_KEY', () => {
    const filter = new BloomFilter({ expectedItems: 10, falsePositiveRate: 0.01 })
    for (const bad of ['', 'a\0b', '\ud800', 'x'.repeat(1025)]) {
      expect(() => filter.add(bad)).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_KEY }))
    }
  })

  it('reports set bits per generation and a false-positive estimate near the target at design load', () => {
    const filter = new BloomFilter({ expectedItems: 10_000, falsePositiveRate: 0.01 })
    const oracle = oracleFor(10_000, 0.01)
    for (let i = 0; i < 10_000; i++) {
      filter.add(`seen-${i}`)
      oracle.add(`seen-${i}`)
    }
    const popcount = (bytes: Uint8Array) => bytes.reduce((sum, byte) => sum + byte.toString(2).split('1').length - 1, 0)
    const stats = filter.stats()
    expect(stats).toMatchObject({ bits: filter.bits, k: filter.k, bytes: filter.bytes, setBits: [popcount(oracle.current), 0] })
    expect(stats.estimatedFalsePositiveRate).toBeGreaterThan(0.0075)
    expect(stats.estimatedFalsePositiveRate).toBeLessThan(0.0125)
    filter.rotate()
    // The previous generation still answers "maybe seen", so the estimate must not drop to 0.
    expect(filter.stats().setBits).toEqual([0, stats.setBits[0]])
    expect(filter.stats().estimatedFalsePositiveRate).toBe(stats.estimatedFalsePositiveRate)
  })

  describe('snapshot', () => {
    function filled(): BloomFilter {
      const filter = new BloomFilter({ expectedItems: 1000, falsePositiveRate: 0.01 })
      for (let i = 0; i < 500; i++) filter.add(`old-${i}`)
      filter.rotate()
      for (let i = 0; i < 500; i++) filter.add(`new-${i}`)
      return filter
    }

    it('round-trips both generations and the answers', () => {
      const filter = filled()
      const snapshot = filter.snapshot()
      for (const restored of [BloomFilter.restore(snapshot), BloomFilter.restore(new Uint8Array(snapshot))]) {
        expect(restored.snapshot()).toEqual(snapshot)
        expect([restored.bits, restored.k]).toEqual([filter.bits, filter.k])
        for (let i = 0; i < 500; i++) expect(restored.has(`old-${i}`) && restored.has(`new-${i}`)).toBe(true)
      }
    })

    const corruptions: [string, (snapshot: Buffer) => Buffer][] = [
      ['shorter than the header', (s) => s.subarray(0, 20)],
      ['a bad magic', (s) => (s.write('XXXX', 0, 'latin1'), s)],
      ['an unknown version', (s) => (s.writeUInt16LE(2, 4), s)],
      ['a k that its options do not give', (s) => (s.writeUInt16LE(3, 6), s)],
      ['bits that its options do not give', (s) => (s.writeBigUInt64LE(64n, 8), s)],
      ['invalid options', (s) => (s.writeDoubleLE(Number.NaN, 16), s)],
      ['a truncated generation', (s) => s.subarray(0, s.length - 1)],
      ['trailing bytes', (s) => Buffer.concat([s, Buffer.alloc(1)])],
    ]
    it.each(corruptions)('refuses a snapshot with %s', (_, corrupt) => {
      const snapshot = corrupt(filled().snapshot())
      expect(() => BloomFilter.restore(snapshot)).toThrow(IdemError)
      expect(() => BloomFilter.restore(snapshot)).toThrow(expect.objectContaining({ code: ErrorCode.BLOOM_SNAPSHOT_INVALID }))
    })
  })

  describe('options', () => {
    it('sizes m = ceil(-n ln p / ln²2) in whole words and k = round(m/n ln 2) within [1, 16]', () => {
      expect(bloomGeometry(100_000, 0.01)).toEqual({ bits: 958_528, k: 7, bytesPerGeneration: 119_816 })
      expect(bloomGeometry(1, 0.5)).toEqual({ bits: 64, k: 16, bytesPerGeneration: 8 })
      expect(bloomGeometry(1000, 0.5).k).toBe(1)
      const filter = new BloomFilter({ expectedItems: 100_000, falsePositiveRate: 0.01 })
      expect([filter.bits, filter.k, filter.bytes]).toEqual([958_528, 7, 2 * 119_816])
    })

    const bad: [string, Partial<{ expectedItems: number; falsePositiveRate: number; maxBatchKeys: number }>][] = [
      ['expectedItems', { expectedItems: 0 }],
      ['expectedItems', { expectedItems: -5 }],
      ['expectedItems', { expectedItems: Number.NaN }],
      ['expectedItems', { expectedItems: 10.5 }],
      ['expectedItems', { expectedItems: 1e10 }],
      ['falsePositiveRate', { falsePositiveRate: 0 }],
      ['falsePositiveRate', { falsePositiveRate: 1 }],
      ['falsePositiveRate', { falsePositiveRate: -0.1 }],
      ['falsePositiveRate', { falsePositiveRate: Number.NaN }],
      ['maxBatchKeys', { maxBatchKeys: 0 }],
    ]
    it.each(bad)('refuses a bad %s %o with a ConfigError naming it', (field, override) => {
      const options = { expectedItems: 1000, falsePositiveRate: 0.01, ...override }
      const error = (() => {
        try {
          new BloomFilter(options)
        } catch (caught) {
          return caught
        }
      })()
      expect(error).toBeInstanceOf(ConfigError)
      expect((error as ConfigError).code).toBe(ErrorCode.INVALID_CONFIG)
      expect((error as ConfigError).problems).toEqual([expect.stringContaining(field)])
    })

    it('names every bad field at once', () => {
      expect(() => new BloomFilter({ expectedItems: 0, falsePositiveRate: 2, maxBatchKeys: -1 })).toThrow(
        expect.objectContaining({
          problems: [
            'expectedItems: must be an integer of at least 1, got 0',
            'falsePositiveRate: must be a number in (0, 0.5], got 2',
            'maxBatchKeys: must be an integer from 1 to 65536, got -1',
          ],
        }),
      )
    })

    it('accepts the largest filter under 2^32 bits per generation, refuses one above', () => {
      const limit = Math.floor((2 ** 32 * Math.LN2 ** 2) / -Math.log(0.5))
      expect(bloomGeometry(limit - 64, 0.5).bits).toBeLessThanOrEqual(2 ** 32)
      expect(() => bloomGeometry(limit + 64, 0.5)).toThrow(
        expect.objectContaining({ problems: [`expectedItems: must be at most ${limit} at falsePositiveRate 0.5 (one generation holds at most 2^32 bits), got ${limit + 64}`] }),
      )
    })
  })
})
