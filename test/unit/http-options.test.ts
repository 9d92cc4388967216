/**
 * The HTTP layer's pieces that need no server: its options (one case per
 * message), the Idempotency-Key header rules, record keys and the default
 * fingerprint.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/index.js'
import { ConfigError } from '../../dist/src/errors.js'
import { DEFAULT_REPLAY_HEADERS, resolveLayer, resolveRoutePolicy } from '../../dist/src/http/options.js'
import { defaultFingerprint, headerKeyOf, recordKeyOf } from '../../dist/src/http/request-key.js'

function problemsOf(read: () => unknown): readonly string[] {
  try {
    read()
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    return (error as ConfigError).problems
  }
  throw new Error('expected a ConfigError')
}

describe('HTTP layer options', () => {
  let engine: Engine
  beforeAll(async () => {
    engine = await createEngine({ shards: 1, leaseMs: 5000, ttlMs: 60_000 })
  })
  afterAll(() => engine.close())

  it('fills defaults, leaseMs and ttlMs from the engine', () => {
    const { namespace, replayCacheKeys, policy } = resolveLayer({ engine }, 'test')
    expect(namespace).toBe('http')
    expect(replayCacheKeys).toBe(1000)
    expect([...policy.methods]).toEqual(['POST', 'PATCH'])
    expect(policy).toMatchObject({ required: false, leaseMs: 5000, ttlMs: 60_000, maxBodyBytes: 32_768, storeClientErrors: true, waitMs: 0, pollMs: 50 })
    expect([...policy.replayHeaders]).toEqual(DEFAULT_REPLAY_HEADERS)
  })

  it('normalises names: methods upper case, headers lower case', () => {
    const { policy } = resolveLayer({ engine, methods: ['post', 'Put'], replayHeaders: ['X-Request-Id'] }, 'test')
    expect([...policy.methods]).toEqual(['POST', 'PUT'])
    expect([...policy.replayHeaders]).toEqual(['x-request-id'])
  })

  // One case per message: each options object has one bad field, and the test asserts the whole line.
  const cases: [string, Record<string, unknown>, string][] = [
    ['no engine', { engine: undefined }, 'engine: must be an idem Engine (await createEngine(...)), got undefined'],
    ['unknown field', { colour: 'red' }, 'colour: must be left out (not an option of test; known: engine, namespace, replayCacheKeys, methods, required, ttlMs, leaseMs, scope, fingerprint, replayHeaders, maxBodyBytes, storeClientErrors, wait), got "red"'],
    ['replayCacheKeys negative', { replayCacheKeys: -1 }, 'replayCacheKeys: must be an integer from 0 to 16777216, got -1'],
    ['namespace empty', { namespace: '' }, 'namespace: must be a non-empty string of at most 128 characters without U+0000, got ""'],
    ['methods not an array', { methods: 'POST' }, 'methods: must be a non-empty array of HTTP method names, got "POST"'],
    ['methods empty', { methods: [] }, 'methods: must be a non-empty array of HTTP method names, got []'],
    ['replayHeaders with a bad name', { replayHeaders: ['content type'] }, 'replayHeaders: must be an array of header names, got ["content type"]'],
    ['required not a boolean', { required: 'yes' }, 'required: must be a boolean, got "yes"'],
    ['ttlMs zero', { ttlMs: 0 }, 'ttlMs: must be an integer from 1 to 4398046511104, got 0'],
    ['leaseMs too small', { leaseMs: 5 }, 'leaseMs: must be an integer from 10 to 2147483647, got 5'],
    ['scope not a function', { scope: 'user' }, 'scope: must be a function (request) => string | undefined, got "user"'],
    ['fingerprint not a function', { fingerprint: 5 }, 'fingerprint: must be a function (request) => string, got 5'],
    ['maxBodyBytes negative', { maxBodyBytes: -1 }, 'maxBodyBytes: must be an integer from 0 to 67108864, got -1'],
    ['storeClientErrors not a boolean', { storeClientErrors: 1 }, 'storeClientErrors: must be a boolean, got 1'],
    ['wait not an object', { wait: 5000 }, 'wait: must be an object like { maxMs: 5000 }, got 5000'],
    ['wait without maxMs', { wait: {} }, 'wait.maxMs: must be an integer from 1 to 2147483647, got undefined'],
    ['wait pollMs zero', { wait: { maxMs: 100, pollMs: 0 } }, 'wait.pollMs: must be an integer from 1 to 60000, got 0'],
    ['wait unknown field', { wait: { maxMs: 100, every: 5 } }, 'wait.every: must be left out (not an option of wait; known: maxMs, pollMs), got 5'],
  ]
  it.each(cases)('%s', (_, options, line) => {
    expect(problemsOf(() => resolveLayer({ engine, ...options }, 'test'))).toEqual([line])
  })

  it('names every bad field at once', () => {
    expect(problemsOf(() => resolveLayer({ engine, required: 1, maxBodyBytes: 'big' }, 'test'))).toHaveLength(2)
  })

  it("a route's overrides keep the layer's policy for what they leave out, and are checked the same way", () => {
    const { policy } = resolveLayer({ engine, required: true, maxBodyBytes: 100 }, 'test')
    const route = resolveRoutePolicy({ wait: { maxMs: 2000 } }, policy, 'route')
    expect(route).toMatchObject({ required: true, maxBodyBytes: 100, waitMs: 2000, pollMs: 50, leaseMs: 5000 })
    expect(problemsOf(() => resolveRoutePolicy({ engine, required: 'no' }, policy, 'route'))).toEqual([
      'idempotency.engine: must be left out (not an option of route; known: methods, required, ttlMs, leaseMs, scope, fingerprint, replayHeaders, maxBodyBytes, storeClientErrors, wait), got an instance of Engine',
      'idempotency.required: must be a boolean, got "no"',
    ])
  })
})

describe('the Idempotency-Key header', () => {
  const raw = (...values: string[]): string[] => values.flatMap((value) => ['Idempotency-Key', value])

  it('takes a bare token or a quoted string, which are the same key', () => {
    expect(headerKeyOf(['Content-Type', 'application/json', ...raw('abc-123')])).toEqual({ key: 'abc-123' })
    expect(headerKeyOf(raw('"abc-123"'))).toEqual({ key: 'abc-123' })
    expect(headerKeyOf(raw('"say \\"hi\\" \\\\ there"'))).toEqual({ key: 'say "hi" \\ there' })
    expect(headerKeyOf(['idempotency-key', 'lower'])).toEqual({ key: 'lower' })
  })

  it.each([
    ['two header lines', raw('a', 'b'), 'sent more than once'],
    ['a list', raw('a, b'), 'holds a list'],
    ['a broken quoted string', raw('"abc'), 'broken quoted string'],
    ['a quote inside a token', raw('ab"c'), 'holds a list or a broken quoted string'],
    ['empty', raw(''), 'must not be empty'],
    ['an empty quoted string', raw('""'), 'must not be empty'],
    ['256 characters', raw('k'.repeat(256)), 'at most 255 characters, it is 256'],
  ])('refuses %s', (_, rawHeaders, reason) => {
    const answer = headerKeyOf(rawHeaders)
    expect('malformed' in answer && answer.malformed).toContain(reason)
  })

  it('says when there is none', () => {
    expect(headerKeyOf(['Idempotency', 'x'])).toEqual({ missing: true })
  })

  it('record keys never meet across callers, or between a caller and no caller', () => {
    const keys = [recordKeyOf('http', undefined, 'k'), recordKeyOf('http', '-', 'k'), recordKeyOf('http', 'alice', 'k'), recordKeyOf('http', 'bob', 'k'), recordKeyOf('other', 'alice', 'k')]
    expect(new Set(keys).size).toBe(keys.length)
    expect(recordKeyOf('http', 'alice', 'k')).toBe(recordKeyOf('http', 'alice', 'k'))
  })

  it('the default fingerprint: method, path and body; key order and spacing do not matter, bytes do', () => {
    const view = (method: string, path: string, body: unknown) => ({ method, path, rawHeaders: [], body })
    const base = defaultFingerprint(view('POST', '/orders', { a: 1, b: [1, 2] }))
    expect(defaultFingerprint(view('POST', '/orders', { b: [1, 2], a: 1 }))).toBe(base)
    expect(defaultFingerprint(view('PATCH', '/orders', { a: 1, b: [1, 2] }))).not.toBe(base)
    expect(defaultFingerprint(view('POST', '/orders/1', { a: 1, b: [1, 2] }))).not.toBe(base)
    expect(defaultFingerprint(view('POST', '/orders', { a: 2, b: [1, 2] }))).not.toBe(base)
    expect(defaultFingerprint(view('POST', '/orders', undefined))).not.toBe(defaultFingerprint(view('POST', '/orders', '')))
    expect(defaultFingerprint(view('POST', '/orders', Buffer.from('x')))).toBe(defaultFingerprint(view('POST', '/orders', 'x')))
  })
})
