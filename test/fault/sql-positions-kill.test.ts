/**
 * Consume positions in the business transaction, per SQL store, under
 * SIGKILL: a reader process takes a Redis stream with plain XREAD (no
 * consumer group, so the position it saved is all it knows on restart), runs
 * each entry's effect through engine.transaction with
 * savePosition(stream, 0, id), and is SIGKILLed at fixed points of progress
 * and restarted from engine.positionOf. The stream carries 30% producer
 * resends (the same key again, later). The effects table has no unique key:
 * a double effect shows as a second row, a lost one as a key with none.
 */
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { createEngine } from '../../dist/src/index.js'
import { closeConsumerProcess, keysWithDuplicates, killAllConsumerProcesses, killConsumerProcess, startConsumerProcess, type ConsumerProcess } from '../support/consumer-processes.js'
import { FAULT_TEST_TIMEOUT_MS, untilDone } from '../support/progress.js'
import { sqlKit, type SqlKind } from '../support/sql.js'

const UNIQUE = 2_100
const ENTRIES = 3_000
const KILLS = 5
const LEASE_MS = 1_000
const REDIS_URL = 'redis://127.0.0.1:6379'
const fixture = fileURLToPath(new URL('../support/fixtures/positions-consumer.mjs', import.meta.url))

const redis = new Redis(REDIS_URL)
afterAll(() => {
  killAllConsumerProcesses()
  redis.disconnect()
})

describe.each<SqlKind>(['postgres', 'mysql', 'sqlite'])('%s: a stream reader that saves its position in the business transaction, SIGKILLed and restarted', (kind) => {
  const kit = sqlKit(kind)
  const stream = `idem-test-positions-${randomUUID()}`
  afterAll(async () => {
    await redis.del(stream)
    await kit.close()
  })

  it(`${ENTRIES.toLocaleString('en-US')} entries, 30% resends, ${KILLS} kills: restarts from the saved position, lost 0, double effects 0`, async () => {
    const store = kit.store()
    const effects = await kit.effectTable()
    const keys = keysWithDuplicates(UNIQUE, ENTRIES)
    const ids: string[] = []
    const pipeline = redis.pipeline()
    for (const key of keys) pipeline.xadd(stream, '*', 'key', key)
    for (const [error, id] of (await pipeline.exec())!) {
      if (error !== null) throw error
      ids.push(id as string)
    }
    // The last entry that is its key's first: the position the run must end on (a resend runs no work, so saves nothing).
    const seen = new Set<string>()
    let lastFirst = ''
    keys.forEach((key, i) => {
      if (!seen.has(key)) lastFirst = ids[i]
      seen.add(key)
    })

    const args = [kind, JSON.stringify(store), effects, stream, REDIS_URL, LEASE_MS]
    const rows = async (): Promise<number> => [...(await kit.effectsPerKey(effects)).values()].reduce((sum, n) => sum + n, 0)
    const startedFrom: string[] = []
    let reader = await startConsumerProcess(fixture, 'r0', args)
    for (let k = 1; k <= KILLS; k++) {
      const at = Math.floor((k * UNIQUE) / (KILLS + 1))
      await untilDone({ what: `${kind}: ${at} effects before kill ${k}`, done: async () => (await rows()) >= at, progress: rows, pollMs: 20 })
      await killConsumerProcess(reader)
      reader = await startConsumerProcess(fixture, `r${k}`, args)
      startedFrom.push(String((reader.stats as Record<string, unknown>).from))
    }
    await untilDone({ what: `${kind}: the reader caught up with the stream`, done: () => reader.stats.caughtUp === 1, progress: async () => (await rows()) + (reader.stats.read ?? 0) })
    const last = await closeConsumerProcess(reader)

    const perKey = await kit.effectsPerKey(effects)
    const doubles = [...perKey.values()].filter((n) => n > 1).length
    const lost = [...seen].filter((key) => !perKey.has(key)).length
    console.log(`${kind}: ${ENTRIES} entries, ${UNIQUE} keys, ${KILLS} kills: effects ${perKey.size}, lost ${lost}, double ${doubles}; restarts read from ${startedFrom.join(', ')}`)
    expect(last.errors).toEqual([])
    expect(lost).toBe(0)
    expect(doubles).toBe(0)
    expect(perKey.size).toBe(UNIQUE)
    // Every restart began past the stream's start (the position moved with the effects), and the run ends on the last first-seen entry.
    expect(startedFrom.every((from) => from !== 'undefined' && from !== '0')).toBe(true)
    const engine = await createEngine({ store })
    try {
      expect(await engine.positionOf(stream, 0)).toBe(lastFirst)
    } finally {
      await engine.close()
    }
  }, FAULT_TEST_TIMEOUT_MS)
})
