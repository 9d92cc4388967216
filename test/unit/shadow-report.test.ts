/**
 * The shadow report: what enforce would have done with the decisions a
 * shadow or gray rollout did not act on, counted by reason and namespace,
 * with samples that carry key digests, never keys; written to a file for
 * `idem shadow report`.
 */
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import type { EngineOptions } from '../../dist/src/config.js'
import type { Message } from '../../dist/src/message.js'
import { problemsOf } from '../support/config-problems.js'
import { idem } from '../support/idem-cli.js'

const dir = mkdtempSync(join(tmpdir(), 'idem-shadow-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const engines: Engine[] = []
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
})
async function engine(options: EngineOptions): Promise<Engine> {
  const e = await createEngine({ shards: 4, ...options })
  engines.push(e)
  return e
}

/** 300 messages over 200 keys in two namespaces: each key of the first 100 twice, apart; one payload changed. */
function traffic(): Message[] {
  const messages: Message[] = []
  for (let i = 0; i < 200; i++) messages.push({ key: `order-${i}`, namespace: i % 2 === 0 ? 'eu' : 'us', fingerprint: 'a' })
  for (let i = 0; i < 100; i++) messages.push({ key: `order-${i}`, namespace: i % 2 === 0 ? 'eu' : 'us', fingerprint: i === 7 ? 'changed' : 'a' })
  return messages
}

const settle = () => new Promise((resolve) => setImmediate(resolve))

describe('shadow report', () => {
  it('shadow: counts what enforce would have dropped by reason and namespace, with digests for keys', async () => {
    const e = await engine({ rollout: 'shadow' })
    const messages = traffic()
    let runs = 0
    await e.processBatch(messages.slice(0, 200), () => runs++)
    await e.processBatch(messages.slice(200), () => runs++)
    await settle()
    expect(runs).toBe(300)
    const report = e.shadowReport()
    expect(report.byReason).toEqual({ duplicate: 99, conflict: 1, in_flight: 0, invalid: 0, stale: 0 })
    expect(report.wouldDrop).toBe(100)
    expect(report.wouldDrop).toBe(e.stats().totals.shadowRuns)
    expect(report.byNamespace.eu).toEqual({ duplicate: 50 })
    expect(report.byNamespace.us).toEqual({ duplicate: 49, conflict: 1 })
    expect(report.samples.duplicate).toHaveLength(20)
    expect(report.samples.conflict).toEqual([expect.objectContaining({ namespace: 'us', reason: 'conflict', keyDigest: createHash('sha256').update('order-7').digest('hex').slice(0, 16) })])
    expect(JSON.stringify(report)).not.toContain('order-')
    expect(Date.parse(report.since!)).toBeLessThanOrEqual(Date.parse(report.until!))
  })

  it('gray: only the shadowed share is counted, across worker threads, and equals the handlers run in shadow', async () => {
    const e = await engine({ rollout: { enforce: 0.5 }, threads: 2 })
    const messages = traffic()
    await e.processBatch(messages.slice(0, 200), () => 'ok')
    const second = await e.processBatch(messages.slice(200), () => 'ok')
    await settle()
    const report = e.shadowReport()
    const enforcedDrops = second.filter((o) => o.verdict !== 'new').length
    expect(report.wouldDrop).toBe(e.stats().totals.shadowRuns)
    expect(report.wouldDrop + enforcedDrops).toBe(100)
    // A stable half of the keys, give or take: neither none nor all.
    expect(report.wouldDrop).toBeGreaterThan(20)
    expect(report.wouldDrop).toBeLessThan(80)
  })

  it('enforce keeps nothing until setRollout leaves it, and stops watching when it comes back', async () => {
    const e = await engine({})
    const messages = traffic()
    await e.processBatch(messages, () => 'ok')
    await settle()
    expect(e.shadowReport()).toMatchObject({ wouldDrop: 0, since: undefined })
    e.setRollout('shadow')
    await e.processBatch(messages.slice(0, 10), () => 'ok')
    await settle()
    expect(e.shadowReport().byReason.duplicate).toBe(10)
    // Back to enforce: the report keeps what it has, and no decision event is built any more (no observer left).
    e.setRollout('enforce')
    expect((e as unknown as { hub: { active: boolean } }).hub.active).toBe(false)
    await e.processBatch(messages.slice(0, 10), () => 'ok')
    await settle()
    expect(e.shadowReport().byReason.duplicate).toBe(10)
    e.setRollout({ enforce: 0 })
    await e.processBatch(messages.slice(0, 10), () => 'ok')
    await settle()
    expect(e.shadowReport().byReason.duplicate).toBe(20)
  })

  it('writes the report to its file at close, and idem shadow report prints it', async () => {
    const file = join(dir, 'report.json')
    const e = await createEngine({ rollout: 'shadow', shadowReport: { file, samples: 3 } })
    await e.processBatch(traffic(), () => 'ok')
    await e.close()
    const written = JSON.parse(readFileSync(file, 'utf8'))
    expect(written.wouldDrop).toBe(100)
    expect(written.samples.duplicate).toHaveLength(3)
    const printed = idem('shadow', 'report', file)
    expect(printed.code).toBe(0)
    expect(printed.stdout).toMatch(/enforce would have acted on 100 decisions/)
    expect(printed.stdout).toMatch(/duplicate\s+99/)
    expect(printed.stdout).toMatch(/us\s+49\s+1/)
    expect(printed.stdout).not.toContain('order-')
    const json = idem('shadow', 'report', file, '--json')
    expect(JSON.parse(json.stdout)).toEqual(written)
  })

  it('refuses bad input', async () => {
    expect(problemsOf({ shadowReport: { samples: 0 } })).toEqual(['shadowReport.samples: must be an integer from 1 to 10000, got 0'])
    expect(problemsOf({ shadowReport: { file: join(dir, 'no-such-dir', 'r.json') } })[0]).toMatch(/^shadowReport\.file: must be a path in a folder idem can write to \(ENOENT\)/)
    expect(problemsOf({ shadowReport: { every: 5 } })[0]).toMatch(/^shadowReport\.every: must be left out/)
    const missing = idem('shadow', 'report', join(dir, 'missing.json'))
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/cannot read the shadow report .*missing\.json/)
    const notReport = join(dir, 'not-a-report.json')
    writeFileSync(notReport, '{"a":1}')
    expect(idem('shadow', 'report', notReport).code).toBe(1)
    expect(idem('shadow', 'report').code).toBe(2)
    expect(idem('shadow', 'show', notReport).code).toBe(2)
  })
})
