/**
 * The transports' options: one test per validation message, the whole line
 * asserted (the pattern of config.test.ts). No server: an engine is only
 * looked at for its shape and its config.
 */
import { describe, expect, it } from 'vitest'
import { ErrorCode } from '../../dist/src/errors.js'
import { resolveConsumerOptions, resolveProcessorOptions } from '../../dist/src/transport/bullmq/options.js'
import { resolveStreamConsumerOptions } from '../../dist/src/transport/redis-streams/options.js'

const engineWith = (leaseMs: number, store: Record<string, unknown> = { kind: 'redis', url: 'redis://127.0.0.1:6379' }, mode = 'strict') => ({
  processBatch() {},
  config: { leaseMs, store, mode, ownership: { leaseMs: 1500 } },
})

/** The one ConfigError a resolve throws, with exactly these problem lines. */
const configError = (...problems: string[]) => expect.objectContaining({ code: ErrorCode.INVALID_CONFIG, problems })

describe('bullmq consumer options', () => {
  const base = { queue: 'q', connection: { host: '127.0.0.1' }, engine: engineWith(60_000), handler: () => 1, keyOf: () => 'k' }
  const cases: [string, Record<string, unknown>, string][] = [
    ['queue empty', { queue: '' }, 'queue: must be a non-empty queue name, got ""'],
    ['engine not an engine', { engine: {} }, 'engine: must be an idem Engine (from createEngine), got {}'],
    ['handler not a function', { handler: 'no' }, 'handler: must be a function (job, token) => result, got "no"'],
    ['keyOf missing', { keyOf: undefined }, 'keyOf: must be a function of the job, got undefined'],
    ['fingerprintOf not a function', { fingerprintOf: 'x' }, 'fingerprintOf: must be a function of the job, got "x"'],
    ['namespaceOf not a function', { namespaceOf: 1 }, 'namespaceOf: must be a function of the job, got 1'],
    ['onSettled not a function', { onSettled: true }, 'onSettled: must be a function of the settlement, got true'],
    ['concurrency zero', { concurrency: 0 }, 'concurrency: must be an integer from 1 to 65536, got 0'],
    [
      'lockDuration under the lease',
      { lockDuration: 30_000 },
      "lockDuration: must be at least the engine's leaseMs (60000), so that a stalled job is redelivered only after its claim lapsed, got 30000",
    ],
    ['inFlightDelay not an object', { inFlightDelay: 5 }, 'inFlightDelay: must be an object { initialMs?, maxMs? }, got 5'],
    ['inFlightDelay.initialMs zero', { inFlightDelay: { initialMs: 0 } }, 'inFlightDelay.initialMs: must be an integer from 1 to 3600000, got 0'],
    ['inFlightDelay.maxMs under initialMs', { inFlightDelay: { initialMs: 500, maxMs: 100 } }, 'inFlightDelay.maxMs: must be at least inFlightDelay.initialMs (500), got 100'],
    ['progressIntervalMs too small', { progressIntervalMs: 1 }, 'progressIntervalMs: must be an integer from 10 to 3600000, got 1'],
    ['connection missing', { connection: undefined }, 'connection: must be BullMQ connection options or an ioredis client, got undefined'],
  ]
  for (const [name, overrides, message] of cases) {
    it(`refuses ${name}`, () => {
      expect(() => resolveConsumerOptions({ ...base, ...overrides } as never)).toThrow(configError(message))
    })
  }

  it('refuses options that are not an object', () => {
    expect(() => resolveConsumerOptions(42 as never)).toThrow(configError('options: must be an object, got 42'))
    const problems: string[] = []
    resolveProcessorOptions(engineWith(1000), () => 1, 42, problems)
    expect(problems).toEqual(['options: must be an object with at least keyOf, got 42'])
  })

  it('names every bad field in one error, and passes the rest to BullMQ', () => {
    expect(() => resolveConsumerOptions({ ...base, queue: 7, concurrency: -1, keyOf: null } as never)).toThrow(
      configError('keyOf: must be a function of the job, got null', 'queue: must be a non-empty queue name, got 7', 'concurrency: must be an integer from 1 to 65536, got -1'),
    )
    const config = resolveConsumerOptions({ ...base, maxStalledCount: 3 } as never)
    expect(config.worker).toEqual({ connection: { host: '127.0.0.1' }, maxStalledCount: 3, concurrency: 256, lockDuration: 60_000 })
    expect(config.processor.inFlightDelay).toEqual({ initialMs: 100, maxMs: 5000 })
  })
})

