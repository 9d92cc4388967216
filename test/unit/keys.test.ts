/**
 * idem/keys: the producer's helpers. The golden values below were computed
 * once and pinned: they are the encoding contract (README, "Keys and
 * fingerprints for producers"). A change that moves one of them changes every
 * key or fingerprint already stored, so such a test must not be "updated"
 * without a migration story.
 */
import { createHash } from 'node:crypto'
import fc from 'fast-check'
import { afterEach, describe, expect, it } from 'vitest'
import { canonicalJson, fingerprint, idempotencyKey, newEventId, type KeyPart } from '../../dist/src/keys/index.js'
import { advanceStamp, COUNTER_MAX, EventIdMinter } from '../../dist/src/keys/event-id.js'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ManualClock } from '../../dist/src/clock.js'
import { ErrorCode, IdemError } from '../../dist/src/errors.js'
import { KeyStatus, keyStatusOf, MAX_KEY_BYTES } from '../../dist/src/validation.js'
import * as main from '../../dist/src/index.js'

function sha256Base64url(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('base64url')
}

function thrown(fn: () => unknown): IdemError {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(IdemError)
    return error as IdemError
  }
  throw new Error('expected a throw')
}

describe('idempotencyKey', () => {
  it('writes the namespace and each part as netstrings (golden values)', () => {
    expect(idempotencyKey('order-paid', 'ord_42', 3)).toBe('10:order-paid,6:ord_42,1:3,')
    expect(idempotencyKey('注文', '東京', 7n)).toBe('6:注文,6:東京,1:7,')
    expect(idempotencyKey('n', '')).toBe('1:n,0:,')
  })

  it('is unambiguous where joining with a separator is not', () => {
    const pairs: [KeyPart[], KeyPart[]][] = [
      [['a:b', 'c'], ['a', 'b:c']],
      [['ab', ''], ['a', 'b']],
      [['a,', 'b'], ['a', ',b']],
      [['1:a,'], ['1:a', '']],
      [['a'], ['a', '']],
    ]
    for (const [left, right] of pairs) expect(idempotencyKey('ns', ...left)).not.toBe(idempotencyKey('ns', ...right))
    // The namespace is delimited like a part: it cannot take a part into itself.
    expect(idempotencyKey('ns:a', 'b')).not.toBe(idempotencyKey('ns', 'a', 'b'))
    expect(idempotencyKey('ns', 'a', 'b')).not.toBe(idempotencyKey('ns', 'a,b'))
  })

  it('is injective on random part lists (property)', () => {
    const part = fc.oneof(fc.string({ maxLength: 6, unit: fc.constantFrom('a', ':', ',', '1', '#', '*') }), fc.integer({ min: -20, max: 20 }))
    fc.assert(
      fc.property(fc.array(part, { minLength: 1, maxLength: 4 }), fc.array(part, { minLength: 1, maxLength: 4 }), (left, right) => {
        const same = left.length === right.length && left.every((p, i) => String(p) === String(right[i]))
        expect(idempotencyKey('ns', ...left) === idempotencyKey('ns', ...right)).toBe(same)
      }),
      { numRuns: 2000 },
    )
  })

  it('writes numbers as decimal text: 42, 42n and "42" are one part, -0 is 0, fractions as JavaScript writes them', () => {
    expect(idempotencyKey('n', 42)).toBe(idempotencyKey('n', 42n))
    expect(idempotencyKey('n', 42)).toBe(idempotencyKey('n', '42'))
    expect(idempotencyKey('n', -0)).toBe('1:n,1:0,')
    expect(idempotencyKey('n', -7n)).toBe('1:n,2:-7,')
    expect(idempotencyKey('n', 0.5, 1e-7)).toBe('1:n,3:0.5,4:1e-7,')
    expect(idempotencyKey('n', Number.MAX_SAFE_INTEGER)).toBe('1:n,16:9007199254740991,')
    expect(idempotencyKey('n', 12345678901234567890n)).toBe('1:n,20:12345678901234567890,')
  })

  it('writes a part over 128 UTF-8 bytes as its SHA-256, marked so that no short part can equal it', () => {
    const long = 'x'.repeat(200)
    const key = idempotencyKey('ns', long)
    expect(key).toBe('2:ns,#43:qiDCPjIBg0BQZ54diJQbmm_tBVfJpwXLLDFeLmP9SG0,')
    expect(key).toBe(`2:ns,#43:${sha256Base64url(long)},`)
    expect(idempotencyKey('ns', 'x'.repeat(128))).toBe(`2:ns,128:${'x'.repeat(128)},`)
    expect(idempotencyKey('ns', 'x'.repeat(129))).toMatch(/^2:ns,#43:[\w-]{43},$/)
    // 43 CJK characters are 129 bytes: measured in UTF-8, not in characters.
    expect(idempotencyKey('ns', '東'.repeat(43))).toMatch(/^2:ns,#43:[\w-]{43},$/)
    expect(idempotencyKey('ns', '東'.repeat(42))).toBe(`2:ns,126:${'東'.repeat(42)},`)
    // Determinism, and a different long part gives a different digest.
    expect(idempotencyKey('ns', long)).toBe(key)
    expect(idempotencyKey('ns', `${long}y`)).not.toBe(key)
  })

  it('stays within 1024 UTF-8 bytes however many parts: the whole list becomes one digest', () => {
    const parts = Array.from({ length: 10 }, () => 'y'.repeat(120))
    const key = idempotencyKey('ns', ...parts)
    expect(key).toBe('2:ns,*43:qrcSQCHsR9FcBEIU7XQxv2i4iovpEgIxNVKHZCH-aBc,')
    expect(key).toBe(`2:ns,*43:${sha256Base64url(parts.map((p) => `120:${p},`).join(''))},`)
    // The list digest differs from any single part's digest.
    expect(key).not.toBe(idempotencyKey('ns', parts.join('')))
    // The longest such key: a namespace of 128 bytes and the list's digest.
    expect(Buffer.byteLength(idempotencyKey('n'.repeat(128), ...parts), 'utf8')).toBe(181)
    // Just under the limit, the parts stay as they are.
    const fits = Array.from({ length: 7 }, () => 'z'.repeat(128))
    expect(idempotencyKey('ns', ...fits)).toBe(`2:ns,${fits.map((p) => `128:${p},`).join('')}`)
  })

  it('always gives a valid idem key (property, CJK and emoji included)', () => {
    const part = fc.oneof(fc.string({ maxLength: 300, unit: 'grapheme' }), fc.string({ maxLength: 300 }), fc.integer(), fc.bigInt())
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 40, unit: 'grapheme' }), fc.array(part, { minLength: 1, maxLength: 30 }), (namespace, parts) => {
        fc.pre(!namespace.includes('\0') && parts.every((p) => typeof p !== 'string' || !p.includes('\0')))
        const key = idempotencyKey(namespace, ...parts)
        expect(keyStatusOf(key)).toBe(KeyStatus.OK)
        expect(Buffer.byteLength(key, 'utf8')).toBeLessThanOrEqual(MAX_KEY_BYTES)
        expect(idempotencyKey(namespace, ...parts)).toBe(key)
      }),
      { numRuns: 500 },
    )
  })

  it.each<[string, () => unknown, string]>([
    ['an empty namespace', () => idempotencyKey('', 'a'), 'namespace: must be a non-empty string, got ""'],
    ['a namespace that is not a string', () => idempotencyKey(5 as unknown as string, 'a'), 'namespace: must be a non-empty string, got 5'],
    ['a namespace over 128 bytes', () => idempotencyKey('n'.repeat(129), 'a'), 'namespace: must be at most 128 UTF-8 bytes (it is written into every key as it is), got "nnnn'],
    ['a namespace with U+0000', () => idempotencyKey('a\0b', 'a'), 'namespace: must be free of U+0000 (it joins a namespace to its key), got "a\\u0000b"'],
    ['a namespace with a lone surrogate', () => idempotencyKey('a\ud800', 'a'), 'namespace: must be well-formed UTF-16 (a lone surrogate has no UTF-8 form), got "a\\ud800"'],
    ['no parts', () => idempotencyKey('n'), 'parts: must be at least one string, number or bigint after the namespace, got []'],
    ['NaN', () => idempotencyKey('n', 'a', 'b', NaN), 'parts[2]: must be a finite number, got NaN'],
    ['Infinity', () => idempotencyKey('n', -Infinity), 'parts[0]: must be a finite number, got -Infinity'],
    ['an unsafe integer', () => idempotencyKey('n', 2 ** 53), 'parts[0]: must be a safe integer (at most 2^53 - 1 in magnitude: pass a larger id as a bigint or a string), got 9007199254740992'],
    ['1e21', () => idempotencyKey('n', 1e21), 'parts[0]: must be a safe integer (at most 2^53 - 1 in magnitude: pass a larger id as a bigint or a string), got 1e+21'],
    ['undefined', () => idempotencyKey('n', 'a', undefined as unknown as string), 'parts[1]: must be a string, number or bigint, got undefined'],
    ['null', () => idempotencyKey('n', null as unknown as string), 'parts[0]: must be a string, number or bigint, got null'],
    ['an object', () => idempotencyKey('n', { id: 1 } as unknown as string), 'parts[0]: must be a string, number or bigint, got { id: 1 }'],
    ['a boolean', () => idempotencyKey('n', true as unknown as string), 'parts[0]: must be a string, number or bigint, got true'],
    ['a lone surrogate', () => idempotencyKey('n', 'ok', '\udc00x'), 'parts[1]: must be well-formed UTF-16 (a lone surrogate has no UTF-8 form), got "\\udc00x"'],
    ['U+0000 in a short part', () => idempotencyKey('n', 'a\0'), 'parts[0]: must be free of U+0000 (it joins a namespace to its key), got "a\\u0000"'],
    ['U+0000 in a long part, which would be hashed', () => idempotencyKey('n', `\0${'x'.repeat(300)}`), 'parts[0]: must be free of U+0000'],
  ])('refuses %s with INVALID_KEY', (_, call, message) => {
    const error = thrown(call)
    expect(error.code).toBe(ErrorCode.INVALID_KEY)
    expect(error.message.startsWith(message)).toBe(true)
  })
})

