/**
 * `idem/bloom` as a user meets it: imported by its package name (Node's
 * self-reference through package.json `exports`), never by an internal path.
 * The wasm core's own behaviour (bits against the oracle, geometry, snapshot
 * format) is bloom.test.ts's; this file holds the public surface to its word.
 */
import { describe, expect, it } from 'vitest'
import { ManualClock } from 'idem'
import { ConfigError, ErrorCode, IdemError, KeyBloomFilter, MAX_KEY_BYTES, bloomGeometry, type KeyBloomOptions } from 'idem/bloom'
import * as builtEntry from '../../dist/src/bloom/index.js'
import { IdemError as MainIdemError } from '../../dist/src/index.js'

function thrown(run: () => unknown): unknown {
  try {
    run()
  } catch (error) {
    return error
  }
  throw new Error('expected a throw')
}

const ids = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => `${prefix}-${i}`)

describe('the idem/bloom entry', () => {
  it('is the built dist/src/bloom/index.js, with the same error classes as the main entry', () => {
    expect(import.meta.resolve('idem/bloom')).toMatch(/\/dist\/src\/bloom\/index\.js$/)
    expect(KeyBloomFilter).toBe(builtEntry.KeyBloomFilter)
    expect(IdemError).toBe(MainIdemError)
    expect(MAX_KEY_BYTES).toBe(1024)
  })

  it('exports the filter, its sizing and its errors, and nothing of the engine internals', () => {
    expect(Object.keys(builtEntry).sort()).toEqual(['ConfigError', 'ErrorCode', 'IdemError', 'KeyBloomFilter', 'MAX_KEY_BYTES', 'bloomGeometry'])
  })
})

describe('KeyBloomFilter, one key at a time', () => {
  it('answers never seen, then maybe seen; has() adds nothing', () => {
    const seen = new KeyBloomFilter({ expectedItems: 1000 })
    expect(seen.has('order-1')).toBe(false)
    expect(seen.has('order-1')).toBe(false)
    expect(seen.testAndAdd('order-1')).toBe(false)
    expect(seen.testAndAdd('order-1')).toBe(true)
    seen.add('注文-2')
    expect([seen.has('注文-2'), seen.has('注文-3')]).toEqual([true, false])
  })

  it('remembers through one rotation and forgets after two; clear() forgets everything', () => {
    const seen = new KeyBloomFilter({ expectedItems: 1000 })
    seen.add('a')
    seen.rotate()
    expect(seen.has('a')).toBe(true)
    seen.add('b')
    seen.rotate()
    expect([seen.has('a'), seen.has('b')]).toEqual([false, true])
    seen.clear()
    expect(seen.has('b')).toBe(false)
    expect(seen.stats().rotations).toBe(2)
  })
})

describe('KeyBloomFilter, batches', () => {
  // Both are packed chunk by chunk (maxBatchKeys 8) with one UTF-8 write each; the CJK one also needs the wasm to find each key's bytes.
  const batches: [string, string[]][] = [
    ['ASCII', ids('order', 40)],
    ['mixed with CJK and emoji', [...ids('order', 20), '订单-1', 'заказ-2', '🔑-3', ...ids('late', 17)]],
  ]

  it.each(batches)('%s: testAndAddBatch answers in order, a repeat inside the batch at its second copy', (_, keys) => {
    const seen = new KeyBloomFilter({ expectedItems: 10_000, falsePositiveRate: 0.001, maxBatchKeys: 8 })
    const withRepeats = [...keys, keys[3], keys[keys.length - 1]]
    const first = seen.testAndAddBatch(withRepeats)
    expect(first).toBeInstanceOf(Uint8Array)
    expect([...first]).toEqual([...keys.map(() => 0), 1, 1])
    expect([...seen.testAndAddBatch(keys)]).toEqual(keys.map(() => 1))
  })

  it.each(batches)('%s: the batch and the per-key methods agree key for key', (_, keys) => {
    const byBatch = new KeyBloomFilter({ expectedItems: 10_000, maxBatchKeys: 8 })
    byBatch.addBatch(keys)
    const byKey = new KeyBloomFilter({ expectedItems: 10_000 })
    for (const key of keys) byKey.add(key)
    expect(byBatch.snapshot()).toEqual(byKey.snapshot())
    for (const key of keys) expect(byBatch.has(key)).toBe(true)
    expect([...byKey.hasBatch(keys)]).toEqual(keys.map(() => 1))
  })

  it('hasBatch adds nothing', () => {
    const seen = new KeyBloomFilter({ expectedItems: 1000 })
    const keys = ids('k', 10)
    expect([...seen.hasBatch(keys)]).toEqual(keys.map(() => 0))
    expect([...seen.hasBatch(keys)]).toEqual(keys.map(() => 0))
    expect(seen.stats().fill.current).toBe(0)
  })

  it('takes an empty batch', () => {
    const seen = new KeyBloomFilter({ expectedItems: 1000 })
    expect(seen.testAndAddBatch([])).toEqual(new Uint8Array(0))
    seen.addBatch([])
  })
})

