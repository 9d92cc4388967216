/**
 * Fault test of the Redis Streams transport: two consumer processes in one
 * group; one is SIGKILLed mid-run three times (at 20%, 45% and 70% of the
 * keys done) and restarted each time under a new consumer name, so whatever
 * the dead one held can only come back through XAUTOCLAIM. 40,000 entries
 * with 30% duplicates and one malformed entry. Effects are counted per key in
 * Redis (HINCRBY in the handler) and checked at the end, with the pending
 * list of every consumer name, dead or alive. Bounded by count and progress:
 * the run fails only when effects, then settled entries, stop growing for
 * STALL_MS, never because a loaded machine is slower.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { FAULT_TEST_TIMEOUT_MS, STALL_MS, untilDone } from '../support/progress.js'

const url = 'redis://127.0.0.1:6379'
const ENTRIES = 40_000
const UNIQUE = 28_000
const COUNT = 64
const BATCHES_IN_FLIGHT = 2
/** The most entries one consumer holds at once: what one SIGKILL can leave run but not committed. */
const IN_FLIGHT_PER_CONSUMER = COUNT * BATCHES_IN_FLIGHT
const LEASE_MS = 1_000
const CLAIM_IDLE_MS = 2_000
const KILL_AT = [0.2, 0.45, 0.7]

const fixture = fileURLToPath(new URL('../support/fixtures/streams-consumer.mjs', import.meta.url))
const redis = new Redis(url)
const children = new Set<ChildProcess>()
const scope = `test:streams-kill:${randomUUID()}`
const stream = `${scope}:s`
const group = 'g'
const deadLetterStream = `${stream}:dead`
const effectsKey = `${scope}:effects`

afterAll(async () => {
  // Only the processes this test forked, by their handles.
  for (const child of children) child.kill('SIGKILL')
  await deleteKeysUnder(redis, scope)
  redis.disconnect()
})

interface Child {
  name: string
  process: ChildProcess
  /** The last stats it sent. */
  stats: Record<string, number>
}

function startConsumer(name: string): Promise<Child> {
  const args = [url, stream, group, name, `${scope}:idem:`, effectsKey, COUNT, BATCHES_IN_FLIGHT, LEASE_MS, CLAIM_IDLE_MS].map(String)
  const child = fork(fixture, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  const handle: Child = { name, process: child, stats: {} }
  child.on('message', (message: { stats?: Record<string, number> }) => {
    if (message.stats !== undefined) handle.stats = message.stats
  })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumer ${name} not ready after ${STALL_MS / 1000} s`)), STALL_MS)
    child.once('message', () => {
      clearTimeout(timer)
      resolve(handle)
    })
    child.once('exit', (code, signal) => reject(new Error(`consumer ${name} exited before it was ready (${code ?? signal})`)))
  })
}

/** Asks a consumer to close; resolves with its final stats and errors. */
function closeConsumer(child: Child): Promise<{ stats: Record<string, number>; errors: string[] }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumer ${child.name} did not close within ${STALL_MS / 1000} s`)), STALL_MS)
    child.process.on('message', (message: { closed?: boolean; stats: Record<string, number>; errors: string[] }) => {
      if (message.closed !== true) return
      clearTimeout(timer)
      resolve(message)
    })
    child.process.send('close')
  })
}

async function pendingOf(name: string): Promise<number> {
  const info = (await redis.xinfo('CONSUMERS', stream, group)) as unknown[][]
  for (const fields of info) {
    const record = Object.fromEntries(Array.from({ length: fields.length / 2 }, (_, i) => [fields[2 * i], fields[2 * i + 1]]))
    if (record.name === name) return Number(record.pending)
  }
  return 0
}

async function groupState(): Promise<{ pending: number; lag: number }> {
  const [fields] = (await redis.xinfo('GROUPS', stream)) as unknown[][]
  const record = Object.fromEntries(Array.from({ length: fields.length / 2 }, (_, i) => [fields[2 * i], fields[2 * i + 1]]))
  return { pending: Number(record.pending), lag: Number(record.lag) }
}