describe('fingerprint', () => {
  const order = {
    order: {
      id: 'ord_42',
      lines: [
        { sku: 'A-1', qty: 2, price: 9.5 },
        { sku: 'B-2', qty: 1, price: 0.1 },
      ],
      placedAt: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6)),
    },
    total: 19.1,
    ref: 12345678901234567890n,
    note: '注文 ✓',
    tags: [],
  }

  it('digests the canonical JSON with SHA-256, as lowercase hex (golden values)', () => {
    expect(canonicalJson(order)).toBe(
      '{"note":"注文 ✓","order":{"id":"ord_42","lines":[{"price":9.5,"qty":2,"sku":"A-1"},{"price":0.1,"qty":1,"sku":"B-2"}],"placedAt":"2026-01-02T03:04:05.006Z"},"ref":12345678901234567890n,"tags":[],"total":19.1}',
    )
    expect(fingerprint(order)).toBe('c6814ff626cf858d8ef4ae8d56e8e4ab84b9eb6f822fdca403af0d027a982e9b')
    expect(fingerprint({ a: 1 })).toBe('015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862')
    expect(fingerprint('x')).toBe(createHash('sha256').update('"x"').digest('hex'))
  })

  it('does not depend on the order members were set in, at any depth', () => {
    const reordered = {
      tags: [],
      ref: 12345678901234567890n,
      order: { placedAt: new Date('2026-01-02T03:04:05.006Z'), lines: [{ price: 9.5, sku: 'A-1', qty: 2 }, { qty: 1, price: 0.1, sku: 'B-2' }], id: 'ord_42' },
      note: '注文 ✓',
      total: 19.1,
    }
    expect(fingerprint(reordered)).toBe(fingerprint(order))
  })

  it('sorts keys by UTF-16 code units', () => {
    // U+FF21 (fullwidth A) is one unit 0xFF21; U+1F600 is the pair 0xD83D 0xDE00: code units put the emoji first, code points would not.
    expect(canonicalJson({ 'Ａ': 1, '😀': 2, b: 3, B: 4, '': 5 })).toBe('{"":5,"B":4,"b":3,"😀":2,"Ａ":1}')
  })

  it('reads 1 and 1.0 as one number, -0 as 0, and writes numbers as JSON does', () => {
    expect(fingerprint({ n: 1.0 })).toBe(fingerprint({ n: 1 }))
    expect(fingerprint({ n: -0 })).toBe(fingerprint({ n: 0 }))
    expect(canonicalJson([1e21, 1e-7, 0.1 + 0.2, -0])).toBe('[1e+21,1e-7,0.30000000000000004,0]')
  })

  it('leaves out undefined members (same as missing), and writes undefined or a hole in an array as null, as JSON does', () => {
    expect(fingerprint({ a: 1, b: undefined })).toBe(fingerprint({ a: 1 }))
    expect(canonicalJson([undefined, null, , 1])).toBe('[null,null,null,1]') // eslint-disable-line no-sparse-arrays
    expect(fingerprint({ a: [undefined] })).toBe(fingerprint({ a: [null] }))
  })

  it('tells nested arrays apart by their shape', () => {
    expect(fingerprint([[1, 2], [3]])).not.toBe(fingerprint([[1], [2, 3]]))
    expect(fingerprint([[1, 2], [3]])).not.toBe(fingerprint([1, 2, 3]))
    expect(canonicalJson({ a: [[[]], [{}]] })).toBe('{"a":[[[]],[{}]]}')
  })

  it('keeps a bigint, a number and a string of the same digits apart', () => {
    const digests = [fingerprint({ v: 42n }), fingerprint({ v: 42 }), fingerprint({ v: '42' }), fingerprint({ v: '42n' })]
    expect(new Set(digests).size).toBe(4)
    expect(canonicalJson({ v: -42n })).toBe('{"v":-42n}')
  })

  it('writes a Date as its ISO string: a Date and that string agree', () => {
    const at = new Date(Date.UTC(2026, 11, 4, 10, 0, 0))
    expect(canonicalJson({ at })).toBe('{"at":"2026-12-04T10:00:00.000Z"}')
    expect(fingerprint({ at })).toBe(fingerprint({ at: '2026-12-04T10:00:00.000Z' }))
  })

  it('honours toJSON once, with the member key, as JSON does', () => {
    const keys: string[] = []
    const money = { toJSON: (key: string) => (keys.push(key), { currency: 'EUR', cents: 950 }) }
    expect(canonicalJson({ price: money, list: [money] })).toBe('{"list":[{"cents":950,"currency":"EUR"}],"price":{"cents":950,"currency":"EUR"}}')
    // Members are written in sorted order: list (its item 0) before price.
    expect(keys).toEqual(['0', 'price'])
    expect(fingerprint(Buffer.from('hi'))).toBe(fingerprint({ type: 'Buffer', data: [104, 105] }))
  })

  it('agrees with the payload read back from JSON (property)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        expect(fingerprint(value)).toBe(fingerprint(JSON.parse(JSON.stringify(value))))
        // Without bigints the canonical text is JSON, of the same value.
        expect(JSON.parse(canonicalJson(value))).toEqual(JSON.parse(JSON.stringify(value)))
      }),
      { numRuns: 500 },
    )
  })

  it('does not follow insertion order (property)', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 2 })), (object) => {
        const reversed = Object.fromEntries(Object.entries(object).reverse())
        expect(fingerprint(reversed)).toBe(fingerprint(object))
      }),
      { numRuns: 300 },
    )
  })

  class Point {
    constructor(readonly x: number) {}
  }
  const cyclic: Record<string, unknown> = { a: { b: {} } }
  ;(cyclic.a as { b: Record<string, unknown> }).b.back = cyclic.a
  const refusing = {
    get secret(): never {
      throw new Error('sealed')
    },
  }
  const DATA = 'must be JSON data (a plain object, array, string, finite number, boolean, null, bigint or Date, or an object with toJSON)'

  it.each<[string, unknown, string]>([
    ['NaN', { items: [1, 2, 3, { at: NaN }] }, 'payload.items[3].at: must be a finite number, got NaN'],
    ['Infinity', [Infinity], 'payload[0]: must be a finite number, got Infinity'],
    ['an invalid Date', { items: [0, 0, 0, { at: new Date(Number.NaN) }] }, 'payload.items[3].at: must be a valid Date, got an instance of Date'],
    ['a Map', { m: new Map([[1, 2]]) }, `payload.m: ${DATA}, got an instance of Map`],
    ['a Set', { 'the set': new Set() }, `payload["the set"]: ${DATA}, got an instance of Set`],
    ['a function', { f: () => 1 }, `payload.f: ${DATA}, got function f`],
    ['a symbol', [Symbol('s')], `payload[0]: ${DATA}, got Symbol(s)`],
    ['a class instance', { p: new Point(1) }, `payload.p: ${DATA}, got an instance of Point`],
    ['a typed array', { bytes: new Uint8Array(2) }, `payload.bytes: ${DATA}, got an instance of Uint8Array`],
    ['a boxed string', { s: new String('a') }, `payload.s: ${DATA}, got an instance of String`],
    ['undefined at the top', undefined, `payload: ${DATA}, got undefined`],
    ['a cycle', cyclic, 'payload.a.b.back: must be free of cycles (an object that contains itself has no JSON form), got { b: { back: {…} } }'],
    ['a getter that throws', { ok: 1, box: refusing }, 'payload.box.secret: reading it threw: sealed'],
    ['a toJSON that throws', { t: { toJSON: () => { throw new Error('no') } } }, 'payload.t: its toJSON threw: no'],
    ['a toJSON that returns a class instance', { t: { toJSON: () => new Point(2) } }, `payload.t: ${DATA}; its toJSON returned another kind of object, got an instance of Point`],
  ])('refuses %s with INVALID_MESSAGE naming its path', (_, payload, message) => {
    const error = thrown(() => fingerprint(payload))
    expect(error.code).toBe(ErrorCode.INVALID_MESSAGE)
    expect(error.message).toBe(message)
  })

  it('refuses a payload nested deeper than 512, with a message rather than a stack overflow', () => {
    let deep: unknown = 1
    for (let i = 0; i < 600; i++) deep = [deep]
    const error = thrown(() => fingerprint(deep))
    expect(error.code).toBe(ErrorCode.INVALID_MESSAGE)
    expect(error.message).toContain('must be nested at most 512 deep')
  })

  it('writes the same object twice when it is shared but not cyclic', () => {
    const shared = { x: 1 }
    expect(canonicalJson({ a: shared, b: [shared] })).toBe('{"a":{"x":1},"b":[{"x":1}]}')
  })
})

