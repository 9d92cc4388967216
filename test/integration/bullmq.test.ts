import { randomUUID } from 'node:crypto'
import { Queue, type Job, type JobsOptions } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ConfigError } from '../../dist/src/errors.js'
import { createConsumer, idemProcessor, jobActionOf, type Consumer, type ConsumerOptions } from '../../dist/src/transport/bullmq/index.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { startProxy } from '../support/tcp-proxy.js'
import { waitFor } from '../support/wait-for.js'

// Every test owns a random queue and a random store prefix on the shared Redis,
// and deletes both afterwards: the database is never flushed.
const url = 'redis://127.0.0.1:6379'
const connection = { host: '127.0.0.1', port: 6379 }
const redis = new Redis(url)
const engines: Engine[] = []
const consumers: Consumer<any, any>[] = []
const queues: Queue[] = []
const prefixes: string[] = []

function prefix(): string {
  const p = `test:bullmq:${randomUUID()}:`
  prefixes.push(p)
  return p
}
function queue(): Queue {
  const q = new Queue(`idem-test-${randomUUID()}`, { connection })
  queues.push(q)
  return q
}
async function engine(storePrefix = prefix(), options: Record<string, unknown> = {}): Promise<Engine> {
  const e = await createEngine({ shards: 4, lru: { maxKeys: 0 }, ...options, store: { kind: 'redis', url, prefix: storePrefix } })
  engines.push(e)
  return e
}
function consumer<D, R>(options: ConsumerOptions<D, R>): Consumer<D, R> {
  const c = createConsumer<D, R>({ stalledInterval: 1000, ...options })
  consumers.push(c)
  return c
}

afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.close()))
  await Promise.all(engines.splice(0).map((e) => e.close()))
  for (const q of queues.splice(0)) {
    await q.obliterate({ force: true })
    await q.close()
  }
  for (const p of prefixes.splice(0)) await deleteKeysUnder(redis, p)
})
afterAll(() => redis.disconnect())

/** Waits until every job of the queue is completed or failed, then returns them by id. */
async function settled(q: Queue, total: number, timeoutMs = 15_000): Promise<Map<string, { state: string; job: Job }>> {
  await waitFor(`${total} jobs settled`, async () => {
    const counts = await q.getJobCounts('completed', 'failed')
    return counts.completed + counts.failed === total
  }, timeoutMs)
  const out = new Map<string, { state: string; job: Job }>()
  for (const state of ['completed', 'failed'] as const) {
    for (const job of await q.getJobs([state], 0, -1)) out.set(job.id!, { state, job })
  }
  return out
}

/** A handler that counts its runs per key and returns a result naming the key. */
function counting() {
  const runs = new Map<string, number>()
  const handler = (job: Job<{ key: string }>): string => {
    runs.set(job.data.key, (runs.get(job.data.key) ?? 0) + 1)
    return `done:${job.data.key}`
  }
  return { runs, handler }
}

const byKey = { keyOf: (job: Job<{ key: unknown }>) => job.data.key }