describe('redis streams consumer options', () => {
  const base = { stream: 's', group: 'g', consumer: 'a', engine: engineWith(1000), handler: () => 1, keyOf: () => 'k' }
  const cases: [string, Record<string, unknown>, string][] = [
    ['stream empty', { stream: '' }, 'stream: must be a non-empty string, got ""'],
    ['group a number', { group: 7 }, 'group: must be a non-empty string, got 7'],
    ['consumer missing', { consumer: undefined }, 'consumer: must be a non-empty string, got undefined'],
    ['engine not an engine', { engine: {} }, 'engine: must be an idem Engine (from createEngine), got {}'],
    ['handler not a function', { handler: 'x' }, 'handler: must be a function (entry, context) => result, got "x"'],
    ['keyOf missing', { keyOf: undefined }, 'keyOf: must be a function of the entry ({ id, fields, deliveries }), got undefined'],
    ['fingerprintOf not a function', { fingerprintOf: 1 }, 'fingerprintOf: must be a function of the entry, got 1'],
    ['namespaceOf null', { namespaceOf: null }, 'namespaceOf: must be a function of the entry, got null'],
    ['connection of another scheme', { connection: 'http://x' }, 'connection: must be a redis:// or rediss:// URL, got "http://x"'],
    ['connection not a client', { connection: {} }, 'connection: must be a redis:// URL or an ioredis Redis client, got {}'],
    [
      'connection a cluster',
      { connection: { duplicate() {}, call() {}, isCluster: true } },
      'connection: must be a single Redis, as the streams transport does not read from a Redis Cluster, got { duplicate: function duplicate, call: function call, isClus…',
    ],
    [
      'no connection beside a memory-store engine',
      { engine: engineWith(1000, { kind: 'memory' }) },
      "connection: must be given, as the engine's store (memory) names no single Redis to read the stream from, got undefined",
    ],
    ['count zero', { count: 0 }, 'count: must be an integer from 1 to 65536, got 0'],
    ['batchesInFlight fractional', { batchesInFlight: 1.5 }, 'batchesInFlight: must be an integer from 1 to 64, got 1.5'],
    ['blockMs zero', { blockMs: 0 }, 'blockMs: must be an integer from 1 to 2147483647, got 0'],
    [
      'claimIdleMs under the lease',
      { claimIdleMs: 500 },
      "claimIdleMs: must be at least the engine's leaseMs (1000), as a dead consumer's claims lapse only after leaseMs, so its entries taken over sooner would find their keys in flight, got 500",
    ],
    ['reclaimIntervalMs too small', { reclaimIntervalMs: 5 }, 'reclaimIntervalMs: must be an integer from 10 to 2147483647, got 5'],
    ['maxDeliveries zero', { maxDeliveries: 0 }, 'maxDeliveries: must be an integer from 1 to 1000000, got 0'],
    ['retryDelayMs over claimIdleMs', { claimIdleMs: 2000, retryDelayMs: 3000 }, 'retryDelayMs: must be at most claimIdleMs (2000), got 3000'],
    ['inFlightDelayMs over claimIdleMs', { claimIdleMs: 2000, inFlightDelayMs: 2001 }, 'inFlightDelayMs: must be at most claimIdleMs (2000), got 2001'],
    ['deadLetterStream empty', { deadLetterStream: '' }, 'deadLetterStream: must be a non-empty string, got ""'],
    ['deadLetterStream the stream itself', { deadLetterStream: 's' }, 'deadLetterStream: must be other than stream ("s"), got "s"'],
    ['startId a word', { startId: 'latest' }, `startId: must be '0', '$' or a stream id like '1718000000000-0', got "latest"`],
    ['mode a word', { mode: 'fast' }, "mode: must be 'strict' or 'owned', got \"fast\""],
    ['mode owned beside a strict engine', { mode: 'owned' }, "mode: must be the engine's mode ('strict'): create the engine with mode: 'owned', got \"owned\""],
    [
      'mode strict beside an owned engine',
      { mode: 'strict', engine: engineWith(1000, undefined, 'owned') },
      "mode: must be the engine's mode ('owned'): an owned engine reads the partition streams, got \"strict\"",
    ],
    [
      'an unknown option',
      { concurrency: 5 },
      'concurrency: must be left out (not an option of createStreamConsumer; known: stream, mode, group, consumer, engine, handler, keyOf, fingerprintOf, namespaceOf, connection, count, batchesInFlight, blockMs, claimIdleMs, reclaimIntervalMs, maxDeliveries, retryDelayMs, inFlightDelayMs, deadLetterStream, startId), got 5',
    ],
  ]
  for (const [name, overrides, message] of cases) {
    it(`refuses ${name}`, () => {
      expect(() => resolveStreamConsumerOptions({ ...base, ...overrides } as never)).toThrow(configError(message))
    })
  }

  it('refuses options that are not an object', () => {
    expect(() => resolveStreamConsumerOptions(null as never)).toThrow(configError('options: must be an object, got null'))
  })

  it('fills the defaults, the connection from the engine store', () => {
    const filled = { count: 1024, batchesInFlight: 8, blockMs: 1000, claimIdleMs: 60_000, reclaimIntervalMs: 1000, maxDeliveries: 5, retryDelayMs: 5000, inFlightDelayMs: 1000, startId: '0' }
    expect(resolveStreamConsumerOptions(base as never)).toMatchObject({ ...filled, mode: 'strict', connection: 'redis://127.0.0.1:6379', deadLetterStream: 's:dead' })
  })

  it("owned mode: the engine's mode by default; claimIdleMs defaults to the engine's ownership.leaseMs and may be below its key leaseMs", () => {
    const owned = { ...base, engine: engineWith(30_000, undefined, 'owned') }
    expect(resolveStreamConsumerOptions(owned as never)).toMatchObject({ mode: 'owned', claimIdleMs: 1500, inFlightDelayMs: 1000, retryDelayMs: 1500 })
    expect(resolveStreamConsumerOptions({ ...owned, claimIdleMs: 500 } as never)).toMatchObject({ claimIdleMs: 500, inFlightDelayMs: 500 })
  })
})