describe('newEventId', () => {
  const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

  it('is a lowercase hyphenated UUIDv7 (version 7, variant 10) whose timestamp is now', () => {
    const before = Date.now()
    const id = newEventId()
    const after = Date.now()
    expect(id).toMatch(UUID_V7)
    const ms = parseInt(id.slice(0, 8) + id.slice(9, 13), 16)
    expect(ms).toBeGreaterThanOrEqual(before)
    expect(ms).toBeLessThanOrEqual(after + 1)
  })

  it('mints 10,000 ids in a tight loop: all unique, each greater than the one before', () => {
    const ids = Array.from({ length: 10_000 }, () => newEventId())
    expect(new Set(ids).size).toBe(ids.length)
    for (let i = 1; i < ids.length; i++) {
      if (!(ids[i - 1] < ids[i])) expect.fail(`id ${i} (${ids[i]}) does not sort after ${ids[i - 1]}`)
    }
    for (const id of ids) if (!UUID_V7.test(id)) expect.fail(`not a UUIDv7: ${id}`)
  })

  it('stays ordered when the clock stands still or steps back, and two minters in one millisecond differ', () => {
    const clock = new ManualClock(1_700_000_000_000)
    const minter = new EventIdMinter(clock)
    const ids = [minter.next(), minter.next()]
    clock.advance(-5_000)
    ids.push(minter.next(), minter.next())
    clock.advance(10_000)
    ids.push(minter.next())
    expect([...ids].sort()).toEqual(ids)
    expect(new Set(ids).size).toBe(ids.length)
    // The step back is not followed: those ids keep the last timestamp.
    expect(ids[3].slice(0, 13)).toBe(ids[0].slice(0, 13))
    const other = new EventIdMinter(new ManualClock(1_700_000_000_000))
    expect(other.next()).not.toBe(ids[0])
  })

  it('moves the timestamp on by one millisecond when the counter runs out, and reseeds', () => {
    // 2^41 ids at least fit in one millisecond: too many to mint here, so the rule is tested on its own.
    const stamp = { ms: 1_000, counter: COUNTER_MAX - 1 }
    advanceStamp(stamp, 1_000, 7)
    expect(stamp).toEqual({ ms: 1_000, counter: COUNTER_MAX })
    advanceStamp(stamp, 1_000, 7)
    expect(stamp).toEqual({ ms: 1_001, counter: 7 })
    advanceStamp(stamp, 999, 9)
    expect(stamp).toEqual({ ms: 1_001, counter: 8 })
    advanceStamp(stamp, 1_002, 3)
    expect(stamp).toEqual({ ms: 1_002, counter: 3 })
  })
})