describe('KeyBloomFilter with ttlMs on an injected clock', () => {
  it('remembers a key for at least ttlMs, forgets it after two generations, and forgets all after 2 × ttlMs idle', () => {
    const clock = new ManualClock(1_000)
    const seen = new KeyBloomFilter({ expectedItems: 1000, ttlMs: 100, clock })
    seen.add('early')
    clock.advance(99)
    expect(seen.has('early')).toBe(true)
    clock.advance(1) // 100 ms: the first generation becomes previous
    seen.add('later')
    expect([seen.has('early'), seen.has('later')]).toEqual([true, true])
    clock.advance(100) // 200 ms: 'early' is two generations old
    expect([seen.has('early'), seen.has('later')]).toEqual([false, true])
    expect(seen.stats().rotations).toBe(2)
    clock.advance(200) // idle for two periods: both generations are past the window
    expect(seen.testAndAddBatch(['later'])).toEqual(new Uint8Array([0]))
    expect(seen.stats().rotations).toBe(4)
  })

  it('never rotates by itself without ttlMs', () => {
    const clock = new ManualClock()
    const seen = new KeyBloomFilter({ expectedItems: 1000, clock })
    seen.add('a')
    clock.advance(10 ** 12)
    expect(seen.has('a')).toBe(true)
    expect(seen.stats().rotations).toBe(0)
  })
})

describe('KeyBloomFilter.stats()', () => {
  it('measures fill, distinct keys and the false-positive rate near the target at design load', () => {
    const expectedItems = 20_000
    const seen = new KeyBloomFilter({ expectedItems, falsePositiveRate: 0.01 })
    seen.addBatch(ids('seen', expectedItems))
    seen.addBatch(ids('seen', expectedItems / 2)) // repeats set no new bits
    const stats = seen.stats()
    const { bits, k } = bloomGeometry(expectedItems, 0.01)
    expect(stats).toMatchObject({ expectedItems, falsePositiveRate: 0.01, bits, k, bytes: bits / 4, rotations: 0 })
    expect(stats.fill.current).toBeGreaterThan(0.45)
    expect(stats.fill.current).toBeLessThan(0.55)
    expect(stats.fill.previous).toBe(0)
    expect(Math.abs(stats.estimatedItems.current / expectedItems - 1)).toBeLessThan(0.03)
    expect(stats.estimatedFalsePositiveRate).toBeGreaterThan(0.0075)
    expect(stats.estimatedFalsePositiveRate).toBeLessThan(0.0125)
    // The estimate is what never-seen keys meet: 100,000 probes, ~1,000 expected hits.
    const hits = seen.hasBatch(ids('fresh', 100_000)).reduce((sum, bit) => sum + bit, 0)
    expect(hits / 100_000 / stats.estimatedFalsePositiveRate).toBeGreaterThan(0.85)
    expect(hits / 100_000 / stats.estimatedFalsePositiveRate).toBeLessThan(1.15)

    seen.rotate()
    const rotated = seen.stats()
    expect(rotated.fill).toEqual({ current: 0, previous: stats.fill.current })
    expect(rotated.estimatedItems).toEqual({ current: 0, previous: stats.estimatedItems.current })
    // The previous generation still answers "maybe seen".
    expect(rotated.estimatedFalsePositiveRate).toBe(stats.estimatedFalsePositiveRate)
  })
})