describe('idemProcessor: verdict → job state', () => {
  it('new → completed with the handler result; the same key again → completed without a run, returning the stored result', async () => {
    const q = queue()
    const { runs, handler } = counting()
    const c = consumer({ queue: q.name, connection, engine: await engine(), handler, ...byKey })
    const first = await q.add('j', { key: 'order-1' })
    await settled(q, 1)
    const second = await q.add('j', { key: 'order-1' })
    const jobs = await settled(q, 2)
    expect(jobs.get(first.id!)).toMatchObject({ state: 'completed', job: { returnvalue: 'done:order-1' } })
    expect(jobs.get(second.id!)).toMatchObject({ state: 'completed', job: { returnvalue: 'done:order-1' } })
    expect(runs.get('order-1')).toBe(1)
    expect(c.stats()).toMatchObject({ completed: 2, new: 1, duplicates: 1, failed: 0, retriedInFlight: 0 })
  })

  it('conflict → failed without retries, reason "CONFLICT: …", attempts left unused', async () => {
    const q = queue()
    const { runs, handler } = counting()
    const c = consumer({
      queue: q.name,
      connection,
      engine: await engine(),
      handler,
      keyOf: (job: Job<{ key: string; amount: number }>) => job.data.key,
      fingerprintOf: (job: Job<{ key: string; amount: number }>) => `amount=${job.data.amount}`,
    })
    await q.add('j', { key: 'pay-1', amount: 10 })
    await settled(q, 1)
    const changed = await q.add('j', { key: 'pay-1', amount: 99 }, { attempts: 5 })
    const jobs = await settled(q, 2)
    const failed = jobs.get(changed.id!)!
    expect(failed.state).toBe('failed')
    expect(failed.job.failedReason).toMatch(/^CONFLICT: key "pay-1" was processed with fingerprint "amount=10"; this message has "amount=99"/)
    expect(failed.job.attemptsMade).toBe(1)
    expect(runs.get('pay-1')).toBe(1)
    expect(c.stats()).toMatchObject({ completed: 1, rejected: 1, failed: 1 })
  })

  it('invalid → failed without retries, reason "INVALID_KEY: …"', async () => {
    const q = queue()
    const { handler } = counting()
    consumer({ queue: q.name, connection, engine: await engine(), handler, ...byKey })
    const bad = await q.add('j', { key: '' }, { attempts: 5 })
    const jobs = await settled(q, 1)
    expect(jobs.get(bad.id!)!.state).toBe('failed')
    expect(jobs.get(bad.id!)!.job.failedReason).toMatch(/^INVALID_KEY: /)
    expect(jobs.get(bad.id!)!.job.attemptsMade).toBe(1)
  })

  it('in-flight → delayed without using an attempt while another owner holds the key, then completed as a duplicate once it commits', async () => {
    const p = prefix()
    const q = queue()
    const other = await engine(p)
    let finishOther!: () => void
    const otherRuns = other.process({ key: 'busy' }, () => new Promise<string>((resolve) => (finishOther = () => resolve('other:busy'))))
    await waitFor('the other owner to claim', () => finishOther !== undefined)

    const { runs, handler } = counting()
    const delays: number[] = []
    const c = consumer({
      queue: q.name,
      connection,
      engine: await engine(p),
      handler,
      ...byKey,
      inFlightDelay: { initialMs: 50, maxMs: 200 },
      onSettled: (s) => void (s.action === 'delayed' && delays.push(s.ms)),
    })
    const job = await q.add('j', { key: 'busy' }, { attempts: 1 })
    await waitFor('two in-flight retries', () => c.stats().retriedInFlight >= 2)
    expect(['delayed', 'waiting', 'active']).toContain(await job.getState())
    expect(runs.size).toBe(0)

    finishOther()
    expect((await otherRuns).verdict).toBe('new')
    const jobs = await settled(q, 1)
    // attempts: 1, yet it completed after several in-flight rounds: they used no attempt.
    expect(jobs.get(job.id!)).toMatchObject({ state: 'completed', job: { returnvalue: 'other:busy', attemptsMade: 1 } })
    expect(jobs.get(job.id!)!.job.attemptsStarted).toBeGreaterThanOrEqual(3)
    expect(runs.size).toBe(0)
    expect(c.stats()).toMatchObject({ completed: 1, duplicates: 1, failed: 0 })
  })

  it('a handler that times out: its job is delayed while its key is UNKNOWN, never completed nor failed, until the reconcile hook says done; one effect', async () => {
    const p = prefix()
    const q = queue()
    let effects = 0
    let hookCalls = 0
    let decided = false
    const c = consumer({
      queue: q.name,
      connection,
      engine: await engine(p, {
        handlerTimeoutMs: 200,
        reconcileBackoffMs: 50,
        // The business system does not know yet on the first calls, then finds the effect.
        reconcile: () => (++hookCalls < 3 ? 'unknown' : ((decided = true), { result: 'found in the ledger' })),
      }),
      handler: async () => {
        effects++
        // Did its effect, then hung past its timeout (ignoring its signal): only the ledger knows.
        await new Promise((resolve) => setTimeout(resolve, 400))
        return 'late'
      },
      ...byKey,
      inFlightDelay: { initialMs: 50, maxMs: 200 },
    })
    const job = await q.add('j', { key: 'pay-1' }, { attempts: 1 })
    const jobs = await settled(q, 1)
    expect(decided).toBe(true)
    // attempts: 1, yet it went through the timeout and several in-flight rounds: none used an attempt.
    expect(jobs.get(job.id!)).toMatchObject({ state: 'completed', job: { returnvalue: 'found in the ledger', attemptsMade: 1 } })
    expect(effects).toBe(1)
    expect(hookCalls).toBe(3)
    expect(c.stats()).toMatchObject({ completed: 1, duplicates: 1, failed: 0 })
  })

  it('the in-flight backoff grows with the starts of a job and is bounded', async () => {
    const { inFlightDelayOf } = await import('../../dist/src/transport/bullmq/processor.js')
    const config = { inFlightDelay: { initialMs: 100, maxMs: 1000 } }
    const delay = (attemptsStarted: number, attemptsMade = 0) => inFlightDelayOf({ attemptsStarted, attemptsMade }, config)
    for (let i = 0; i < 50; i++) {
      expect(delay(1)).toBeGreaterThanOrEqual(50)
      expect(delay(1)).toBeLessThanOrEqual(100)
      expect(delay(3)).toBeGreaterThanOrEqual(200)
      expect(delay(3)).toBeLessThanOrEqual(400)
      expect(delay(100)).toBeLessThanOrEqual(1000)
      expect(delay(100)).toBeGreaterThanOrEqual(500)
      expect(delay(4, 3)).toBeLessThanOrEqual(100) // after real attempts the count starts again
    }
  })

  it('a handler error fails the attempt (claim released) and BullMQ retries it; the run that returns commits once', async () => {
    const q = queue()
    let runs = 0
    const c = consumer({
      queue: q.name,
      connection,
      engine: await engine(),
      handler: () => {
        if (++runs < 3) throw new Error(`flaky ${runs}`)
        return 'third time'
      },
      ...byKey,
    })
    const job = await q.add('j', { key: 'flaky' }, { attempts: 3, backoff: { type: 'fixed', delay: 10 } })
    const jobs = await settled(q, 1)
    expect(jobs.get(job.id!)).toMatchObject({ state: 'completed', job: { returnvalue: 'third time', attemptsMade: 3 } })
    expect(runs).toBe(3)
    expect(c.stats()).toMatchObject({ completed: 1, new: 1, handlerErrors: 2, failed: 2 })

    // Retries used up: the job fails with the handler's own error, and the key stays free.
    const q2 = queue()
    const c2 = consumer({ queue: q2.name, connection, engine: await engine(), handler: () => Promise.reject(new Error('always')), ...byKey })
    const doomed = await q2.add('j', { key: 'doomed' }, { attempts: 2 })
    const failed = (await settled(q2, 1)).get(doomed.id!)!
    expect(failed.state).toBe('failed')
    expect(failed.job.failedReason).toBe('always')
    expect(failed.job.attemptsMade).toBe(2)
    expect(c2.stats().handlerErrors).toBe(2)
  })

  it('a result the store does not keep still completes the job (the key is done)', async () => {
    const p = prefix()
    const q = queue()
    const e = await createEngine({ shards: 2, store: { kind: 'redis', url, prefix: p, maxResultBytes: 8 } })
    engines.push(e)
    let runs = 0
    consumer({
      queue: q.name,
      connection,
      engine: e,
      handler: () => {
        runs++
        return 'a result longer than eight bytes'
      },
      ...byKey,
    })
    const first = await q.add('j', { key: 'big' })
    await settled(q, 1)
    const again = await q.add('j', { key: 'big' })
    const jobs = await settled(q, 2)
    expect(jobs.get(first.id!)).toMatchObject({ state: 'completed', job: { returnvalue: 'a result longer than eight bytes' } })
    expect(jobs.get(again.id!)!.state).toBe('completed')
    expect(runs).toBe(1)
  })

  it('jobActionOf: every verdict and code to its job action', () => {
    const action = (verdict: string, code?: string) => jobActionOf({ key: 'k', verdict, ...(code ? { error: { code } } : {}) } as never)
    expect(action('new')).toBe('completed')
    expect(action('new', 'RESULT_TOO_LARGE')).toBe('completed')
    expect(action('new', 'RESULT_NOT_SERIALIZABLE')).toBe('completed')
    expect(action('new', 'HANDLER_FAILED')).toBe('thrown')
    expect(action('new', 'LEASE_LOST')).toBe('thrown')
    expect(action('new', 'STORE_FAILED')).toBe('delayed')
    expect(action('new', 'WORKER_DIED')).toBe('delayed')
    // A close that gave up on a running handler: its claim lapses, the redelivery runs it; no attempt used.
    expect(action('new', 'ENGINE_CLOSED')).toBe('delayed')
    // Timed out, or the handler could not tell: the key is UNKNOWN, its job waits for the decision without using an attempt.
    expect(action('new', 'OUTCOME_UNKNOWN')).toBe('delayed')
    expect(action('duplicate')).toBe('completed')
    for (const code of ['IN_FLIGHT', 'STORE_FAILED', 'REPLICA_SHORTFALL', 'ENGINE_CLOSED', 'OUTCOME_UNKNOWN']) expect(action('in-flight', code)).toBe('delayed')
    // A thread death uses an attempt: a job whose handler module kills its thread ends failed, not in a loop.
    expect(action('in-flight', 'WORKER_DIED')).toBe('thrown')
    expect(action('conflict', 'CONFLICT')).toBe('rejected')
    expect(action('invalid', 'INVALID_KEY')).toBe('rejected')
  })

  it('a commit the store could not take: delayed without using an attempt, then completed as a duplicate once the late commit lands; one effect', async () => {
    const p = prefix()
    const q = queue()
    // The engine reaches Redis through a proxy the test can cut; BullMQ talks to Redis directly.
    const proxy = await startProxy(6379)
    try {
      const e = await createEngine({ shards: 2, store: { kind: 'redis', url: `redis://127.0.0.1:${proxy.port}`, prefix: p, commandTimeoutMs: 200, retries: 2, retryBackoffMs: 50 } })
      engines.push(e)
      let effects = 0
      const c = consumer({
        queue: q.name,
        connection,
        engine: e,
        handler: () => {
          effects++
          proxy.drop() // the effect happened; its commit will not get through
          setTimeout(() => proxy.heal(), 1500)
          return 'charged'
        },
        ...byKey,
        inFlightDelay: { initialMs: 100, maxMs: 300 },
      })
      const job = await q.add('j', { key: 'cut' }, { attempts: 1 })
      const jobs = await settled(q, 1, 20_000)
      expect(jobs.get(job.id!)!.state).toBe('completed')
      expect(jobs.get(job.id!)!.job.returnvalue).toBe('charged') // the stored result, from the late commit
      expect(effects).toBe(1)
      expect(c.stats()).toMatchObject({ new: 0, duplicates: 1, failed: 0 })
      expect(c.stats().settleErrors).toBe(1)
      expect(e.stats().totals.lateSettlements).toBeGreaterThan(0)
    } finally {
      proxy.heal()
      await proxy.close()
    }
  })

  it('an engine closed under its consumer: the job fails with ENGINE_CLOSED (BullMQ may retry it), the handler never runs', async () => {
    const q = queue()
    const e = await engine()
    await e.close()
    let runs = 0
    const c = consumer({ queue: q.name, connection, engine: e, handler: () => void runs++, ...byKey })
    const job = await q.add('j', { key: 'late' })
    const failed = (await settled(q, 1)).get(job.id!)!
    expect(failed.state).toBe('failed')
    expect(failed.job.failedReason).toMatch(/the engine is closed/)
    expect(runs).toBe(0)
    expect(c.stats()).toMatchObject({ failed: 1, settleErrors: 0, handlerErrors: 0, completed: 0 })
  })

  it('a duplicate batched with a new job completes while that job is still running: it does not wait for the commit', async () => {
    const e = await engine(prefix(), { shards: 1 })
    await e.process({ key: 'seen' }, () => 'first')
    let open!: () => void
    const gate = new Promise<void>((resolve) => (open = resolve))
    const processor = idemProcessor<{ key: string }, string>(e, async (job) => (await gate, `ran ${job.data.key}`), { keyOf: (job) => job.data.key })
    // Called in one turn, as BullMQ does with jobs fetched together: one batch.
    const job = (id: string, key: string) => ({ id, data: { key }, attemptsStarted: 1, attemptsMade: 0 }) as unknown as Job<{ key: string }>
    const fresh = processor(job('1', 'fresh'))
    const duplicate = processor(job('2', 'seen'))
    try {
      const first = await Promise.race([duplicate, new Promise((resolve) => setTimeout(() => resolve('still waiting'), 1000))])
      expect(first).toBe('first')
    } finally {
      open()
    }
    expect(await fresh).toBe('ran fresh')
    expect(processor.stats()).toMatchObject({ completed: 2, new: 1, duplicates: 1 })
  })

  it('many jobs over fewer keys, delivered at once at concurrency 256: every key runs exactly once, every job completes', async () => {
    const q = queue()
    const { runs, handler } = counting()
    const slow = async (job: Job<{ key: string }>) => {
      await new Promise((resolve) => setTimeout(resolve, 1))
      return handler(job)
    }
    const e = await engine(undefined, { lru: { maxKeys: 1000 } })
    const c = consumer({ queue: q.name, connection, engine: e, handler: slow, ...byKey })
    const keys = Array.from({ length: 3000 }, (_, i) => `k${i % 700}`)
    for (let i = keys.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1))
      ;[keys[i], keys[j]] = [keys[j], keys[i]]
    }
    await q.addBulk(keys.map((key) => ({ name: 'j', data: { key } })))
    const jobs = await settled(q, 3000, 30_000)
    expect([...jobs.values()].filter((j) => j.state !== 'completed')).toEqual([])
    expect(runs.size).toBe(700)
    expect([...runs.values()].every((n) => n === 1)).toBe(true)
    expect(c.stats()).toMatchObject({ completed: 3000, new: 700, duplicates: 2300, failed: 0 })
    // Jobs that arrive together are claimed together: far fewer claims than jobs. Commits ride each new job's
    // completion on the Worker's connection (README, BullMQ): one per new key, and no round trip of their own.
    console.log(`3000 jobs: ${e.stats().totals.storeOperations} store operations, 700 of them commits riding the completions`)
    expect(c.commitsRide).toBe(true)
    expect(e.stats().totals.storeOperations - 700).toBeLessThan(3000 / 8)
  })
})

