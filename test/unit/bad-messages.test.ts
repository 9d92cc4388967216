/**
 * Messages and results of the wrong shape: each fails alone with a typed
 * error (DESIGN.md §4.6), and the rest of its batch goes on.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { CommitCode } from '../../dist/src/store/store.js'
import { encodeResult } from '../../dist/src/store/record-codec.js'

const engines: Engine[] = []
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
})

describe('messages that throw when read', () => {
  it('a key getter that throws, a Proxy that refuses, a key whose text conversion throws: that message is invalid, the batch goes on', async () => {
    const engine = await createEngine({ shards: 2 })
    engines.push(engine)
    const throwingGetter = {
      get key(): string {
        throw new Error('boom')
      },
    }
    const refusingProxy = new Proxy(
      {},
      {
        get() {
          throw new Error('trap')
        },
        ownKeys() {
          throw new Error('keys')
        },
      },
    )
    const strangeKey = {
      key: {
        toString() {
          throw new Error('no text')
        },
      },
    }
    const ran: string[] = []
    const outs = await engine.processBatch([{ key: 'a' }, throwingGetter, refusingProxy, { key: 'b' }, strangeKey] as never[], (m) => {
      ran.push(m.key)
    })
    expect(outs.map((o) => [o.verdict, o.error?.code])).toEqual([
      ['new', undefined],
      ['invalid', 'INVALID_MESSAGE'],
      ['invalid', 'INVALID_MESSAGE'],
      ['new', undefined],
      ['invalid', 'INVALID_KEY'],
    ])
    expect(outs[1].error?.message).toBe('message: must be an object whose key, namespace and fingerprint can be read, got one whose reading threw: boom')
    expect(outs[2].error?.message).toBe('message: must be an object whose key, namespace and fingerprint can be read, got one whose reading threw: trap')
    expect(outs[4].key).toBe('object')
    expect(ran.sort()).toEqual(['a', 'b'])
  })
})

describe('results JSON cannot keep', () => {
  it.each([
    ['a Map', new Map([['a', 1]])],
    ['a Set inside an object', { seen: new Set([1]) }],
    ['a function inside an object', { next() {} }],
    ['a symbol inside an array', [Symbol('s')]],
    ['a BigInt', 10n],
  ])('%s: RESULT_NOT_SERIALIZABLE, never a silent {}', (_name, result) => {
    expect(encodeResult(result, 65_536)).toBe(CommitCode.RESULT_NOT_SERIALIZABLE)
  })

  it('plain data, dates (as ISO text) and null are kept', () => {
    expect(encodeResult({ at: new Date(0), list: [1, 'x', null] }, 65_536)).toBe('{"at":"1970-01-01T00:00:00.000Z","list":[1,"x",null]}')
    expect(encodeResult(null, 65_536)).toBe('null')
    expect(encodeResult(undefined, 65_536)).toBe(null)
  })
})
