/**
 * The HTTP Idempotency-Key layer (DESIGN.md §9, README "HTTP"), one suite
 * run on three adapters (Express 4, Express 5, Fastify 5), over real HTTP on
 * loopback. Route runs are counted by the routes themselves; concurrency is
 * made certain with a gate the first run waits on, never with timing.
 */
import { randomUUID } from 'node:crypto'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { Redis } from 'ioredis'
import { createEngine, type Engine } from '../../dist/src/index.js'
import { ADAPTERS, newState, type Answer, send, startApp, type AdapterName, type AppState, type LayerOptions, type RunningApp } from '../support/http-apps.js'
import { waitFor } from '../support/wait-for.js'
import { sqlKit } from '../support/sql.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'

const REDIS_URL = process.env.IDEM_TEST_REDIS ?? 'redis://127.0.0.1:6379'

/** A gate the first run of /orders waits on, opened by the test. */
function gate(state: AppState): () => void {
  let open!: () => void
  state.gate = new Promise((resolve) => (open = resolve))
  return open
}

function expectProblem(answer: { status: number; headers: Record<string, unknown>; json: any }, status: number, code: string): void {
  expect(answer.status).toBe(status)
  expect(answer.headers['content-type']).toMatch(/^application\/problem\+json/)
  expect(answer.json).toMatchObject({ type: `urn:idem:problem:${code}`, status, code })
  expect(typeof answer.json.title).toBe('string')
  expect(typeof answer.json.detail).toBe('string')
}