describe('what the handler gets', () => {
  it("BullMQ's token, its AbortSignal when the handler declares one, and the engine's claim", async () => {
    const q = queue()
    const seen: unknown[] = []
    consumer({
      queue: q.name,
      connection,
      engine: await engine(),
      handler: (job: Job, token?: string, signal?: AbortSignal, context?: { claim?: { token: string; storeKey: string } }) => {
        seen.push(typeof token, signal instanceof AbortSignal, typeof context?.claim?.token, context?.claim?.storeKey)
        return job.data.key
      },
      ...byKey,
    })
    await q.add('j', { key: 'ctx' })
    await settled(q, 1)
    expect(seen).toEqual(['string', true, 'string', 'ctx'])
    // BullMQ builds an AbortController per job only for processors declaring a third parameter.
    const e = await engine()
    expect(idemProcessor(e, (job: Job) => job.id, byKey).length).toBe(2)
    expect(idemProcessor(e, (job: Job, token?: string, signal?: AbortSignal) => signal?.aborted, byKey).length).toBe(3)
  })
})

describe('bad input through the queue fails that job with a code; every other job is unaffected', () => {
  it('no key, an oversized key, a non-string key, keyOf throwing, a changed fingerprint; one key under two namespaces runs twice', async () => {
    const q = queue()
    const effects: string[] = []
    type Data = { key?: unknown; tenant?: string; amount?: number; explode?: boolean }
    const c = consumer<Data, string>({
      queue: q.name,
      connection,
      engine: await engine(),
      handler: (job) => {
        effects.push(`${job.data.tenant ?? ''}/${String(job.data.key)}`)
        return 'ok'
      },
      keyOf: (job) => {
        if (job.data.explode) throw new Error('no key field in this schema version')
        return job.data.key
      },
      namespaceOf: (job) => job.data.tenant,
      fingerprintOf: (job) => (job.data.amount === undefined ? undefined : String(job.data.amount)),
    })
    const add = (data: Data, opts: JobsOptions = { attempts: 3 }) => q.add('j', data, opts)
    const good1 = await add({ key: 'good-1' })
    const noKey = await add({})
    const tooLong = await add({ key: 'x'.repeat(1025) })
    const notString = await add({ key: 42 })
    const explodes = await add({ explode: true })
    const tenantA = await add({ key: 'shared', tenant: 'tenant-a' })
    const tenantB = await add({ key: 'shared', tenant: 'tenant-b' })
    const priced = await add({ key: 'priced', amount: 10 })
    const good2 = await add({ key: 'good-2' })
    await settled(q, 9)
    const repriced = await add({ key: 'priced', amount: 11 })
    const good3 = await add({ key: 'good-3' })
    const jobs = await settled(q, 11)

    const failure = (id: string | undefined) => {
      const entry = jobs.get(id!)!
      expect(entry.state).toBe('failed')
      expect(entry.job.attemptsMade).toBe(1) // unrecoverable: the 3 attempts were not used
      return entry.job.failedReason
    }
    expect(failure(noKey.id)).toBe('INVALID_KEY: key: must be a non-empty string, got undefined')
    expect(failure(tooLong.id)).toBe(`INVALID_KEY: key: must be at most 1024 UTF-8 bytes, got "${'x'.repeat(60)}…" (1025 bytes)`)
    expect(failure(notString.id)).toBe('INVALID_KEY: key: must be a non-empty string, got 42')
    expect(failure(explodes.id)).toMatch(/^INVALID_MESSAGE: keyOf threw for job \d+: no key field in this schema version/)
    expect(failure(repriced.id)).toMatch(/^CONFLICT: key "priced" was processed with fingerprint "10"; this message has "11"/)
    for (const ok of [good1, good2, good3, tenantA, tenantB, priced]) expect(jobs.get(ok.id!)).toMatchObject({ state: 'completed', job: { returnvalue: 'ok' } })
    expect(effects.sort()).toEqual(['/good-1', '/good-2', '/good-3', '/priced', 'tenant-a/shared', 'tenant-b/shared'])
    expect(c.stats()).toMatchObject({ completed: 6, rejected: 5, failed: 5 })
  })
})

