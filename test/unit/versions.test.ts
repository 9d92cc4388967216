/**
 * Version-aware keys through the engine (README "Versions and state
 * machines"), on the memory store: verdicts, per-key order, transitions,
 * the in-memory transport's settle table, and every bad input.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { ConfigError, ErrorCode, MemoryQueue, Verdict, consumeMemoryQueue, createEngine, type Engine, type EngineOptions, type Message } from 'idem'

interface Status {
  version: number | bigint | string
  state?: string
}

const engines: Engine[] = []
async function engine(options: Partial<EngineOptions> = {}): Promise<Engine> {
  const created = await createEngine({ versions: { versionOf: (m: Message<Status>) => m.payload!.version }, ...options })
  engines.push(created)
  return created
}
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
})

const status = (key: string, version: Status['version'], state?: string): Message<Status> => ({ key, payload: { version, ...(state === undefined ? {} : { state }) } })
const verdicts = (outcomes: { verdict: string; error?: { code: string } }[]) => outcomes.map((o) => (o.error === undefined ? o.verdict : `${o.verdict}:${o.error.code}`))

describe('version-aware keys', () => {
  it('runs a newer version of a seen key, skips an older one as stale and the applied one as a duplicate', async () => {
    const e = await engine()
    const ran: string[] = []
    const handler = (m: Message<Status>) => {
      ran.push(`${m.key}@${m.payload!.version}`)
      return m.payload!.version
    }
    expect(verdicts(await e.processBatch([status('parcel', 2)], handler))).toEqual(['new'])
    expect(verdicts(await e.processBatch([status('parcel', 1), status('parcel', 2), status('parcel', 3)], handler))).toEqual(['stale', 'duplicate', 'new'])
    expect(ran).toEqual(['parcel@2', 'parcel@3'])
    const { verdicts: counted } = e.stats().totals
    expect(counted).toMatchObject({ new: 2, stale: 1, duplicate: 1 })
  })

  it('runs one key\'s versions of a batch in order, whatever order they came in, and none twice', async () => {
    const e = await engine()
    const ran: number[] = []
    const outcomes = await e.processBatch([5, 3, 4, 3, 1, 5].map((v) => status('k', v)), (m) => void ran.push(m.payload!.version as number))
    expect(ran).toEqual([1, 3, 4, 5])
    expect(verdicts(outcomes)).toEqual(['new', 'new', 'new', 'duplicate', 'new', 'duplicate'])
  })

  it('a newer version waits for an older one of the same key still running in this process; other keys of its batch do not wait', async () => {
    const e = await engine()
    const events: string[] = []
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const first = e.processBatch([status('k', 1)], async () => {
      events.push('v1 start')
      await gate
      events.push('v1 end')
    })
    const second = e.processBatch([status('k', 2), status('other', 1)], (m) => void events.push(`${m.key} v${m.payload!.version}`))
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(events).toEqual(['v1 start', 'other v1'])
    release()
    expect(verdicts(await first)).toEqual(['new'])
    expect(verdicts(await second)).toEqual(['new', 'new'])
    expect(events).toEqual(['v1 start', 'other v1', 'v1 end', 'k v2'])
  })

  it('a failed run releases the version: a redelivery runs it again, and older versions stay stale', async () => {
    const e = await engine()
    await e.process(status('k', 1), () => 'ok')
    let attempts = 0
    const flaky = () => {
      if (++attempts === 1) throw new Error('carrier API down')
    }
    const failed = await e.process(status('k', 3), flaky)
    expect(failed.verdict).toBe(Verdict.NEW)
    expect(failed.error?.code).toBe(ErrorCode.HANDLER_FAILED)
    expect((failed.error?.cause as Error).message).toBe('carrier API down')
    expect(verdicts(await e.processBatch([status('k', 1), status('k', 3)], flaky))).toEqual(['duplicate', 'new'])
    expect(attempts).toBe(2)
  })

  it('close gives up on a hung handler at its bound: every message without an outcome gets ENGINE_CLOSED in-flight', async () => {
    const e = await createEngine({ versions: { versionOf: (m: Message<Status>) => m.payload!.version } })
    const pending = e.processBatch([status('hung', 1), status('hung', 2), status('fine', 1)], (m) => (m.key === 'hung' ? new Promise(() => {}) : 'ok'))
    await new Promise((resolve) => setTimeout(resolve, 20))
    await e.close({ timeoutMs: 50 })
    const outcomes = await pending
    expect(verdicts(outcomes)).toEqual(['in-flight:ENGINE_CLOSED', 'in-flight:ENGINE_CLOSED', 'new'])
  })

  it('keys under two namespaces keep two versions', async () => {
    const e = await engine()
    await e.process({ ...status('k', 5), namespace: 'eu' }, () => 1)
    expect((await e.process({ ...status('k', 3), namespace: 'us' }, () => 1)).verdict).toBe(Verdict.NEW)
    expect((await e.process({ ...status('k', 3), namespace: 'eu' }, () => 1)).verdict).toBe(Verdict.STALE)
  })

  it('through the in-memory transport: stale and duplicate deliveries are acked, none runs', async () => {
    const e = await engine()
    const queue = new MemoryQueue<Status>()
    for (const v of [1, 2, 2, 1, 3, 2]) queue.add(status('order-7', v))
    const ran: number[] = []
    // One message per batch: deliveries arrive one by one, as from a broker.
    await consumeMemoryQueue(queue, e, (m) => void ran.push(m.payload!.version as number), { batchSize: 1, batchesInFlight: 1 })
    expect(ran).toEqual([1, 2, 3])
    expect([queue.acked, queue.redeliveries, queue.failed.length]).toEqual([6, 0, 0])
    expect(e.stats().totals.verdicts).toMatchObject({ new: 3, duplicate: 1, stale: 2 })
  })
})

describe('state transitions', () => {
  const transitions = { created: ['paid', 'cancelled'], paid: ['shipped', 'refunded'], shipped: ['delivered'] }
  const withStates = () =>
    engine({ versions: { versionOf: (m: Message<Status>) => m.payload!.version, stateOf: (m: Message<Status>) => m.payload!.state!, transitions, initial: ['created'] } })

  it('applies allowed moves and answers a move the table does not allow invalid with ILLEGAL_TRANSITION, leaving the state as it was', async () => {
    const e = await withStates()
    const ran: string[] = []
    const handler = (m: Message<Status>) => void ran.push(m.payload!.state!)
    expect(verdicts(await e.processBatch([status('o', 1, 'created'), status('o', 2, 'paid')], handler))).toEqual(['new', 'new'])
    const skipped = await e.process(status('o', 3, 'delivered'), handler)
    expect(skipped.verdict).toBe(Verdict.INVALID)
    expect(skipped.error?.code).toBe(ErrorCode.ILLEGAL_TRANSITION)
    expect(skipped.error?.message).toContain('"paid" (version 2) does not move to it')
    expect(verdicts(await e.processBatch([status('o', 3, 'shipped'), status('o', 4, 'delivered')], handler))).toEqual(['new', 'new'])
    expect(ran).toEqual(['created', 'paid', 'shipped', 'delivered'])
  })

  it('a key must start in an initial state', async () => {
    const e = await withStates()
    const outcome = await e.process(status('o', 1, 'paid'), () => 1)
    expect(outcome.error?.code).toBe(ErrorCode.ILLEGAL_TRANSITION)
    expect(outcome.error?.message).toContain('not an initial state')
    // Refused moves leave no claim behind: the key starts properly next.
    expect((await e.process(status('o', 2, 'created'), () => 1)).verdict).toBe(Verdict.NEW)
  })

  it('an illegal move through the transport is rejected, not retried', async () => {
    const e = await withStates()
    const queue = new MemoryQueue<Status>({ retryDelayMs: 1 })
    queue.add(status('o', 1, 'created'))
    queue.add(status('o', 2, 'delivered'))
    await consumeMemoryQueue(queue, e, () => undefined, { batchSize: 1, batchesInFlight: 1 })
    expect(queue.failed.map((f) => [f.outcome.error?.code, f.attempts])).toEqual([[ErrorCode.ILLEGAL_TRANSITION, 1]])
    expect(queue.acked).toBe(1)
  })
})

describe('bad input', () => {
  it('a message whose version or state is not one is invalid, naming the key and why; the others run', async () => {
    const e = await engine({ versions: { versionOf: (m: Message<Status>) => m.payload!.version, stateOf: (m: Message<Status>) => m.payload!.state!, transitions: { a: ['b'] } } })
    const bad = [status('neg', -1, 'a'), status('frac', 1.5, 'a'), status('empty', '', 'a'), status('nostate', 1), status('longstate', 1, 'x'.repeat(101)), { key: 'nopayload' }]
    const outcomes = await e.processBatch([...bad, status('good', 1, 'a')] as Message<Status>[], () => 'ran')
    expect(verdicts(outcomes)).toEqual([...bad.map(() => 'invalid:INVALID_MESSAGE'), 'new'])
    expect(outcomes[0].error?.message).toContain('non-negative safe integer')
    expect(outcomes[0].error?.message).toContain('"neg"')
    expect(outcomes[5].error?.message).toContain('versionOf threw')
  })

  it('bad versions options are one ConfigError naming each field', async () => {
    const cases: [unknown, string][] = [
      [{}, 'versions.versionOf'],
      [{ versionOf: 1 }, 'versions.versionOf'],
      [{ versionOf: () => 1, stateOf: () => 'a' }, 'versions.transitions'],
      [{ versionOf: () => 1, transitions: { a: ['b'] } }, 'versions.stateOf'],
      [{ versionOf: () => 1, stateOf: () => 'a', transitions: { a: 'b' } }, 'versions.transitions'],
      [{ versionOf: () => 1, stateOf: () => 'a', transitions: {} }, 'versions.transitions'],
      [{ versionOf: () => 1, stateOf: () => 'a', transitions: { a: ['b'] }, initial: [] }, 'versions.initial'],
      [{ versionOf: () => 1, initial: ['a'] }, 'versions.initial'],
      [{ versionOf: () => 1, typo: 1 }, 'versions.typo'],
      ['latest', 'versions'],
    ]
    for (const [versions, field] of cases) {
      const error = await createEngine({ versions } as EngineOptions).catch((e) => e)
      expect(error, JSON.stringify(field)).toBeInstanceOf(ConfigError)
      expect((error as ConfigError).problems.join('\n')).toContain(field)
    }
  })

  it('what versions do not run with is refused by name', async () => {
    const versions = { versionOf: () => 1 }
    const cases: [Partial<EngineOptions>, string][] = [
      [{ threads: 1 }, 'threads'],
      [{ mode: 'owned' }, 'mode'],
      [{ store: { kind: 'custom', create: () => ({}) } as unknown as EngineOptions['store'] }, 'store'],
      [{ store: { kind: 'sqlite', path: ':memory:', createTables: false } }, 'store.createTables'],
      [{ store: { kind: 'redis', cluster: [{ host: '127.0.0.1', port: 7000 }] } }, 'store'],
      [{ rollout: 'shadow' }, 'rollout'],
      [{ handlerTimeoutMs: 1000 }, 'handlerTimeoutMs'],
      [{ reconcile: () => 'done' }, 'reconcile'],
    ]
    for (const [options, field] of cases) {
      const error = await createEngine({ versions, ...options }).catch((e) => e)
      expect(error, field).toBeInstanceOf(ConfigError)
      expect((error as ConfigError).problems.some((p) => p.startsWith(field))).toBe(true)
    }
  })
})
