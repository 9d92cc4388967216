/**
 * Handlers that never settle, and effects that may or may not have happened
 * (issue 17): handlerTimeoutMs frees the shard and marks the key UNKNOWN in the
 * real Redis (a prefix of its own on the shared server), redeliveries are
 * never run nor acked, and a reconcile hook or an operator (`idem keys
 * resolve`) decides. threads: 1 puts the actor in a worker thread, so the
 * hook's resolve crosses the thread. Each test prints its counts.
 */
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import type { EngineOptions } from '../../dist/src/config.js'
import { ErrorCode, outcomeUnknown } from '../../dist/src/errors.js'
import type { Message, Outcome, ReconcileAnswer } from '../../dist/src/message.js'
import { idem } from '../support/idem-cli.js'
import { MYSQL_URL, PG_URL, sqlKit, type SqlKind } from '../support/sql.js'

const REDIS_URL = 'redis://127.0.0.1:6379'

const engines: Engine[] = []
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close({ timeoutMs: 2_000 })))
})
async function engine(prefix: string, options: EngineOptions): Promise<Engine> {
  const e = await createEngine({ shards: 1, leaseMs: 5_000, ...options, store: { kind: 'redis', url: REDIS_URL, prefix } })
  engines.push(e)
  return e
}

const never = new Promise<never>(() => {})
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const codeOf = (o: Outcome) => o.error?.code

const idemKeys = (...args: string[]) => idem('keys', ...args)
/** `idem keys … --json` prints one JSON object per key. */
const jsonLines = (stdout: string): Record<string, unknown>[] => stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>)