describe('stalled-job redelivery', () => {
  it('a job whose lock lapses mid-handler is redelivered to another consumer: in-flight there until the first commits, then a duplicate; one effect', async () => {
    const p = prefix()
    const q = queue()
    let effects = 0
    let finishedFirst = false
    // A: a slow handler and no lock renewal, so BullMQ thinks it stalled. Its engine
    // still renews the idem lease (leaseMs/3), so nobody else may run the key.
    const a = consumer({
      queue: q.name,
      connection,
      engine: await engine(p, { leaseMs: 500 }),
      handler: async () => {
        effects++
        await new Promise((resolve) => setTimeout(resolve, 2500))
        finishedFirst = true
        return 'from A'
      },
      ...byKey,
      lockDuration: 500,
      skipLockRenewal: true,
      // Busy with its first run, A cannot take the redelivered copy: B gets it.
      concurrency: 1,
      // BullMQ runs one stall check per stalledInterval for the whole queue: A must not hold that slot.
      skipStalledCheck: true,
    })
    await a.waitUntilReady()
    const job = await q.add('j', { key: 'stalls' })
    await waitFor('A to start the job', () => effects === 1)
    // B checks for stalled jobs often, takes the job back and finds the key in flight.
    const b = consumer({
      queue: q.name,
      connection,
      engine: await engine(p, { leaseMs: 500 }),
      handler: () => {
        effects++
        return 'from B'
      },
      ...byKey,
      lockDuration: 500,
      stalledInterval: 200,
      maxStalledCount: 5,
      inFlightDelay: { initialMs: 100, maxMs: 300 },
    })
    await waitFor('B to see the key in flight', () => b.stats().retriedInFlight > 0, 5000)
    expect(finishedFirst).toBe(false)
    expect(b.stats().stalled + a.stats().stalled).toBeGreaterThan(0)
    const jobs = await settled(q, 1)
    expect(jobs.get(job.id!)).toMatchObject({ state: 'completed', job: { returnvalue: 'from A' } })
    expect(effects).toBe(1)
    // Each redelivered copy settles as a duplicate, in B or, when A took it back
    // (A's lock lapses every time), in A once its first run has committed.
    expect(a.stats().new + b.stats().new).toBe(1)
    expect(a.stats().duplicates + b.stats().duplicates).toBeGreaterThanOrEqual(1)
    // A's own completion found its lock gone: BullMQ reports it as a worker error.
    expect(a.stats().workerErrors).toBeGreaterThan(0)
  })
})

