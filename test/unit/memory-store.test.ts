import { describe, expect, it } from 'vitest'
import { ManualClock } from '../../dist/src/clock.js'
import { MemoryStore } from '../../dist/src/store/memory-store.js'
import { ClaimCode } from '../../dist/src/store/store.js'

const LEASE = 1_000
const TTL = 10_000
/** memory-store.ts: a sweep runs once this many keys were claimed since the last one, and visits twice as many records as were claimed. */
const SWEEP_EVERY = 4096

function setup() {
  const clock = new ManualClock(1_000_000)
  return { clock, store: new MemoryStore(clock) }
}

const keysOf = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`)
const none = (keys: string[]) => keys.map(() => undefined)

// The state machine itself is proven for every store in store-conformance.test.ts.
describe('memory store', () => {
  it('sweeps expired records a bounded slice at a time: one sweep deletes exactly one slice of expired records, no live one', async () => {
    const { clock, store } = setup()
    const old = keysOf('k', 10_000)
    await store.claim(old, none(old), 'A', LEASE, TTL) // a sweep runs here too, with nothing expired yet
    expect(store.size).toBe(10_000)
    await store.commit(old, undefined, 'A', TTL)
    clock.advance(TTL) // every old record has expired
    const fresh = keysOf('n', 5_000)
    await store.claim(fresh, none(fresh), 'B', LEASE, TTL) // 5,000 claims ≥ SWEEP_EVERY: one sweep of 2 × 5,000 records
    // Exactly one slice went, and every record in it was an expired one (the first 10,000 of the map).
    expect(store.size).toBe(10_000 + 5_000 - 2 * 5_000)
    // No live record was swept: another owner finds every fresh key in progress.
    const { codes } = await store.claim(fresh, none(fresh), 'C', LEASE, TTL)
    expect(codes.filter((code) => code !== ClaimCode.IN_PROGRESS)).toHaveLength(0)
  })

  it('under a stream of new keys, every expired record is eventually swept (the cursor outpaces the keys appended behind it)', async () => {
    const { clock, store } = setup()
    let live: string[] = []
    // 40 batches of new keys, each committed with a TTL of 10 batches: at most 11 batches are live at a time.
    for (let b = 0; b < 40; b++) {
      const keys = keysOf(`b${b}-`, 1024)
      await store.claim(keys, none(keys), `t${b}`, LEASE, TTL)
      await store.commit(keys, undefined, `t${b}`, TTL)
      live = [...live, ...keys].slice(-11 * 1024)
      clock.advance(TTL / 10)
    }
    // One full walk of the map takes size / SWEEP_BATCH sweeps: after 40 batches (10 sweeps) of ~11 live
    // batches, no more than two walks' worth of records can be left.
    expect(store.size).toBeLessThanOrEqual(live.length + 2 * SWEEP_EVERY)
  })
})