describe.each([0, 1])('handler timeouts and UNKNOWN keys, threads %i', (threads) => {
  it('a handler that never settles times out: its key goes UNKNOWN, the other keys of its shard settle meanwhile, redeliveries never run, close() returns', async () => {
    const prefix = `t:${randomUUID()}:`
    const e = await engine(prefix, { threads, handlerTimeoutMs: 300 })
    const runs = new Map<string, number>()
    let stuckSignal: AbortSignal | undefined
    const handler = async (m: Message, context: { signal?: AbortSignal }) => {
      runs.set(m.key, (runs.get(m.key) ?? 0) + 1)
      if (m.key === 'stuck') {
        stuckSignal = context.signal
        return never
      }
      await sleep(20)
      return m.key
    }
    const others = Array.from({ length: 8 }, (_, i) => ({ key: `other-${i}` }))
    const outcomes = await e.processBatch([{ key: 'stuck' }, ...others], handler)
    expect(outcomes[0].verdict).toBe('new')
    expect(codeOf(outcomes[0])).toBe(ErrorCode.OUTCOME_UNKNOWN)
    expect(outcomes.slice(1).map((o) => [o.verdict, o.error])).toEqual(others.map(() => ['new', undefined]))
    expect(stuckSignal?.aborted).toBe(true)
    expect((stuckSignal?.reason as { code?: string }).code).toBe(ErrorCode.HANDLER_TIMEOUT)

    // Redeliveries, to this engine and to another one on the same prefix: in-flight, never run.
    const other = await engine(prefix, { threads })
    const again = [...(await e.processBatch([{ key: 'stuck' }, { key: 'stuck' }], handler)), await other.process({ key: 'stuck' }, handler)]
    expect(again.map((o) => [o.verdict, codeOf(o)])).toEqual(again.map(() => ['in-flight', ErrorCode.OUTCOME_UNKNOWN]))
    expect(runs.get('stuck')).toBe(1)
    const shown = idemKeys('show', '--json', '--store', REDIS_URL, '--prefix', prefix, 'stuck', 'other-0')
    expect(shown.code).toBe(0)
    expect(jsonLines(shown.stdout).map((row) => [row.key, row.state])).toEqual([
      ['stuck', 'unknown'],
      ['other-0', 'done'],
    ])

    const { totals } = e.stats()
    expect([totals.handlerTimeouts, totals.outcomesUnknown, totals.verdicts.inFlight]).toEqual([1, 1, 2])
    // The stuck handler still holds its promise: close() does not wait for it.
    await e.close({ timeoutMs: 30_000 })
    console.log(`[timeout, threads ${threads}] stuck key: 1 run, ${again.length} redeliveries in-flight OUTCOME_UNKNOWN; 8 other keys of its shard settled; handlerTimeouts ${totals.handlerTimeouts}, outcomesUnknown ${totals.outcomesUnknown}; close() returned`)
  })

  it('a handler that re-enters its engine with its own key: the inner call waits, the outer one times out, the inner call gets in-flight OUTCOME_UNKNOWN; another key completes', async () => {
    const e = await engine(`t:${randomUUID()}:`, { threads, handlerTimeoutMs: 300 })
    let inner: Outcome | undefined
    let otherKey: Outcome | undefined
    const outer = await e.process({ key: 'outer' }, async () => {
      otherKey = await e.process({ key: 'other' }, async () => 'other ran')
      inner = await e.process({ key: 'outer' }, async () => 'inner ran')
      return 'outer ran'
    })
    expect(otherKey).toEqual({ key: 'other', verdict: 'new', result: 'other ran' })
    expect([outer.verdict, codeOf(outer)]).toEqual(['new', ErrorCode.OUTCOME_UNKNOWN])
    await expect.poll(() => inner !== undefined).toBe(true)
    expect([inner!.verdict, codeOf(inner!)]).toEqual(['in-flight', ErrorCode.OUTCOME_UNKNOWN])
  })

  it('reconcile resolves UNKNOWN keys both ways: done → a duplicate with the hook\'s result, not done → the handler runs again; one effect per key', async () => {
    const prefix = `t:${randomUUID()}:`
    const effects = new Map<string, number>()
    const effect = (key: string) => effects.set(key, (effects.get(key) ?? 0) + 1)
    const first = await engine(prefix, { threads, handlerTimeoutMs: 200 })
    // 'paid' did its effect and then hung; 'unpaid' hung before it; 'refund' could not tell and said so.
    const outcomes = await first.processBatch([{ key: 'paid' }, { key: 'unpaid' }, { key: 'refund' }], async (m) => {
      if (m.key === 'paid') effect(m.key)
      if (m.key === 'refund') {
        effect(m.key)
        throw outcomeUnknown('the refund API timed out')
      }
      return never
    })
    expect(outcomes.map(codeOf)).toEqual([ErrorCode.OUTCOME_UNKNOWN, ErrorCode.OUTCOME_UNKNOWN, ErrorCode.OUTCOME_UNKNOWN])
    expect(outcomes[2].error?.message).toMatch(/the refund API timed out/)

    const asked: string[] = []
    const answers: Record<string, ReconcileAnswer> = { paid: { result: 'receipt-1' }, unpaid: 'not-done', refund: 'done' }
    const second = await engine(prefix, { threads, reconcile: (m) => (asked.push(m.key), answers[m.key]) })
    const handler = async (m: Message) => {
      effect(m.key)
      return `ran ${m.key}`
    }
    const reconciled = await second.processBatch([{ key: 'paid' }, { key: 'unpaid' }, { key: 'refund' }], handler)
    expect(reconciled).toEqual([
      { key: 'paid', verdict: 'duplicate', result: 'receipt-1' },
      { key: 'unpaid', verdict: 'new', result: 'ran unpaid' },
      { key: 'refund', verdict: 'duplicate' },
    ])
    const later = await second.processBatch([{ key: 'paid' }, { key: 'unpaid' }, { key: 'refund' }], handler)
    expect(later.map((o) => o.verdict)).toEqual(['duplicate', 'duplicate', 'duplicate'])
    expect(later[0].result).toBe('receipt-1')
    expect(asked.sort()).toEqual(['paid', 'refund', 'unpaid'])
    expect(Object.fromEntries(effects)).toEqual({ paid: 1, unpaid: 1, refund: 1 })
    const { totals } = second.stats()
    expect([totals.reconciledDone, totals.reconciledNotDone, totals.reconcileUnanswered]).toEqual([2, 1, 0])
    console.log(`[reconcile, threads ${threads}] 3 UNKNOWN keys: 2 reconciled done, 1 not done and run again; effects per key ${JSON.stringify(Object.fromEntries(effects))}; hook calls ${asked.length}`)
  })

  it('a hook that cannot tell is asked again after a backoff, at most reconcileAttempts times; then `idem keys resolve` decides', async () => {
    const prefix = `t:${randomUUID()}:`
    const first = await engine(prefix, { threads, handlerTimeoutMs: 200 })
    expect(codeOf(await first.process({ key: 'k' }, async () => never))).toBe(ErrorCode.OUTCOME_UNKNOWN)

    let calls = 0
    // First a throw, then a hook that outlives its bound (handlerTimeoutMs), then no more calls.
    const second = await engine(prefix, {
      threads,
      handlerTimeoutMs: 200,
      reconcileAttempts: 2,
      reconcileBackoffMs: 100,
      reconcile: async () => {
        calls++
        if (calls === 1) throw new Error('ledger unreachable')
        return never
      },
    })
    const handler = async () => 'ran'
    const seen: string[] = []
    // Delivered as a queue would, until the hook has been asked twice and once more after that; bounded by count.
    for (let delivery = 0; delivery < 200 && (calls < 2 || seen.length < 3 || !seen.at(-1)!.includes('2 attempts')); delivery++) {
      const outcome = await second.process({ key: 'k' }, handler)
      expect([outcome.verdict, codeOf(outcome)]).toEqual(['in-flight', ErrorCode.OUTCOME_UNKNOWN])
      seen.push(outcome.error!.message)
      await sleep(25)
    }
    expect(calls).toBe(2)
    expect(seen.some((m) => m.includes('threw: ledger unreachable'))).toBe(true)
    expect(seen.some((m) => m.includes('did not answer within 200 ms'))).toBe(true)
    expect(seen.some((m) => m.includes('asked again in'))).toBe(true)
    expect(seen.at(-1)).toMatch(/gave no answer in 2 attempts; an operator resolves it with `idem keys resolve`/)
    expect(second.stats().totals.reconcileUnanswered).toBe(2)

    const resolved = idemKeys('resolve', '--json', '--store', REDIS_URL, '--prefix', prefix, '--done', '--result', '{"paid":true}', 'k')
    expect(resolved.stderr).toBe('')
    expect([resolved.code, jsonLines(resolved.stdout)]).toEqual([0, [{ key: 'k', resolved: true, state: 'done' }]])
    expect(await second.process({ key: 'k' }, handler)).toEqual({ key: 'k', verdict: 'duplicate', result: { paid: true } })
    const twice = idemKeys('resolve', '--json', '--store', REDIS_URL, '--prefix', prefix, '--not-done', 'k')
    expect([twice.code, jsonLines(twice.stdout)]).toEqual([1, [{ key: 'k', resolved: false, state: 'done' }]])
    console.log(`[operator, threads ${threads}] ${seen.length} deliveries in-flight OUTCOME_UNKNOWN, hook asked ${calls} times (a throw, a timeout), then \`idem keys resolve --done\`: duplicate with the operator's result`)
  })
})