describe('options', () => {
  it('every bad option is named in one ConfigError', async () => {
    const e = await engine(undefined, { leaseMs: 60_000 })
    const make = (options: Record<string, unknown>) => () => createConsumer({ queue: 'q', connection, engine: e, handler: () => 1, keyOf: () => 'k', ...options } as ConsumerOptions)
    expect(make({ queue: '' })).toThrow('queue: must be a non-empty queue name, got ""')
    expect(make({ engine: {} })).toThrow('engine: must be an idem Engine (from createEngine), got {}')
    expect(make({ handler: 'no' })).toThrow('handler: must be a function (job, token) => result, got "no"')
    expect(make({ keyOf: undefined })).toThrow('keyOf: must be a function of the job, got undefined')
    expect(make({ fingerprintOf: 'x' })).toThrow('fingerprintOf: must be a function of the job, got "x"')
    expect(make({ namespaceOf: 1 })).toThrow('namespaceOf: must be a function of the job, got 1')
    expect(make({ concurrency: 0 })).toThrow('concurrency: must be an integer from 1 to 65536, got 0')
    expect(make({ lockDuration: 30_000 })).toThrow("lockDuration: must be at least the engine's leaseMs (60000)")
    expect(make({ inFlightDelay: { initialMs: 500, maxMs: 100 } })).toThrow('inFlightDelay.maxMs: must be at least inFlightDelay.initialMs (500), got 100')
    expect(make({ progressIntervalMs: 1 })).toThrow('progressIntervalMs: must be an integer from 10 to 3600000, got 1')
    expect(make({ connection: undefined })).toThrow('connection: must be BullMQ connection options or an ioredis client')
    let error: unknown
    try {
      make({ queue: 7, concurrency: -1, keyOf: null })()
    } catch (caught) {
      error = caught
    }
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).problems).toHaveLength(3)
    expect(() => idemProcessor(e, () => 1, {} as never)).toThrow('keyOf: must be a function of the job, got undefined')
  })

  it('defaults: concurrency 256, lockDuration at least leaseMs; other WorkerOptions pass through', async () => {
    const q = queue()
    const e = await engine(undefined, { leaseMs: 45_000 })
    const c = consumer({ queue: q.name, connection, engine: e, handler: () => 1, keyOf: () => 'k', autorun: false, maxStalledCount: 3 })
    expect(c.worker!.opts).toMatchObject({ concurrency: 256, lockDuration: 45_000, maxStalledCount: 3, autorun: false })
  })

  it('progress events carry the stats; close() drains active jobs and is safe twice', async () => {
    const q = queue()
    let finished = 0
    const c = consumer({
      queue: q.name,
      connection,
      engine: await engine(),
      handler: async () => {
        await new Promise((resolve) => setTimeout(resolve, 300))
        finished++
      },
      ...byKey,
      progressIntervalMs: 50,
    })
    const progress: number[] = []
    c.on('progress', (s) => progress.push(s.completed))
    await q.addBulk(Array.from({ length: 20 }, (_, i) => ({ name: 'j', data: { key: `p${i}` } })))
    await waitFor('jobs to be active', async () => (await q.getJobCounts('active')).active === 20)
    await Promise.all([c.close(), c.close()])
    expect(finished).toBe(20)
    expect((await q.getJobCounts('completed')).completed).toBe(20)
    expect(progress.at(-1)).toBe(20)
  })
})