describe('KeyBloomFilter snapshots', () => {
  const options: KeyBloomOptions = { expectedItems: 5_000, falsePositiveRate: 0.01 }
  function filled(): KeyBloomFilter {
    const seen = new KeyBloomFilter(options)
    seen.addBatch(ids('old', 1000))
    seen.rotate()
    seen.addBatch(ids('new', 1000))
    return seen
  }

  it('restores both generations under the same options, from a Buffer or a plain Uint8Array', () => {
    const seen = filled()
    const snapshot = seen.snapshot()
    for (const bytes of [snapshot, new Uint8Array(snapshot)]) {
      const restored = KeyBloomFilter.restore(bytes, options)
      expect(restored.snapshot()).toEqual(snapshot)
      expect([...restored.hasBatch([...ids('old', 1000), ...ids('new', 1000)])].every((bit) => bit === 1)).toBe(true)
      const { rotations: _, ...measured } = restored.stats()
      const { rotations: __, ...original } = seen.stats()
      expect(measured).toEqual(original)
    }
  })

  it('refuses a snapshot of another geometry with BLOOM_SNAPSHOT_INVALID naming both', () => {
    const snapshot = filled().snapshot()
    for (const other of [{ expectedItems: 10_000 }, { expectedItems: 5_000, falsePositiveRate: 0.001 }]) {
      const error = thrown(() => KeyBloomFilter.restore(snapshot, other))
      expect(error).toBeInstanceOf(IdemError)
      expect(error).toMatchObject({ code: ErrorCode.BLOOM_SNAPSHOT_INVALID })
      const { bits, k } = bloomGeometry(5_000, 0.01)
      const wanted = bloomGeometry(other.expectedItems, other.falsePositiveRate ?? 0.01)
      expect((error as Error).message).toContain(`${bits} bits and k = ${k}`)
      expect((error as Error).message).toContain(`${wanted.bits} bits and k = ${wanted.k}`)
    }
  })

  it.each<[string, () => unknown]>([
    ['bytes that are no snapshot', () => new Uint8Array(100)],
    ['a truncated snapshot', () => filled().snapshot().subarray(0, 1000)],
    ['a string', () => 'IDMB'],
    ['null', () => null],
  ])('refuses %s with BLOOM_SNAPSHOT_INVALID', (_, input) => {
    const error = thrown(() => KeyBloomFilter.restore(input() as Uint8Array, options))
    expect(error).toBeInstanceOf(IdemError)
    expect(error).toMatchObject({ code: ErrorCode.BLOOM_SNAPSHOT_INVALID, message: expect.stringMatching(/^bloom snapshot refused: /) })
  })

  it('checks the options before the snapshot', () => {
    expect(thrown(() => KeyBloomFilter.restore(filled().snapshot(), { expectedItems: 0 }))).toBeInstanceOf(ConfigError)
  })
})