describe.each([0, 1])('what a hostile review found, threads %i', (threads) => {
  it('a timed-out handler that ignores its signal and lands its effect late: the hook is not asked until it ends, so a "not done" answer cannot run a second copy beside it; one effect', async () => {
    let effects = 0
    let running = 0
    let maxRunning = 0
    const e = await engine(`t:${randomUUID()}:`, { threads, handlerTimeoutMs: 100, reconcile: () => (effects > 0 ? 'done' : 'not-done') })
    const handler = async () => {
      maxRunning = Math.max(maxRunning, ++running)
      await sleep(300)
      effects++
      running--
      return 'charged'
    }
    expect(codeOf(await e.process({ key: 'pay' }, handler))).toBe(ErrorCode.OUTCOME_UNKNOWN)
    const seen: string[] = []
    // Redelivered every 20 ms, as an eager queue would, until it settles; bounded by count.
    for (let delivery = 0; delivery < 100 && seen.at(-1) !== 'duplicate'; delivery++) {
      await sleep(20)
      const outcome = await e.process({ key: 'pay' }, handler)
      seen.push(outcome.verdict)
    }
    expect(seen.at(-1)).toBe('duplicate')
    expect([effects, maxRunning]).toEqual([1, 1])
    expect(e.stats().totals.reconciledDone).toBe(1)
  })

  it('a lease that lapses before the timeout (a long synchronous stretch): the key is still marked UNKNOWN, not released to run again', async () => {
    const e = await engine(`t:${randomUUID()}:`, { threads, leaseMs: 200, handlerTimeoutMs: 800 })
    let runs = 0
    const first = await e.process({ key: 'k' }, () => {
      runs++
      const until = performance.now() + 400
      while (performance.now() < until);
      return never
    })
    expect([first.verdict, codeOf(first)]).toEqual(['new', ErrorCode.OUTCOME_UNKNOWN])
    const again = await e.process({ key: 'k' }, async () => (runs++, 'ran'))
    expect([again.verdict, codeOf(again)]).toEqual(['in-flight', ErrorCode.OUTCOME_UNKNOWN])
    expect(runs).toBe(1)
  })

  it('a later UNKNOWN episode of a key gets its own reconcile attempts, after an operator resolved the first', async () => {
    const prefix = `t:${randomUUID()}:`
    let calls = 0
    let answer: ReconcileAnswer = 'unknown'
    const e = await engine(prefix, { threads, handlerTimeoutMs: 100, reconcileAttempts: 1, reconcileBackoffMs: 1, reconcile: () => (calls++, answer) })
    // Hangs until its signal says it timed out, as a well-behaved handler does.
    const hang = (_m: Message, { signal }: { signal?: AbortSignal }) => new Promise((_, reject) => signal!.addEventListener('abort', () => reject(signal!.reason)))
    expect(codeOf(await e.process({ key: 'k' }, hang))).toBe(ErrorCode.OUTCOME_UNKNOWN)
    await sleep(50)
    expect(codeOf(await e.process({ key: 'k' }, hang))).toBe(ErrorCode.OUTCOME_UNKNOWN)
    expect(calls).toBe(1)
    expect(idemKeys('resolve', '--store', REDIS_URL, '--prefix', prefix, '--not-done', 'k').code).toBe(0)
    // Runs again and times out again: a second episode.
    expect(codeOf(await e.process({ key: 'k' }, hang))).toBe(ErrorCode.OUTCOME_UNKNOWN)
    answer = 'done'
    await sleep(50)
    expect((await e.process({ key: 'k' }, hang)).verdict).toBe('duplicate')
    expect(calls).toBe(2)
  })

  it('a hook whose { result } the store cannot keep (a function inside): the key is done all the same, its duplicate says RESULT_NOT_SERIALIZABLE', async () => {
    const prefix = `t:${randomUUID()}:`
    const first = await engine(prefix, { threads, handlerTimeoutMs: 100 })
    expect(codeOf(await first.process({ key: 'k' }, async () => never))).toBe(ErrorCode.OUTCOME_UNKNOWN)
    const second = await engine(prefix, { threads, reconcile: () => ({ result: { receipt: () => 1 } }) })
    const reconciled = await second.process({ key: 'k' }, async () => 'ran')
    expect([reconciled.verdict, codeOf(reconciled), reconciled.result]).toEqual(['duplicate', ErrorCode.RESULT_NOT_SERIALIZABLE, undefined])
    expect(await second.process({ key: 'k' }, async () => 'ran')).toEqual({ key: 'k', verdict: 'duplicate' })
  })

  it('close() does not wait for a reconcile hook that ignores its signal', { timeout: 20_000 }, async () => {
    const prefix = `t:${randomUUID()}:`
    const first = await engine(prefix, { threads, handlerTimeoutMs: 100 })
    expect(codeOf(await first.process({ key: 'k' }, async () => never))).toBe(ErrorCode.OUTCOME_UNKNOWN)
    // handlerTimeoutMs off: the hook's own bound is 30 s, longer than this test may take.
    const second = await createEngine({ shards: 1, threads, reconcile: () => never, store: { kind: 'redis', url: REDIS_URL, prefix } })
    const pending = second.process({ key: 'k' }, async () => 'ran')
    await sleep(50)
    await second.close({ timeoutMs: 10_000 })
    const outcome = await pending
    expect([outcome.verdict, codeOf(outcome)]).toEqual(['in-flight', ErrorCode.OUTCOME_UNKNOWN])
    expect(outcome.error?.message).toMatch(/cut short: the engine is closing/)
  })
})