describe('Redis Streams consumers SIGKILLed mid-run', () => {
  it('two consumers, one killed 3 times: lost 0, dead consumers’ entries reclaimed, doubles within kills × in-flight, the malformed entry dead-lettered', async () => {
    // 30% duplicates: resends of recent keys and late copies of old ones; one malformed entry (no key field) in the middle.
    const keys: string[] = []
    for (let i = 0; i < ENTRIES; i++) keys.push(i < UNIQUE ? `order-${i}` : `order-${i % 2 === 0 ? i - UNIQUE : (i * 7919) % UNIQUE}`)
    for (let i = keys.length - 1; i > UNIQUE / 2; i--) {
      const j = UNIQUE / 2 + Math.floor(Math.random() * (i - UNIQUE / 2))
      ;[keys[i], keys[j]] = [keys[j], keys[i]]
    }
    await redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM')
    let malformedId = ''
    for (let i = 0; i < keys.length; i += 5_000) {
      const pipeline = redis.pipeline()
      for (const key of keys.slice(i, i + 5_000)) pipeline.xadd(stream, '*', 'key', key, 'amount', '10')
      if (i === 20_000) pipeline.xadd(stream, '*', 'amount', '10', 'note', 'no key field')
      const replies = (await pipeline.exec()) ?? []
      if (i === 20_000) malformedId = replies[replies.length - 1][1] as string
    }

    const started = Date.now()
    let generation = 0
    const survivor = await startConsumer('survivor')
    let victim = await startConsumer(`victim-${generation}`)
    const killed: { name: string; pendingAtKill: number; stats: Record<string, number> }[] = []
    const effectCount = () => redis.hlen(effectsKey)
    for (const fraction of KILL_AT) {
      await untilDone({ what: `${fraction * 100}% of the keys done`, done: async () => (await effectCount()) >= fraction * UNIQUE, progress: effectCount, pollMs: 20 })
      victim.process.kill('SIGKILL')
      await new Promise<void>((resolve) => (victim.process.exitCode !== null || victim.process.signalCode !== null ? resolve() : victim.process.once('exit', () => resolve())))
      killed.push({ name: victim.name, pendingAtKill: await pendingOf(victim.name), stats: victim.stats })
      victim = await startConsumer(`victim-${++generation}`)
    }

    // Entries read but not acked (pending) plus entries not read (lag) only fall: reads move lag to pending, acks and dead letters remove.
    let state = await groupState()
    await untilDone({
      what: 'every entry acked',
      done: async () => ((state = await groupState()), state.pending === 0 && state.lag === 0),
      progress: async () => {
        const { pending, lag } = await groupState()
        return ENTRIES + 1 - pending - lag
      },
    })
    const seconds = (Date.now() - started) / 1000
    const [last, first] = await Promise.all([closeConsumer(victim), closeConsumer(survivor)])

    const effects = await redis.hgetall(effectsKey)
    const perKey = Object.values(effects).map(Number)
    const lost = UNIQUE - perKey.length
    const totalEffects = perKey.reduce((a, b) => a + b, 0)
    const doubles = perKey.reduce((sum, n) => sum + (n - 1), 0)
    const bound = killed.length * IN_FLIGHT_PER_CONSUMER
    const pendingLeft = await Promise.all(killed.map((k) => pendingOf(k.name)))
    const reclaimedBySurvivors = first.stats.reclaimed + last.stats.reclaimed
    const reclaimedByKilled = killed.reduce((sum, k) => sum + (k.stats.reclaimed ?? 0), 0)
    const letters = (await redis.xrange(deadLetterStream, '-', '+')) as [string, string[]][]
    console.log(
      `streams SIGKILL test: ${ENTRIES + 1} entries (${UNIQUE} unique keys, 1 malformed), 2 consumers, ${killed.length} kills in ${seconds.toFixed(1)} s; ` +
        `effects ${totalEffects}, lost ${lost}, double effects ${doubles} (bound ${killed.length} kills × ${IN_FLIGHT_PER_CONSUMER} in flight per consumer = ${bound}); ` +
        `pending under the killed consumers at their kill ${killed.map((k) => k.pendingAtKill).join('/')}, at the end ${pendingLeft.join('/')}; ` +
        `entries reclaimed ${reclaimedBySurvivors} by the consumers alive at the end (+ at least ${reclaimedByKilled} by killed ones, as last reported); ` +
        `dead-lettered ${letters.length}; group pending ${state.pending}, lag ${state.lag}`,
    )
    expect(state).toEqual({ pending: 0, lag: 0 })
    expect(lost).toBe(0)
    expect(doubles).toBeLessThanOrEqual(bound)
    expect(pendingLeft.every((n) => n === 0)).toBe(true)
    expect(killed.some((k) => k.pendingAtKill > 0)).toBe(true)
    expect(reclaimedBySurvivors + reclaimedByKilled).toBeGreaterThan(0)
    expect(letters).toHaveLength(1)
    const letter = Object.fromEntries(Array.from({ length: letters[0][1].length / 2 }, (_, i) => [letters[0][1][2 * i], letters[0][1][2 * i + 1]]))
    expect(letter).toMatchObject({ id: malformedId, code: 'INVALID_KEY' })
    expect(JSON.parse(letter.fields)).toEqual({ amount: '10', note: 'no key field' })
    expect(first.errors.filter((e) => !e.startsWith('TRANSPORT_FAILED'))).toEqual([])
  }, FAULT_TEST_TIMEOUT_MS)
})
