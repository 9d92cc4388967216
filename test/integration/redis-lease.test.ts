/**
 * Leases against real time on the real Redis: a handler slower than its lease
 * keeps one owner by renewing; a process frozen past its lease loses it, the
 * second owner runs, and the first owner's late commit and release are fenced.
 */
import { fork } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ErrorCode } from '../../dist/src/errors.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'

const url = 'redis://127.0.0.1:6379'
const redis = new Redis(url)
const engines: Engine[] = []
const prefixes = new Set<string>()
/** A fresh key prefix, its keys deleted after the test (a forked owner's too, whatever fails). */
function newPrefix(): string {
  const prefix = `t:${randomUUID()}:`
  prefixes.add(prefix)
  return prefix
}
async function engine(prefix: string, leaseMs: number): Promise<Engine> {
  const created = await createEngine({ shards: 1, leaseMs, lru: { maxKeys: 0 }, store: { kind: 'redis', url, prefix } })
  engines.push(created)
  return created
}
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
  for (const prefix of prefixes) await deleteKeysUnder(redis, prefix)
  prefixes.clear()
})
afterAll(() => redis.disconnect())
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('leases on the redis store', () => {
  it('a handler five times slower than its lease keeps one owner: renewals hold it, the other owner sees in-flight, then a duplicate', async () => {
    const prefix = newPrefix()
    const first = await engine(prefix, 200)
    const second = await engine(prefix, 200)
    let runs = 0
    const slow = first.process({ key: 'slow' }, async () => {
      runs++
      await sleep(1000)
      return 'slow-result'
    })
    const seen: string[] = []
    for (let i = 0; i < 8; i++) {
      await sleep(100)
      seen.push((await second.process({ key: 'slow' }, () => runs++)).verdict)
    }
    expect(await slow).toEqual({ key: 'slow', verdict: 'new', result: 'slow-result' })
    expect(seen.every((v) => v === 'in-flight')).toBe(true)
    expect(await second.process({ key: 'slow' }, () => runs++)).toEqual({ key: 'slow', verdict: 'duplicate', result: 'slow-result' })
    expect(runs).toBe(1)
    expect(first.stats().totals.fencedWrites).toBe(0)
  }, 20_000)

  it('a consumer frozen with SIGSTOP past its lease: the second owner runs; after SIGCONT the first owner commit and release are refused and counted', async () => {
    const prefix = newPrefix()
    const leaseMs = 400
    const child = fork(fileURLToPath(new URL('../support/fixtures/redis-slow-owner.mjs', import.meta.url)), [url, prefix, String(leaseMs), '600'])
    const messages: Record<string, unknown>[] = []
    const next = (field: string) =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const found = messages.find((m) => field in m)
        if (found !== undefined) return resolve(found)
        child.on('message', (m: Record<string, unknown>) => field in m && resolve(m))
        child.on('exit', (code) => reject(new Error(`the first owner exited (${code}) before sending ${field}`)))
      })
    child.on('message', (m: Record<string, unknown>) => messages.push(m))
    try {
      await next('started')
      child.kill('SIGSTOP')
      await sleep(leaseMs + 600) // no renewal can run: the lease lapses on Redis's clock

      const second = await engine(prefix, leaseMs)
      const secondRuns: string[] = []
      const outcomes = await second.processBatch([{ key: 'k1' }, { key: 'k2' }], (m) => {
        secondRuns.push(m.key)
        return 'second-owner'
      })
      expect(outcomes.map((o) => o.verdict)).toEqual(['new', 'new'])

      child.kill('SIGCONT')
      const report = (await next('outcomes')) as { outcomes: { verdict: string; code?: string }[]; fencedWrites: number }
      // k1: the handler finished, but its commit was refused (fenced); k2: its failure's release was refused.
      expect(report.outcomes[0]).toEqual({ verdict: 'new', code: ErrorCode.LEASE_LOST })
      expect(report.outcomes[1]).toEqual({ verdict: 'new', code: ErrorCode.HANDLER_FAILED })
      expect(report.fencedWrites).toBeGreaterThanOrEqual(2)
      console.log(`SIGSTOP past the lease: second owner ran ${secondRuns.length} keys; first owner fenced writes ${report.fencedWrites} (commit, release and renewals)`)

      // The second owner's DONE records stand: nothing the first owner sent overwrote them.
      const third = await engine(prefix, leaseMs)
      const after = await third.processBatch([{ key: 'k1' }, { key: 'k2' }], () => 'third')
      expect(after).toEqual([
        { key: 'k1', verdict: 'duplicate', result: 'second-owner' },
        { key: 'k2', verdict: 'duplicate', result: 'second-owner' },
      ])
    } finally {
      child.kill('SIGCONT')
      child.kill('SIGKILL')
    }
  }, 20_000)
})