describe("commits ride the Worker's connection", () => {
  it('on the same Redis: commits ride, every key runs once, and every completed job has its DONE record', async () => {
    const p = prefix()
    const q = queue()
    const e = await engine(p)
    const { runs, handler } = counting()
    const c = consumer({ queue: q.name, connection, engine: e, handler, ...byKey })
    await c.waitUntilReady()
    await waitFor('the Worker connection known', async () => c.commitsRide)
    const keys = Array.from({ length: 140 }, (_, i) => `ride-${i}`)
    await q.addBulk([...keys, ...keys.slice(0, 60)].map((key) => ({ name: 'j', data: { key } })))
    const jobs = await settled(q, 200)
    expect([...jobs.values()].every((j) => j.state === 'completed')).toBe(true)
    expect([...runs.values()]).toEqual(keys.map(() => 1))
    // A second engine on the same prefix finds every key DONE: no job completed without its record.
    const other = await engine(p)
    let reruns = 0
    const outcomes = await other.processBatch(keys.map((key) => ({ key })), () => void reruns++)
    expect(outcomes.every((o) => o.verdict === 'duplicate')).toBe(true)
    expect(reruns).toBe(0)
    expect(c.stats().commitsUnconfirmed).toBe(0)
  })

  it('on another server (here a proxy port), commits do not ride: they are awaited before the job completes', async () => {
    const proxy = await startProxy(6379)
    try {
      const q = queue()
      const e = await createEngine({ shards: 2, store: { kind: 'redis', url: `redis://127.0.0.1:${proxy.port}`, prefix: prefix() } })
      engines.push(e)
      const c = consumer({ queue: q.name, connection, engine: e, handler: () => 'ok', ...byKey })
      await c.waitUntilReady()
      const job = await q.add('j', { key: 'apart' })
      expect((await settled(q, 1)).get(job.id!)!.state).toBe('completed')
      expect(c.commitsRide).toBe(false)
    } finally {
      await proxy.close()
    }
  })

  it('a ridden commit refused after the job completed: counted, reported with the job id, never silent', async () => {
    const p = prefix()
    const q = queue()
    const e = await engine(p, { shards: 1 })
    const reports: unknown[] = []
    const c = consumer({
      queue: q.name,
      connection,
      engine: e,
      // The lease record disappears under the running handler (an eviction, an operator's DEL): its commit is refused.
      // Only the lease records (<prefix>t:…): deleting the identity record too would be a reset (STORE_RESET).
      handler: async () => {
        await deleteKeysUnder(redis, `${p}t:`)
        return 'charged'
      },
      ...byKey,
    })
    c.on('commitUnconfirmed', (report) => reports.push(report))
    await c.waitUntilReady()
    await waitFor('the Worker connection known', async () => c.commitsRide)
    const job = await q.add('j', { key: 'lost-lease' })
    expect((await settled(q, 1)).get(job.id!)!.state).toBe('completed')
    await waitFor('the refusal reported', async () => reports.length === 1)
    expect(reports[0]).toMatchObject({ jobId: job.id, key: 'lost-lease', code: 'LEASE_LOST' })
    expect(c.stats().commitsUnconfirmed).toBe(1)
    expect(e.stats().totals.fencedWrites).toBe(1)
  })
})
