import { describe, expect, it } from 'vitest'
import { ManualClock } from '../../dist/src/clock.js'
import { MemoryStore } from '../../dist/src/store/memory-store.js'

const LEASE = 1_000
const TTL = 10_000

function setup() {
  const clock = new ManualClock(1_000_000)
  return { clock, store: new MemoryStore(clock) }
}

// The state machine itself is proven for every store in store-conformance.test.ts.
describe('memory store', () => {
  it('sweeps expired records a bounded slice at a time', async () => {
    const { clock, store } = setup()
    const keys = Array.from({ length: 10_000 }, (_, i) => `k${i}`)
    await store.claim(keys, keys.map(() => undefined), 'A', LEASE)
    await store.commit(keys, undefined, 'A', TTL)
    clock.advance(TTL)
    const fresh = Array.from({ length: 5_000 }, (_, i) => `n${i}`)
    await store.claim(fresh, fresh.map(() => undefined), 'B', LEASE)
    expect(store.size).toBeLessThan(15_000)
    expect(store.size).toBeGreaterThanOrEqual(5_000)
  })
})