describe.each(['postgres', 'mysql', 'sqlite'] as SqlKind[])('on the %s store', (kind) => {
  it('a timed-out key is UNKNOWN in its table; `idem keys resolve --not-done` lets the next delivery run it', async () => {
    const kit = sqlKit(kind)
    try {
      const store = kit.store()
      const e = await createEngine({ shards: 2, handlerTimeoutMs: 200, store })
      engines.push(e)
      let runs = 0
      const first = await e.process({ key: 'k' }, async () => {
        runs++
        return never
      })
      expect(codeOf(first)).toBe(ErrorCode.OUTCOME_UNKNOWN)
      expect((await e.process({ key: 'k' }, async () => 'ran')).verdict).toBe('in-flight')
      const where = ['--store', kind === 'sqlite' ? `sqlite:${kit.file}` : kind === 'postgres' ? PG_URL : MYSQL_URL, '--table-prefix', store.tablePrefix]
      expect(jsonLines(idemKeys('show', '--json', ...where, 'k').stdout)).toEqual([expect.objectContaining({ key: 'k', state: 'unknown' })])
      const resolved = idemKeys('resolve', '--json', ...where, '--not-done', 'k')
      expect([resolved.code, jsonLines(resolved.stdout)]).toEqual([0, [{ key: 'k', resolved: true, state: 'absent' }]])
      expect(await e.process({ key: 'k' }, async () => (runs++, 'ran'))).toEqual({ key: 'k', verdict: 'new', result: 'ran' })
      expect(runs).toBe(2)
      await e.close()
    } finally {
      await kit.close()
    }
  })
})