describe('keys and fingerprints through the engine', () => {
  let engine: Engine | undefined
  afterEach(async () => {
    await engine?.close()
    engine = undefined
  })

  it('new, then duplicate for the same payload reordered, then conflict for a changed one', async () => {
    engine = await createEngine({ shards: 2, store: { kind: 'memory' } })
    let runs = 0
    const handler = (): string => `charged ${++runs}`
    const order = { id: 'ord_42', amount: 950, currency: 'EUR', lines: [{ sku: 'A-1', qty: 2 }] }
    const key = idempotencyKey('order-paid', order.id)

    const first = await engine.process({ key, payload: order, fingerprint: fingerprint(order) }, handler)
    expect(first).toEqual({ key, verdict: 'new', result: 'charged 1' })

    const reordered = { lines: [{ qty: 2, sku: 'A-1' }], currency: 'EUR', amount: 950, id: 'ord_42', note: undefined }
    const again = await engine.process({ key: idempotencyKey('order-paid', 'ord_42'), payload: reordered, fingerprint: fingerprint(reordered) }, handler)
    expect(again).toEqual({ key, verdict: 'duplicate', result: 'charged 1' })

    const changed = { ...order, amount: 951 }
    const conflict = await engine.process({ key, payload: changed, fingerprint: fingerprint(changed) }, handler)
    expect(conflict.verdict).toBe('conflict')
    expect(conflict.error?.code).toBe(ErrorCode.CONFLICT)
    expect(runs).toBe(1)
  })
})

describe('exports', () => {
  it('the main entry exports the helpers of idem/keys', () => {
    expect(main.idempotencyKey).toBe(idempotencyKey)
    expect(main.fingerprint).toBe(fingerprint)
    expect(main.canonicalJson).toBe(canonicalJson)
    expect(main.newEventId).toBe(newEventId)
  })
})
