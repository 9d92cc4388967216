/**
 * Exactly-once under SIGKILL, per SQL store: a consumer process writes its
 * business effect through the transaction helper while it works through
 * 50,000 messages with 30% duplicates, and is SIGKILLed and restarted 12
 * times. This test is its transport: it sends batches over IPC, acks what
 * the consumer acks, and redelivers everything else (what was in flight when
 * it died, and in-flight verdicts). The effects table has no unique key, so a
 * double effect would show as a second row; at the end it must hold exactly
 * one row per unique key: double effects 0, lost 0.
 *
 * Kills come at fixed points of progress (every 1/13 of the messages acked),
 * not on a timer: on a loaded machine a consumer that needs seconds to start
 * would otherwise be killed again before it got anything done, and the run
 * would never end. The run fails only when acks stop coming (STALL_MS).
 */
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { FAULT_TEST_TIMEOUT_MS, untilDone } from '../support/progress.js'
import { sleep, sqlKit, type SqlKind, type SqlKit } from '../support/sql.js'

const MESSAGES = 50_000
const DUP_RATE = 0.3
const BATCH = 256
const OUTSTANDING_BATCHES = 4
const LEASE_MS = 1_000
const KILLS = 12
/** After a kill point is reached, the kill waits up to this long, so it lands anywhere inside the consumer's batches. */
const KILL_JITTER_MS = 50
const fixture = fileURLToPath(new URL('../support/fixtures/sql-kill-consumer.mjs', import.meta.url))