describe.each(ADAPTERS)('HTTP layer on %s', (adapter: AdapterName) => {
  let engine: Engine
  let app: RunningApp | undefined
  let state: AppState

  beforeAll(async () => {
    engine = await createEngine({ shards: 1 })
  })
  afterAll(async () => {
    await engine.close()
  })
  afterEach(async () => {
    await app?.close()
    app = undefined
  })

  async function start(options: Partial<LayerOptions> = {}): Promise<string> {
    state = newState()
    app = await startApp(adapter, { engine, ...options }, state)
    return app.url
  }

  it.each([
    ['from the store', 0],
    ['from the replay cache', 1000],
  ])('runs a first request once and replays it byte for byte %s, with Idempotent-Replayed and the allowed headers only', async (_, replayCacheKeys) => {
    const url = await start({ replayCacheKeys })
    const key = randomUUID()
    const first = await send(url, 'POST', '/orders', { key, body: { item: 'book' } })
    expect(first.status).toBe(201)
    expect(first.json).toMatchObject({ order: 1, item: 'book' })
    expect(first.headers['set-cookie']).toBeDefined()
    expect(first.headers['idempotent-replayed']).toBeUndefined()
    for (let retry = 0; retry < 3; retry++) {
      const again = await send(url, 'POST', '/orders', { key, body: { item: 'book' } })
      expect(again.status).toBe(201)
      expect(again.body.equals(first.body)).toBe(true)
      expect(again.headers['idempotent-replayed']).toBe('true')
      expect(again.headers['location']).toBe(first.headers['location'])
      expect(again.headers['content-type']).toBe(first.headers['content-type'])
      // A replay must not hand the first caller's session to whoever retries.
      expect(again.headers['set-cookie']).toBeUndefined()
    }
    expect(state.runs.get('/orders')).toBe(1)
    // The same body with its keys in another order is the same request.
    const reordered = await send(url, 'POST', '/orders', { key, body: { item: 'book' } })
    expect(reordered.headers['idempotent-replayed']).toBe('true')
  })

  it('answers 422 CONFLICT for the same key with another body, method or path, and runs nothing', async () => {
    const url = await start()
    const key = randomUUID()
    expect((await send(url, 'POST', '/orders', { key, body: { item: 'book' } })).status).toBe(201)
    expectProblem(await send(url, 'POST', '/orders', { key, body: { item: 'pen' } }), 422, 'CONFLICT')
    expectProblem(await send(url, 'PATCH', '/orders', { key, body: { item: 'book' } }), 422, 'CONFLICT')
    expectProblem(await send(url, 'POST', '/client-error', { key, body: { item: 'book' } }), 422, 'CONFLICT')
    expect(state.runs.get('/orders')).toBe(1)
    expect(state.runs.get('/client-error')).toBeUndefined()
  })

  it('answers 400 INVALID_KEY for a missing key where required, and for every malformed key, without running the route', async () => {
    const url = await start({ required: true })
    expectProblem(await send(url, 'POST', '/orders', { body: { item: 'book' } }), 400, 'INVALID_KEY')
    expectProblem(await send(url, 'POST', '/orders', { key: '', body: { item: 'book' } }), 400, 'INVALID_KEY')
    expectProblem(await send(url, 'POST', '/orders', { key: 'k'.repeat(256), body: { item: 'book' } }), 400, 'INVALID_KEY')
    expectProblem(await send(url, 'POST', '/orders', { key: ['first', 'second'], body: { item: 'book' } }), 400, 'INVALID_KEY')
    expectProblem(await send(url, 'POST', '/orders', { key: 'first, second', body: { item: 'book' } }), 400, 'INVALID_KEY')
    expectProblem(await send(url, 'POST', '/orders', { key: '"unterminated', body: { item: 'book' } }), 400, 'INVALID_KEY')
    expect(state.runs.get('/orders')).toBeUndefined()
    // The bounds are the draft's: 255 characters pass, and a quoted key is the same key as a bare one.
    const longest = 'k'.repeat(255)
    expect((await send(url, 'POST', '/orders', { key: longest, body: { item: 'book' } })).status).toBe(201)
    expect((await send(url, 'POST', '/orders', { key: `"${longest}"`, body: { item: 'book' } })).headers['idempotent-replayed']).toBe('true')
    // Methods the layer does not handle pass untouched, key or none.
    expect((await send(url, 'GET', '/orders')).status).toBe(200)
  })

  it("a route's own policy: a key not required on one route, the layer left out on another", async () => {
    const url = await start({ required: true })
    expect((await send(url, 'POST', '/lenient', { body: {} })).status).toBe(201)
    const key = randomUUID()
    expect((await send(url, 'POST', '/lenient', { key, body: {} })).status).toBe(201)
    expect((await send(url, 'POST', '/lenient', { key, body: {} })).headers['idempotent-replayed']).toBe('true')
    expect(state.runs.get('/lenient')).toBe(2)
    expect((await send(url, 'POST', '/untouched', { key: '', body: {} })).status).toBe(201)
    expect((await send(url, 'POST', '/untouched', { key, body: {} })).status).toBe(201)
    expect(state.runs.get('/untouched')).toBe(2)
  })

  // Adapter-specific cases are defined only for their adapter (not skipped elsewhere).
  if (adapter !== 'fastify') it('Express: a layer mounted twice on a route decides once (the first one), never 409 to itself', async () => {
    const url = await start({ required: true })
    expectProblem(await send(url, 'POST', '/twice', { body: {} }), 400, 'INVALID_KEY')
    const key = randomUUID()
    expect((await send(url, 'POST', '/twice', { key, body: {} })).status).toBe(201)
    expect((await send(url, 'POST', '/twice', { key, body: {} })).headers['idempotent-replayed']).toBe('true')
    expect(state.runs.get('/twice')).toBe(1)
  })

  if (adapter === 'fastify') it('Fastify: a reply written past the layer (reply.hijack()) is stored as not replayable once it is sent', async () => {
    const url = await start()
    const key = randomUUID()
    const first = await send(url, 'POST', '/hijack', { key, body: {} })
    expect(first.status).toBe(200)
    expect(first.body.toString()).toBe('written past fastify')
    // The key is settled when the raw response closes, just after the client has its answer.
    let retry = await send(url, 'POST', '/hijack', { key, body: {} })
    for (let attempt = 0; retry.status === 409 && retry.json.code === 'IN_FLIGHT' && attempt < 100; attempt++) retry = await send(url, 'POST', '/hijack', { key, body: {} })
    expectProblem(retry, 409, 'RESPONSE_NOT_REPLAYABLE')
    expect(state.runs.get('/hijack')).toBe(1)
  })

  it('lets a request without a key through when keys are not required, running it each time', async () => {
    const url = await start()
    expect((await send(url, 'POST', '/orders', { body: { item: 'book' } })).status).toBe(201)
    expect((await send(url, 'POST', '/orders', { body: { item: 'book' } })).status).toBe(201)
    expect(state.runs.get('/orders')).toBe(2)
  })

  it('50 concurrent requests with one key: one run, 49 answers 409 IN_FLIGHT with Retry-After, then replays', async () => {
    const url = await start()
    const open = gate(state)
    const key = randomUUID()
    const burst = fire(50, () => send(url, 'POST', '/orders', { key, body: { item: 'book' } }))
    // The first run holds its claim at the gate: every other copy is answered before it opens.
    await waitFor('49 answers while the first request runs', () => burst.answered() === 49)
    open()
    const all = await burst.all
    const conflicts = all.filter((answer) => answer.status === 409)
    expect(conflicts).toHaveLength(49)
    for (const answer of conflicts) {
      expectProblem(answer, 409, 'IN_FLIGHT')
      expect(answer.headers['retry-after']).toBe('1')
    }
    expect(all.filter((answer) => answer.status === 201)).toHaveLength(1)
    expect(state.runs.get('/orders')).toBe(1)
    expect((await send(url, 'POST', '/orders', { key, body: { item: 'book' } })).headers['idempotent-replayed']).toBe('true')
    expect(state.runs.get('/orders')).toBe(1)
  })

  it('50 concurrent requests with one key and wait: one run, every other answer its replay', async () => {
    const url = await start({ wait: { maxMs: 30_000, pollMs: 10 } })
    const open = gate(state)
    let arrivals = 0
    state.onRun = () => arrivals++
    const key = randomUUID()
    const burst = fire(50, () => send(url, 'POST', '/orders', { key, body: { item: 'book' } }))
    await waitFor('the first request to run', () => arrivals === 1)
    open()
    const all = await burst.all
    expect(state.runs.get('/orders')).toBe(1)
    const first = all.find((answer) => answer.headers['idempotent-replayed'] === undefined)!
    expect(first.status).toBe(201)
    const others = all.filter((answer) => answer !== first)
    // A waiter still at the store when its bound ran out would answer 409: none did here, with a 30 s bound.
    for (const answer of others) {
      expect(answer.status).toBe(201)
      expect(answer.headers['idempotent-replayed']).toBe('true')
      expect(answer.body.equals(first.body)).toBe(true)
    }
  })

  it('releases the key when the route throws or answers 5xx: the retry runs again', async () => {
    const url = await start()
    const key = randomUUID()
    expect((await send(url, 'POST', '/throws', { key, body: {} })).status).toBe(500)
    expect((await send(url, 'POST', '/throws', { key, body: {} })).status).toBe(500)
    expect(state.runs.get('/throws')).toBe(2)
    const other = randomUUID()
    expect((await send(url, 'POST', '/server-error', { key: other, body: {} })).status).toBe(503)
    const retried = await send(url, 'POST', '/server-error', { key: other, body: {} })
    expect(retried.status).toBe(503)
    expect(retried.headers['idempotent-replayed']).toBeUndefined()
    expect(state.runs.get('/server-error')).toBe(2)
  })

  it('stores and replays 4xx answers, or releases them with storeClientErrors: false', async () => {
    let url = await start()
    const key = randomUUID()
    const first = await send(url, 'POST', '/client-error', { key, body: {} })
    expect(first.status).toBe(400)
    const again = await send(url, 'POST', '/client-error', { key, body: {} })
    expect(again.status).toBe(400)
    expect(again.headers['idempotent-replayed']).toBe('true')
    expect(again.body.equals(first.body)).toBe(true)
    expect(state.runs.get('/client-error')).toBe(1)
    await app!.close()
    url = await start({ storeClientErrors: false })
    await send(url, 'POST', '/client-error', { key, body: {} })
    const rerun = await send(url, 'POST', '/client-error', { key, body: {} })
    expect(rerun.headers['idempotent-replayed']).toBeUndefined()
    expect(state.runs.get('/client-error')).toBe(2)
  })

  it('a response over maxBodyBytes succeeds, its key is done, and a retry gets 409 RESPONSE_NOT_REPLAYABLE', async () => {
    const url = await start({ maxBodyBytes: 1000 })
    const key = randomUUID()
    const first = await send(url, 'POST', '/large', { key, body: {} })
    expect(first.status).toBe(200)
    expect(first.body.length).toBe(state.largeBytes)
    const retry = await send(url, 'POST', '/large', { key, body: {} })
    expectProblem(retry, 409, 'RESPONSE_NOT_REPLAYABLE')
    expect(retry.headers['retry-after']).toBeUndefined()
    expect(state.runs.get('/large')).toBe(1)
  })

  it('a streamed response goes out whole, and is stored as not replayable, never half', async () => {
    const url = await start()
    const key = randomUUID()
    const first = await send(url, 'POST', '/stream', { key, body: {} })
    expect(first.status).toBe(200)
    expect(first.body.toString()).toBe('first second')
    expectProblem(await send(url, 'POST', '/stream', { key, body: {} }), 409, 'RESPONSE_NOT_REPLAYABLE')
    expect(state.runs.get('/stream')).toBe(1)
  })

  it('scope: the same key from two callers runs twice, and each caller is replayed its own response', async () => {
    const url = await start({ scope: (request) => request.headers['x-user'] as string | undefined })
    const key = randomUUID()
    const alice = await send(url, 'POST', '/orders', { key, body: { item: 'book' }, headers: { 'x-user': 'alice' } })
    const bob = await send(url, 'POST', '/orders', { key, body: { item: 'book' }, headers: { 'x-user': 'bob' } })
    expect(alice.json).toMatchObject({ order: 1, caller: 'alice' })
    expect(bob.json).toMatchObject({ order: 2, caller: 'bob' })
    const aliceAgain = await send(url, 'POST', '/orders', { key, body: { item: 'book' }, headers: { 'x-user': 'alice' } })
    const bobAgain = await send(url, 'POST', '/orders', { key, body: { item: 'book' }, headers: { 'x-user': 'bob' } })
    expect(aliceAgain.body.equals(alice.body)).toBe(true)
    expect(bobAgain.body.equals(bob.body)).toBe(true)
    // A request with no caller is a third key space.
    expect((await send(url, 'POST', '/orders', { key, body: { item: 'book' } })).json).toMatchObject({ order: 3, caller: null })
    expect(state.runs.get('/orders')).toBe(3)
  })

  it('a store that cannot be reached: 503 STORE_FAILED with Retry-After, and the route does not run (fail closed)', async () => {
    const deadEngine = await createEngine({ shards: 1, store: { kind: 'redis', url: 'redis://127.0.0.1:1', retries: 0 } })
    try {
      state = newState()
      app = await startApp(adapter, { engine: deadEngine }, state)
      const answer = await send(app.url, 'POST', '/orders', { key: randomUUID(), body: { item: 'book' } })
      expectProblem(answer, 503, 'STORE_FAILED')
      expect(answer.headers['retry-after']).toBe('1')
      expect(state.runs.get('/orders')).toBeUndefined()
    } finally {
      await app?.close()
      app = undefined
      await deadEngine.close({ timeoutMs: 1000 })
    }
  })

  it('a scope function that returns something else than a string or undefined fails the request (500), and the route does not run', async () => {
    const url = await start({ scope: () => 42 as unknown as string })
    expect((await send(url, 'POST', '/orders', { key: randomUUID(), body: { item: 'book' } })).status).toBe(500)
    expect(state.runs.get('/orders')).toBeUndefined()
  })

  it('refuses bad options at registration with a ConfigError naming each field', async () => {
    const bad = { engine, methods: 'POST', wait: { maxMs: 0 }, maxBodyBytes: -1, colour: 'red' } as unknown as LayerOptions
    const error = await startApp(adapter, bad, newState()).then(
      () => undefined,
      (thrown: unknown) => thrown,
    )
    expect(error).toMatchObject({ code: 'INVALID_CONFIG' })
    const message = (error as Error).message
    for (const field of ['methods', 'wait.maxMs', 'maxBodyBytes', 'colour']) expect(message).toContain(`${field}: must be`)
  })
})

