/** The validation module: how a value is shown, and the one rule and wording for keys and namespaces. */
import { describe, expect, it } from 'vitest'
import { ErrorCode } from '../../dist/src/errors.js'
import { Router } from '../../dist/src/router.js'
import { KeyStatus, keyStatusOf, show } from '../../dist/src/validation.js'

describe('show', () => {
  class Pool {}
  const cyclic: Record<string, unknown> = { id: 1 }
  cyclic.self = cyclic
  it.each([
    ['a string, quoted', 'a"b', '"a\\"b"'],
    ['a long string, cut inside its quotes', 'x'.repeat(100), `"${'x'.repeat(60)}…"`],
    ['a number', 1.5, '1.5'],
    ['NaN', Number.NaN, 'NaN'],
    ['undefined', undefined, 'undefined'],
    ['null', null, 'null'],
    ['a bigint', 10n, '10n'],
    ['a symbol', Symbol('s'), 'Symbol(s)'],
    ['a named function', function keyOf() {}, 'function keyOf'],
    ['an array', [1, 'a'], '[1, "a"]'],
    ['an object', { host: 'a', 'the-port': 1 }, '{ host: "a", "the-port": 1 }'],
    ['an object without prototype', Object.create(null), '{}'],
    ['a cycle, by depth', cyclic, '{ id: 1, self: { id: 1, self: {…} } }'],
    ['an instance, by its class', new Pool(), 'an instance of Pool'],
    ['a long object, cut', { key: 'k'.repeat(80) }, `{ key: "${'k'.repeat(52)}…`],
  ])('shows %s', (_, value, shown) => {
    expect(show(value)).toBe(shown)
  })
})

describe('keyStatusOf', () => {
  it.each([
    ['a key', 'order-1', KeyStatus.OK],
    ['1024 bytes of 2-byte chars', 'é'.repeat(512), KeyStatus.OK],
    ['a number', 42, KeyStatus.NOT_STRING],
    ['empty', '', KeyStatus.EMPTY],
    ['1025 ASCII bytes', 'x'.repeat(1025), KeyStatus.TOO_LONG],
    ['1026 bytes in 513 chars', 'é'.repeat(513), KeyStatus.TOO_LONG],
    ['a lone surrogate', 'a\ud800', KeyStatus.LONE_SURROGATE],
    ['a NUL', 'a\0b', KeyStatus.NUL],
  ])('%s', (_, key, status) => {
    expect(keyStatusOf(key)).toBe(status)
  })

  it('lets U+0000 through for a key already joined to its namespace', () => {
    expect(keyStatusOf('acme\0order-1', true)).toBe(KeyStatus.OK)
  })
})

describe('the router words every bad message in the one pattern', () => {
  const router = new Router(4, 64)
  const errorOf = (message: unknown) => {
    router.route([message])
    return router.errors[0]
  }
  it.each([
    ['not an object', null, ErrorCode.INVALID_MESSAGE, 'message: must be an object with a key, got null'],
    ['a fingerprint not a string', { key: 'k', fingerprint: 5 }, ErrorCode.INVALID_MESSAGE, 'fingerprint: must be a string when given, got 5'],
    ['a key not a string', { key: 42 }, ErrorCode.INVALID_KEY, 'key: must be a non-empty string, got 42'],
    ['an empty key', { key: '' }, ErrorCode.INVALID_KEY, 'key: must be a non-empty string, got ""'],
    ['a key too long', { key: 'é'.repeat(513) }, ErrorCode.INVALID_KEY, `key: must be at most 1024 UTF-8 bytes, got "${'é'.repeat(60)}…" (1026 bytes)`],
    [
      'a key too long with its namespace',
      { key: 'k'.repeat(1000), namespace: 'n'.repeat(30) },
      ErrorCode.INVALID_KEY,
      `key: must be at most 1024 UTF-8 bytes, namespace included, got "${'n'.repeat(30)}\\u0000${'k'.repeat(29)}…" (1031 bytes)`,
    ],
    ['a key with a lone surrogate', { key: 'a\ud800' }, ErrorCode.INVALID_KEY, 'key: must be well-formed UTF-16 (a lone surrogate has no UTF-8 form), got "a\\ud800"'],
    ['a key with U+0000', { key: 'a\0b' }, ErrorCode.INVALID_KEY, 'key: must be free of U+0000 (it joins a namespace to its key), got "a\\u0000b"'],
    ['a namespaced key with U+0000', { key: 'a\0b', namespace: 'n' }, ErrorCode.INVALID_KEY, 'key: must be free of U+0000 (it joins a namespace to its key), got "a\\u0000b"'],
    ['an empty key with a namespace', { key: '', namespace: 'n' }, ErrorCode.INVALID_KEY, 'key: must be a non-empty string, got ""'],
    ['a namespace not a string', { key: 'k', namespace: 7 }, ErrorCode.INVALID_KEY, 'namespace: must be a non-empty string, got 7'],
    ['an empty namespace', { key: 'k', namespace: '' }, ErrorCode.INVALID_KEY, 'namespace: must be a non-empty string, got ""'],
    ['a namespace too long', { key: 'k', namespace: 'n'.repeat(1025) }, ErrorCode.INVALID_KEY, `namespace: must be at most 1024 UTF-8 bytes, got "${'n'.repeat(60)}…" (1025 bytes)`],
    ['a namespace with a lone surrogate', { key: 'k', namespace: '\udc00' }, ErrorCode.INVALID_KEY, 'namespace: must be well-formed UTF-16 (a lone surrogate has no UTF-8 form), got "\\udc00"'],
    ['a namespace with U+0000', { key: 'k', namespace: 'a\0b' }, ErrorCode.INVALID_KEY, 'namespace: must be free of U+0000 (it joins a namespace to its key), got "a\\u0000b"'],
  ])('%s', (_, message, code, text) => {
    const error = errorOf(message)
    expect(error?.code).toBe(code)
    expect(error?.message).toBe(text)
  })

  it('keeps the message key on the error when it is a string', () => {
    expect(errorOf({ key: 'a\0b', namespace: 'n' })?.key).toBe('a\0b')
    expect(errorOf({ key: 42 })?.key).toBeUndefined()
  })

  it('counts each invalid message once', () => {
    expect(router.route([{ key: 'ok' }, null, { key: '' }, { key: 'k', namespace: '' }, { key: 'x', fingerprint: 1 }])).toBe(4)
    expect(router.route([{ key: 'ok', namespace: 'n' }, { key: 'n\0ok' }])).toBe(1)
  })
})
