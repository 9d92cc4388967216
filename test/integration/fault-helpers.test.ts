/**
 * The fault-test helpers themselves, against real servers: if these lie, every
 * fault test built on them proves nothing.
 */
import { connect } from 'node:net'
import { Cluster, Redis, type RedisOptions } from 'ioredis'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { redisCli, startCluster, startRedis, type RedisCluster, type RedisProcess } from '../support/redis-server.js'
import { startProxy, type FaultProxy } from '../support/tcp-proxy.js'

const T = 30_000

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const clients: (Redis | Cluster)[] = []
afterEach(() => {
  for (const c of clients.splice(0)) c.disconnect()
})
function client(port: number, options: RedisOptions = {}): Redis {
  const c = new Redis({ host: '127.0.0.1', port, ...options })
  // Faults make ioredis emit 'error'; without a listener it prints them as unhandled.
  c.on('error', () => {})
  clients.push(c)
  return c
}

describe('startRedis', () => {
  let redis: RedisProcess
  beforeAll(async () => {
    redis = await startRedis()
  }, T)
  afterAll(() => redis?.stop(), T)

  it('answers SET/GET and runs as a live child process', async () => {
    expect(redis.url).toBe(`redis://127.0.0.1:${redis.port}`)
    expect(redis.port).not.toBe(6379)
    expect(isAlive(redis.pid)).toBe(true)
    const c = client(redis.port)
    expect(await c.set('k', 'v')).toBe('OK')
    expect(await c.get('k')).toBe('v')
  }, T)

  it('restart() keeps the port, changes the pid and loses the data', async () => {
    const c = client(redis.port, { lazyConnect: true })
    await c.connect()
    await c.set('survives?', 'no')
    const { port, pid } = redis
    await redis.restart()
    expect(redis.port).toBe(port)
    expect(redis.pid).not.toBe(pid)
    expect(isAlive(pid)).toBe(false)
    expect(isAlive(redis.pid)).toBe(true)
    // The old client reconnects to the new server on its own.
    expect(await c.get('survives?')).toBeNull()
  }, T)

  it('stop() leaves the pid dead and can be called twice', async () => {
    const own = await startRedis({ args: ['--maxmemory', '10mb'] })
    expect(await redisCli(own.port, ['CONFIG', 'GET', 'maxmemory'])).toContain(String(10 * 1024 * 1024))
    const { pid } = own
    await own.stop()
    expect(isAlive(pid)).toBe(false)
    await expect(redisCli(own.port, ['PING'])).rejects.toThrow()
    await own.stop()
  }, T)

  it('fails with the server output when redis-server cannot start', async () => {
    await expect(startRedis({ args: ['--no-such-option', 'x'] })).rejects.toThrow(/exited[\s\S]*no-such-option/)
  }, T)
})

describe('startProxy', () => {
  let redis: RedisProcess
  let proxy: FaultProxy
  beforeAll(async () => {
    redis = await startRedis()
    proxy = await startProxy(redis.port)
  }, T)
  afterEach(() => proxy.heal())
  afterAll(async () => {
    await proxy?.close()
    await redis?.stop()
  }, T)

  it('passes commands through and counts connections', async () => {
    const c = client(proxy.port)
    expect(await c.set('p', '1')).toBe('OK')
    expect(await c.get('p')).toBe('1')
    expect(proxy.connections()).toBe(1)
    c.disconnect()
    await expect.poll(() => proxy.connections()).toBe(0)
  }, T)

  it('delayReplies(300) holds each reply and keeps them in order', async () => {
    const c = client(proxy.port)
    await c.mset('a', '1', 'b', '2', 'c', '3')
    proxy.delayReplies(300)
    const started = performance.now()
    const replies = await Promise.all(['a', 'b', 'c', 'a'].map((k) => c.get(k)))
    expect(performance.now() - started).toBeGreaterThanOrEqual(250)
    expect(replies).toEqual(['1', '2', '3', '1'])
    const one = performance.now()
    await c.get('a')
    expect(performance.now() - one).toBeGreaterThanOrEqual(250)
  }, T)

  it('drop() times commands out; heal() lets the same client work again', async () => {
    const c = client(proxy.port, { commandTimeout: 200 })
    await c.ping()
    proxy.drop()
    await expect(c.set('held', 'x')).rejects.toThrow(/Command timed out/)
    proxy.heal()
    expect(await c.get('fresh')).toBeNull()
    // Held, not lost: the timed-out SET reached the server after heal().
    expect(await c.get('held')).toBe('x')
  }, T)

  it('drop() accepts new connections and leaves them hanging until heal()', async () => {
    proxy.drop()
    const socket = connect(proxy.port, '127.0.0.1')
    try {
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
      let received = ''
      socket.on('data', (d: Buffer) => (received += d.toString()))
      socket.write('PING\r\n')
      await new Promise((r) => setTimeout(r, 300))
      expect(received).toBe('')
      expect(proxy.connections()).toBe(1)
      proxy.heal()
      await expect.poll(() => received).toBe('+PONG\r\n')
    } finally {
      socket.destroy()
    }
  }, T)

  it('resetAll() breaks the connection under ioredis, which reconnects and works again', async () => {
    const c = client(proxy.port)
    await c.ping()
    const errors: Error[] = []
    c.on('error', (e: Error) => errors.push(e))
    const reconnecting = new Promise<void>((resolve) => c.once('reconnecting', () => resolve()))
    proxy.resetAll()
    await reconnecting
    expect(errors.map((e) => (e as NodeJS.ErrnoException).code)).toContain('ECONNRESET')
    expect(await c.ping()).toBe('PONG')
    expect(proxy.connections()).toBe(1)
  }, T)
})

describe('startCluster', () => {
  let cluster: RedisCluster
  beforeAll(async () => {
    cluster = await startCluster(3)
  }, T)
  afterAll(() => cluster?.stop(), T)

  it('accepts SETs spread over slots, and each master owns some slots and keys', async () => {
    const c = new Cluster(cluster.nodes)
    clients.push(c)
    const keys = Array.from({ length: 30 }, (_, i) => `key:${i}`)
    for (const k of keys) expect(await c.set(k, k)).toBe('OK')
    expect(await Promise.all(keys.map((k) => c.get(k)))).toEqual(keys)

    const owned = new Map<number, number>()
    for (const [from, to, [, port]] of await c.cluster('SLOTS')) owned.set(port, (owned.get(port) ?? 0) + to - from + 1)
    expect([...owned.keys()].sort()).toEqual(cluster.nodes.map((n) => n.port).sort())
    expect([...owned.values()].every((n) => n > 0)).toBe(true)
    expect([...owned.values()].reduce((a, b) => a + b)).toBe(16384)

    const perNode = await Promise.all(cluster.nodes.map((n) => redisCli(n.port, ['DBSIZE'])))
    expect(perNode.every((n) => Number(n) > 0)).toBe(true)
    expect(perNode.reduce((a, n) => a + Number(n), 0)).toBe(keys.length)
  }, T)
})