/** 30% duplicates: half resend a recent key (a producer retry), half an old one (a late redelivery). */
function makeKeys(seed: number): { keys: string[]; unique: number } {
  let state = seed * 0x9e3779b9 + 1
  const random = () => ((state = Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32
  const keys: string[] = []
  let unique = 0
  for (let i = 0; i < MESSAGES; i++) {
    if (unique > 0 && random() < DUP_RATE) {
      const back = random() < 0.5 ? Math.min(unique, 1 + Math.floor(random() * 200)) : 1 + Math.floor(random() * unique)
      keys.push(`order-${unique - back}`)
    } else keys.push(`order-${unique++}`)
  }
  return { keys, unique }
}

const children = new Set<ChildProcess>()
afterAll(() => {
  for (const child of children) child.kill('SIGKILL')
})

interface KillRun {
  kills: number
  unique: number
  rows: number
  doubles: number
  lost: number
  failures: string[]
  strangers: string[]
}

describe.each<SqlKind>(['postgres', 'mysql', 'sqlite'])('%s store: consumer SIGKILLed repeatedly, effects through the transaction helper', (kind) => {
  const kit = sqlKit(kind)
  afterAll(() => kit.close())

  it(`${MESSAGES.toLocaleString('en-US')} messages, ${DUP_RATE * 100}% duplicates: one effect row per unique key, double effects 0, lost 0`, async () => {
    const run = await killRun(kit, kind, 'helper')
    expect(run.failures).toEqual([])
    expect(run.kills).toBe(KILLS)
    expect(run.strangers).toEqual([])
    expect(run.doubles).toBe(0)
    expect(run.lost).toBe(0)
    expect(run.rows).toBe(run.unique)
  }, FAULT_TEST_TIMEOUT_MS)
})

describe('control: the same kills with the effect written outside the transaction (postgres)', () => {
  const kit = sqlKit('postgres')
  afterAll(() => kit.close())

  it('shows double effects: the window between effect and commit that the helper closes is real, and this test sees it', async () => {
    const run = await killRun(kit, 'postgres', 'control')
    expect(run.kills).toBe(KILLS)
    expect(run.lost).toBe(0)
    expect(run.doubles).toBeGreaterThan(0)
  }, FAULT_TEST_TIMEOUT_MS)
})

async function killRun(kit: SqlKit, kind: SqlKind, mode: 'helper' | 'control'): Promise<KillRun> {
  const store = kit.store()
  const effects = await kit.effectTable()
  const { keys, unique } = makeKeys(kind.length)
  const acked = new Uint8Array(MESSAGES)
  let ackedCount = 0
  let pending: number[] = Array.from({ length: MESSAGES }, (_, i) => i)
  let nextBatch = 0
  let kills = 0
  let inFlightAtKills = 0
  let redeliveries = 0
  let retried = 0
  const failures: string[] = []
  let finished = false

  interface Consumer {
    child: ChildProcess
    ready: boolean
    outstanding: Map<number, number[]>
  }
  let current: Consumer | undefined

  const pump = (): void => {
    const c = current
    if (c === undefined || !c.ready) return
    while (c.outstanding.size < OUTSTANDING_BATCHES && pending.length > 0) {
      const ids = pending.splice(0, BATCH).filter((id) => acked[id] === 0)
      if (ids.length === 0) continue
      const batch = nextBatch++
      c.outstanding.set(batch, ids)
      // A child that just died closes the channel: send reports it to the callback
      // (with no callback it would be an uncaught error); its exit handler redelivers.
      const sent = c.child.send({ batch, messages: ids.map((id) => ({ id, key: keys[id] })) }, () => {})
      if (!sent || !c.child.connected) return
    }
  }

  const start = (): void => {
    const child = fork(fixture, [kind, JSON.stringify(store), effects, String(LEASE_MS), mode], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
    const consumer: Consumer = { child, ready: false, outstanding: new Map() }
    current = consumer
    children.add(child)
    child.on('message', (m: { ready?: boolean; batch?: number; acked?: number[]; retry?: number[]; failed?: string[] }) => {
      if (m.ready === true) {
        consumer.ready = true
        return pump()
      }
      consumer.outstanding.delete(m.batch!)
      for (const id of m.acked!) {
        if (acked[id] === 1) continue
        acked[id] = 1
        ackedCount++
      }
      failures.push(...m.failed!)
      if (m.retry!.length > 0) {
        retried += m.retry!.length
        // In flight elsewhere (a dead consumer's lease, still live): deliver again a little later.
        setTimeout(() => {
          pending.push(...m.retry!)
          pump()
        }, 150)
      }
      if (ackedCount === MESSAGES) finished = true
      pump()
    })
    child.on('exit', () => {
      children.delete(child)
      // Everything this consumer had not acked goes back to the front of the queue.
      const lost = [...consumer.outstanding.values()].flat().filter((id) => acked[id] === 0)
      redeliveries += lost.length
      pending = [...lost, ...pending]
      if (current === consumer) current = undefined
      if (!finished) start()
    })
  }

  const started = Date.now()
  start()
  const progress = () => ackedCount
  try {
    for (let k = 1; k <= KILLS; k++) {
      // Kill k comes once k/13 of the messages are acked, at a consumer with batches in hand.
      const at = Math.floor((k * MESSAGES) / (KILLS + 1))
      await untilDone({ what: `${kind}: ${at} messages acked before kill ${k}`, done: () => ackedCount >= at && current?.ready === true && current.outstanding.size > 0, progress })
      await sleep(Math.random() * KILL_JITTER_MS)
      const victim = current
      if (victim === undefined || victim.child.exitCode !== null || victim.child.signalCode !== null) {
        k-- // it died on its own while the kill waited: the kill goes to its successor
        continue
      }
      inFlightAtKills += [...victim.outstanding.values()].reduce((sum, ids) => sum + ids.length, 0)
      const exited = new Promise((resolve) => victim.child.once('exit', resolve))
      victim.child.kill('SIGKILL')
      kills++
      await exited
    }
    await untilDone({ what: `${kind}: all ${MESSAGES} messages acked`, done: () => finished, progress })
  } finally {
    finished = true // no restart after this, also when the run failed (afterAll kills what is left)
  }
  if (current !== undefined) {
    const last = current.child
    const exited = new Promise((resolve) => last.once('exit', resolve))
    last.kill('SIGTERM')
    await exited
  }

  const perKey = await kit.effectsPerKey(effects)
  let rows = 0
  let doubles = 0
  for (const n of perKey.values()) {
    rows += n
    doubles += n - 1
  }
  const lost = unique - perKey.size
  const strangers = [...perKey.keys()].filter((k) => !/^order-\d+$/.test(k) || Number(k.slice(6)) >= unique)
  console.log(
    `SQL kill test [${kind}${mode === 'control' ? ', CONTROL: effect outside the transaction' : ''}]: ${kills} SIGKILLs (${inFlightAtKills} messages in flight at the kills, ${redeliveries} redelivered), ` +
      `${MESSAGES} messages, ${unique} unique keys, ${rows} effect rows, double effects ${doubles}, lost ${lost}; ` +
      `${retried} in-flight/lease-lost retries, ${((Date.now() - started) / 1000).toFixed(1)} s`,
  )
  return { kills, unique, rows, doubles, lost, failures, strangers }
}
