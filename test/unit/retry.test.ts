import { describe, expect, it } from 'vitest'
import { withRetries } from '../../dist/src/retry.js'

describe('withRetries: the one retry loop', () => {
  it('tries 1 + retries times, waiting backoff·2^k between, then throws what exhausted() makes of the last error', async () => {
    const tried: number[] = []
    const retried: number[] = []
    const started = Date.now()
    const error = await withRetries(
      async () => {
        tried.push(Date.now() - started)
        throw new Error(`failure ${tried.length}`)
      },
      { retries: 3, backoffMs: 10 },
      { onRetry: (_e, attempt) => retried.push(attempt), exhausted: (e, attempts) => new Error(`gave up after ${attempts}: ${(e as Error).message}`) },
    ).catch((e: Error) => e)
    expect((error as Error).message).toBe('gave up after 4: failure 4')
    expect(retried).toEqual([0, 1, 2])
    // The waits are at least 10, 20 and 40 ms: a slow machine only makes them longer.
    expect(tried[3] - tried[0]).toBeGreaterThanOrEqual(70)
  })

  it('stops at once on an error permanent() recognises, and returns the first success', async () => {
    let calls = 0
    const permanent = await withRetries(
      async () => {
        calls++
        throw new Error('closed')
      },
      { retries: 5, backoffMs: 1 },
      { permanent: (e) => ((e as Error).message === 'closed' ? new Error('permanent: closed') : undefined), exhausted: (e) => e as Error },
    ).catch((e: Error) => e.message)
    expect([permanent, calls]).toEqual(['permanent: closed', 1])
    let attempt = 0
    const value = await withRetries(async () => (++attempt < 3 ? Promise.reject(new Error('flaky')) : 'ok'), { retries: 5, backoffMs: 1 }, { exhausted: (e) => e as Error })
    expect([value, attempt]).toEqual(['ok', 3])
  })
})