describe('a handler module in a worker thread', () => {
  const dir = mkdtempSync(join(tmpdir(), 'idem-reconcile-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  const write = (name: string, source: string) => {
    const path = join(dir, name)
    writeFileSync(path, source)
    return path
  }

  it('times out in its worker, and its own `reconcile` export decides the key there', async () => {
    const handler = write(
      'payments.mjs',
      `export default async function handle(m, { signal }) {
        if (m.payload.hang) return new Promise((resolve, reject) => signal.addEventListener('abort', () => reject(signal.reason)))
        return 'ran ' + m.key
      }
      export function reconcile(m) { return 'not-done' }`,
    )
    const e = await engine(`t:${randomUUID()}:`, { threads: 1, handler, handlerTimeoutMs: 200 })
    const first = await e.process({ key: 'm1', payload: { hang: true } })
    expect([first.verdict, codeOf(first)]).toEqual(['new', ErrorCode.OUTCOME_UNKNOWN])
    expect(await e.process({ key: 'm1', payload: { hang: false } })).toEqual({ key: 'm1', verdict: 'new', result: 'ran m1' })
    const { totals } = e.stats()
    expect([totals.handlerTimeouts, totals.outcomesUnknown, totals.reconciledNotDone]).toEqual([1, 1, 1])
  })

  it.each([0, 1])("the engine's reconcile serves function handlers only: a module's messages get the module's own (none here), threads %i", async (threads) => {
    const handler = write(`plain-${threads}.mjs`, `export default async (m) => (m.payload.hang ? new Promise(() => {}) : 'ran')`)
    let calls = 0
    const e = await engine(`t:${randomUUID()}:`, { threads, handler, handlerTimeoutMs: 100, reconcile: () => (calls++, 'done') })
    expect(codeOf(await e.process({ key: 'm', payload: { hang: true } }))).toBe(ErrorCode.OUTCOME_UNKNOWN)
    await sleep(150)
    const again = await e.process({ key: 'm', payload: { hang: false } })
    expect([again.verdict, codeOf(again), calls]).toEqual(['in-flight', ErrorCode.OUTCOME_UNKNOWN, 0])
    expect(again.error?.message).toMatch(/no reconcile hook is configured/)
  })

  it('a module whose reconcile export is not a function is refused at createEngine', async () => {
    const handler = write('bad.mjs', `export default () => 1\nexport const reconcile = 'done'`)
    await expect(createEngine({ threads: 1, shards: 1, handler })).rejects.toMatchObject({ code: ErrorCode.HANDLER_LOAD_FAILED, message: expect.stringMatching(/exports reconcile, but it is string/) })
  })
})

describe('leases at the defaults (issue 17)', () => {
  it('1,024 synchronous handlers of 30 ms on one shard, leaseMs 30 s and maxBatch 1,024 as shipped, on Redis: every one commits, no LEASE_LOST, no fenced write', { timeout: 300_000 }, async () => {
    const e = await engine(`t:${randomUUID()}:`, { leaseMs: 30_000 })
    let effects = 0
    const messages = Array.from({ length: 1024 }, (_, i) => ({ key: `sync-${i}` }))
    const outcomes = await e.processBatch(messages, () => {
      const until = performance.now() + 30
      while (performance.now() < until);
      effects++
    })
    expect(outcomes.filter((o) => o.error !== undefined).map((o) => o.error!.code)).toEqual([])
    expect(effects).toBe(1024)
    expect(e.stats().totals.fencedWrites).toBe(0)
    expect((await e.processBatch(messages, () => effects++)).every((o) => o.verdict === 'duplicate')).toBe(true)
    console.log(`[defaults] 1,024 × 30 ms synchronous on one shard (${(1024 * 30) / 1000} s of CPU, beyond one 30 s lease): ${effects} effects, 0 LEASE_LOST, 0 fenced writes`)
  })
})

describe('idem keys: bad input', () => {
  it.each([
    [['resolve', '--store', REDIS_URL, 'k'], /exactly one of --done and --not-done/],
    [['resolve', '--store', REDIS_URL, '--done', '--not-done', 'k'], /exactly one of --done and --not-done/],
    [['resolve', '--store', REDIS_URL, '--not-done', '--result', '1', 'k'], /--result goes with --done only/],
    [['resolve', '--store', REDIS_URL, '--done', '--result', '{bad', 'k'], /--result must be JSON/],
    [['show', '--store', REDIS_URL, '--done', 'k'], /go with resolve, not show/],
    [['forget', '--store', REDIS_URL, '--ttl-ms', '5', 'k'], /--ttl-ms go with resolve, not forget/],
    [['show', '--store', REDIS_URL], /name at least one KEY/],
    [['show', 'k'], /give the store with --store/],
    [['show', '--store', 'memory', 'k'], /the memory store lives inside its engine/],
    [['show', '--store', 'ftp://x', 'k'], /must be memory, redis:\/\/…/],
    [['show', '--store', REDIS_URL, '--hash-tags', '0', 'k'], /hashTags/],
    [['show', '--store', REDIS_URL, ''], /KEY/],
    [['show', '--store', REDIS_URL, '--namespace', '', 'k'], /--namespace/],
    [['resolve', '--store', REDIS_URL, '--done', '--ttl-ms', '0', 'k'], /--ttl-ms must be a positive integer/],
    [['rename', 'k'], /the first word must be inspect, show, forget, purge, resolve/],
  ])('%j is refused with exit 2', (args, message) => {
    const run = idemKeys(...(args as string[]))
    expect(run.stderr).toMatch(message)
    expect(run.code).toBe(2)
  })

  it('a store that cannot be reached fails with exit 1 and the store error', () => {
    const run = idemKeys('show', '--store', 'redis://127.0.0.1:1', 'k')
    expect(run.stderr).toMatch(/STORE_FAILED/)
    expect(run.code).toBe(1)
  })
})