describe.each(['redis', 'postgres'] as const)('HTTP layer on the %s store', (kind) => {
  const postgres = sqlKit('postgres')
  const redisPrefix = `idem-http-test-${randomUUID().slice(0, 8)}:`
  let engine: Engine

  beforeAll(async () => {
    engine = await createEngine({ shards: 1, store: kind === 'redis' ? { kind, url: REDIS_URL, prefix: redisPrefix } : postgres.store() })
  })
  afterAll(async () => {
    await engine.close()
    if (kind === 'redis') {
      const redis = new Redis(REDIS_URL)
      await deleteKeysUnder(redis, redisPrefix)
      redis.disconnect()
    }
    await postgres.close()
  })

  it.each(ADAPTERS)('%s: 50 concurrent requests with one key run once, and replay after', async (adapter) => {
    const state = newState()
    const app = await startApp(adapter, { engine }, state)
    try {
      const open = gate(state)
      const key = randomUUID()
      const burst = fire(50, () => send(app.url, 'POST', '/orders', { key, body: { item: kind } }))
      await waitFor('49 answers while the first request runs', () => burst.answered() === 49)
      open()
      const all = await burst.all
      const odd = all.filter((answer) => answer.status !== 409 && answer.status !== 201)
      expect(odd.map((answer) => answer.json)).toEqual([])
      expect(all.filter((answer) => answer.status === 409)).toHaveLength(49)
      expect(state.runs.get('/orders')).toBe(1)
      const first = all.find((answer) => answer.status === 201)!
      const replay = await send(app.url, 'POST', '/orders', { key, body: { item: kind } })
      expect(replay.headers['idempotent-replayed']).toBe('true')
      expect(replay.body.equals(first.body)).toBe(true)
      expectProblem(await send(app.url, 'POST', '/orders', { key, body: { item: 'other' } }), 422, 'CONFLICT')
      expect(state.runs.get('/orders')).toBe(1)
    } finally {
      await app.close()
    }
  })
})

/** Sends `count` copies at once; `answered()` counts the answers so far. */
function fire(count: number, sendOne: () => Promise<Answer>): { all: Promise<Answer[]>; answered: () => number } {
  let answered = 0
  const answers = Array.from({ length: count }, () => sendOne().finally(() => answered++))
  return { all: Promise.all(answers), answered: () => answered }
}
