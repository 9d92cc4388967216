/**
 * The HTTP layer across processes, on a real Redis: servers in child
 * processes (test/support/fixtures/http-server.mjs) share one store prefix,
 * and every run of a route is counted in Redis, so runs of all processes add
 * up. Bounded by answers and attempts, never by timing.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { ADAPTERS, send, type Answer } from '../support/http-apps.js'

const REDIS_URL = process.env.IDEM_TEST_REDIS ?? 'redis://127.0.0.1:6379'
const fixture = fileURLToPath(new URL('../support/fixtures/http-server.mjs', import.meta.url))
/** Short, so that a killed server's key frees itself soon; renewed every leaseMs/3 while a route runs. */
const LEASE_MS = 1000

describe.each(ADAPTERS)('HTTP layer in two processes on %s', (adapter) => {
  const prefix = `idem-http-proc-${randomUUID().slice(0, 8)}:`
  const runsKey = `${prefix}runs`
  const children: ChildProcess[] = []
  let redis: Redis

  beforeAll(() => {
    redis = new Redis(REDIS_URL)
  })
  afterEach(() => {
    for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  afterAll(async () => {
    await deleteKeysUnder(redis, prefix)
    redis.disconnect()
  })

  async function server(): Promise<{ url: string; child: ChildProcess }> {
    const child = fork(fixture, [adapter, REDIS_URL, prefix, runsKey, String(LEASE_MS)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    children.push(child)
    const port = await new Promise<number>((resolve, reject) => {
      child.once('message', (message) => resolve((message as { port: number }).port))
      child.once('exit', (code, signal) => reject(new Error(`the server exited before listening (${code ?? signal})`)))
    })
    return { url: `http://127.0.0.1:${port}`, child }
  }

  const runs = async (): Promise<number> => Number((await redis.get(runsKey)) ?? 0)

  it('the same key sent to two processes at once runs once; the other answers 409, and both replay after', async () => {
    const [a, b] = await Promise.all([server(), server()])
    await redis.del(runsKey, `${prefix}go`)
    const key = randomUUID()
    const request = { key, body: { item: 'book' }, headers: { 'x-hold': '1' } }
    const answers = [send(a.url, 'POST', '/orders', request), send(b.url, 'POST', '/orders', request)]
    // The first to claim holds its run until `go`: the other one is answered meanwhile.
    const first = await Promise.race(answers)
    expect(first.status).toBe(409)
    expect(first.json.code).toBe('IN_FLIGHT')
    await redis.set(`${prefix}go`, '1')
    const both = await Promise.all(answers)
    const ran = both.find((answer) => answer.status === 201)!
    expect(ran).toBeDefined()
    expect(await runs()).toBe(1)
    for (const url of [a.url, b.url]) {
      const replay = await send(url, 'POST', '/orders', { key, body: { item: 'book' } })
      expect(replay.status).toBe(201)
      expect(replay.headers['idempotent-replayed']).toBe('true')
      expect(replay.body.equals(ran.body)).toBe(true)
    }
    expect(await runs()).toBe(1)
  })

  it('a route that SIGKILLs its process mid-request: after the lease, a retry runs it again, not 409 forever', async () => {
    await redis.del(runsKey)
    const key = randomUUID()
    const doomed = await server()
    const died = new Promise((resolve) => doomed.child.once('exit', resolve))
    await expect(send(doomed.url, 'POST', '/work', { key, body: { item: 'book' }, headers: { 'x-kill': '1' } })).rejects.toThrow()
    await died
    expect(await runs()).toBe(1)
    const next = await server()
    let answer: Answer | undefined
    let inFlight = 0
    // Each 409 is the dead run's lease, still live: the retry loop is bounded by attempts (200 × 50 ms is 10 leases).
    for (let attempt = 0; attempt < 200; attempt++) {
      answer = await send(next.url, 'POST', '/work', { key, body: { item: 'book' } })
      if (answer.status !== 409) break
      expect(answer.json.code).toBe('IN_FLIGHT')
      inFlight++
      await sleep(50)
    }
    expect(answer!.status).toBe(201)
    expect(answer!.json.pid).toBe(next.child.pid)
    expect(answer!.headers['idempotent-replayed']).toBeUndefined()
    expect(await runs()).toBe(2)
    expect(inFlight).toBeLessThan(200)
    const replay = await send(next.url, 'POST', '/work', { key, body: { item: 'book' } })
    expect(replay.headers['idempotent-replayed']).toBe('true')
    expect(await runs()).toBe(2)
  })
})