describe('KeyBloomFilter refuses bad input with a typed error', () => {
  const badOptions: [string, unknown, string][] = [
    ['expectedItems', { expectedItems: 0 }, '0'],
    ['expectedItems', { expectedItems: -5 }, '-5'],
    ['expectedItems', { expectedItems: 1.5 }, '1.5'],
    ['expectedItems', { expectedItems: '1000' }, '1000'],
    ['expectedItems', {}, 'undefined'],
    ['falsePositiveRate', { expectedItems: 10, falsePositiveRate: 0 }, '0'],
    ['falsePositiveRate', { expectedItems: 10, falsePositiveRate: 1 }, '1'],
    ['falsePositiveRate', { expectedItems: 10, falsePositiveRate: -0.1 }, '-0.1'],
    ['falsePositiveRate', { expectedItems: 10, falsePositiveRate: Number.NaN }, 'NaN'],
    ['maxBatchKeys', { expectedItems: 10, maxBatchKeys: 0 }, '0'],
    ['ttlMs', { expectedItems: 10, ttlMs: 0 }, '0'],
    ['ttlMs', { expectedItems: 10, ttlMs: 2.5 }, '2.5'],
    ['clock', { expectedItems: 10, clock: {} }, '[object Object]'],
  ]
  it.each(badOptions)('a bad %s (%o): ConfigError (INVALID_CONFIG) naming the field and the value', (field, options, shown) => {
    const error = thrown(() => new KeyBloomFilter(options as KeyBloomOptions))
    expect(error).toBeInstanceOf(ConfigError)
    expect(error).toBeInstanceOf(IdemError)
    expect((error as ConfigError).code).toBe(ErrorCode.INVALID_CONFIG)
    expect((error as ConfigError).problems).toEqual([expect.stringMatching(new RegExp(`^${field}\\b.*${shown.replace(/[.[\]]/g, '\\$&')}`))])
  })

  it('names every bad option at once', () => {
    const error = thrown(() => new KeyBloomFilter({ expectedItems: 0, falsePositiveRate: 2, maxBatchKeys: -1, ttlMs: -1, clock: 5 as never }))
    expect((error as ConfigError).problems.map((problem) => problem.split(/\W/)[0])).toEqual(['expectedItems', 'falsePositiveRate', 'maxBatchKeys', 'ttlMs', 'clock'])
  })

  it('refuses options that are not an object', () => {
    expect(thrown(() => new KeyBloomFilter(undefined as never))).toMatchObject({ code: ErrorCode.INVALID_CONFIG })
  })

  const badKeys: [string, unknown][] = [
    ['not a string', 42],
    ['empty', ''],
    ['over 1024 UTF-8 bytes', 'é'.repeat(513)],
    ['a lone surrogate', 'a\ud800'],
    ['U+0000', 'a\0b'],
  ]
  it.each(badKeys)('a key %s: INVALID_KEY from the per-key methods', (_, key) => {
    const seen = new KeyBloomFilter({ expectedItems: 100 })
    for (const call of [() => seen.add(key as string), () => seen.has(key as string), () => seen.testAndAdd(key as string)]) {
      const error = thrown(call)
      expect(error).toBeInstanceOf(IdemError)
      expect(error).toMatchObject({ code: ErrorCode.INVALID_KEY, message: expect.stringMatching(/^key: must be /) })
    }
  })

  it.each(badKeys)('a key %s in a batch: INVALID_KEY naming its index, and nothing of the batch added', (_, key) => {
    const seen = new KeyBloomFilter({ expectedItems: 100 })
    const batch = ['good-1', 'good-2', key, 'good-3'] as string[]
    for (const call of [() => seen.addBatch(batch), () => seen.testAndAddBatch(batch), () => seen.hasBatch(batch)]) {
      const error = thrown(call)
      expect(error).toBeInstanceOf(IdemError)
      expect(error).toMatchObject({ code: ErrorCode.INVALID_KEY, message: expect.stringContaining('keys[2]: ') })
      if (typeof key === 'string') expect((error as IdemError).key).toBe(key)
    }
    expect([...seen.hasBatch(['good-1', 'good-2', 'good-3'])]).toEqual([0, 0, 0])
  })

  it('a batch that is not an array: INVALID_KEY', () => {
    const seen = new KeyBloomFilter({ expectedItems: 100 })
    expect(thrown(() => seen.addBatch('abc' as never))).toMatchObject({ code: ErrorCode.INVALID_KEY, message: 'keys: must be an array of keys, got "abc"' })
  })
})
