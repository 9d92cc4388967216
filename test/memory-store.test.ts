import { describe, expect, it } from 'vitest'
import { ManualClock } from '../dist/src/clock.js'
import { MemoryStore } from '../dist/src/store/memory-store.js'
import { ClaimCode } from '../dist/src/store/store.js'

const LEASE = 1_000
const TTL = 10_000

function setup() {
  const clock = new ManualClock(1_000_000)
  return { clock, store: new MemoryStore(clock) }
}

describe('memory store: the state machine of DESIGN.md §2', () => {
  it('absent → claim → IN_PROGRESS; another owner sees in-progress with the fingerprint', async () => {
    const { store } = setup()
    expect((await store.claim(['k'], ['fp1'], 'A', LEASE)).codes[0]).toBe(ClaimCode.CLAIMED)
    const other = await store.claim(['k'], ['fp2'], 'B', LEASE)
    expect(other.codes[0]).toBe(ClaimCode.IN_PROGRESS)
    expect(other.fingerprints[0]).toBe('fp1')
  })

  it('a retried claim with the same token recognises its own claim', async () => {
    const { store } = setup()
    await store.claim(['k'], [undefined], 'A', LEASE)
    expect((await store.claim(['k'], [undefined], 'A', LEASE)).codes[0]).toBe(ClaimCode.CLAIMED)
  })

  it('a key twice in one claim batch is a REPEAT, not its own claim', async () => {
    const { store } = setup()
    const replies = await store.claim(['k', 'x', 'k'], [undefined, undefined, undefined], 'A', LEASE)
    expect(Array.from(replies.codes)).toEqual([ClaimCode.CLAIMED, ClaimCode.CLAIMED, ClaimCode.REPEAT])
  })

  it('commit(token) → DONE with fingerprint and result, answered to later claims', async () => {
    const { store } = setup()
    await store.claim(['k'], ['fp'], 'A', LEASE)
    expect(Array.from(await store.commit(['k'], [{ id: 7 }], 'A', TTL))).toEqual([1])
    const again = await store.claim(['k'], ['fp'], 'B', LEASE)
    expect(again.codes[0]).toBe(ClaimCode.DONE)
    expect(again.fingerprints[0]).toBe('fp')
    expect(again.results[0]).toEqual({ id: 7 })
  })

  it('a commit or release with a stale token is refused and changes nothing', async () => {
    const { store } = setup()
    await store.claim(['k'], [undefined], 'A', LEASE)
    expect(Array.from(await store.commit(['k'], undefined, 'B', TTL))).toEqual([0])
    expect(Array.from(await store.release(['k'], 'B'))).toEqual([0])
    expect((await store.claim(['k'], [undefined], 'C', LEASE)).codes[0]).toBe(ClaimCode.IN_PROGRESS)
  })

  it('release(token) → absent: the next delivery claims it again', async () => {
    const { store } = setup()
    await store.claim(['k'], [undefined], 'A', LEASE)
    expect(Array.from(await store.release(['k'], 'A'))).toEqual([1])
    expect((await store.claim(['k'], [undefined], 'B', LEASE)).codes[0]).toBe(ClaimCode.CLAIMED)
  })

  it('lease expired → another owner claims; the first owner is fenced out of commit, release and renew', async () => {
    const { clock, store } = setup()
    await store.claim(['k'], [undefined], 'A', LEASE)
    clock.advance(LEASE)
    expect((await store.claim(['k'], [undefined], 'B', LEASE)).codes[0]).toBe(ClaimCode.CLAIMED)
    expect(Array.from(await store.commit(['k'], undefined, 'A', TTL))).toEqual([0])
    expect(Array.from(await store.release(['k'], 'A'))).toEqual([0])
    expect(Array.from(await store.renew(['k'], 'A', LEASE))).toEqual([0])
    expect(Array.from(await store.commit(['k'], ['b-result'], 'B', TTL))).toEqual([1])
    expect((await store.claim(['k'], [undefined], 'C', LEASE)).results[0]).toBe('b-result')
  })

  it('a commit after the lease lapsed is refused even when nobody re-claimed', async () => {
    const { clock, store } = setup()
    await store.claim(['k'], [undefined], 'A', LEASE)
    clock.advance(LEASE + 1)
    expect(Array.from(await store.commit(['k'], undefined, 'A', TTL))).toEqual([0])
  })

  it('renew keeps a live lease alive past its first expiry', async () => {
    const { clock, store } = setup()
    await store.claim(['k'], [undefined], 'A', LEASE)
    clock.advance(LEASE - 1)
    expect(Array.from(await store.renew(['k'], 'A', LEASE))).toEqual([1])
    clock.advance(LEASE - 1)
    expect((await store.claim(['k'], [undefined], 'B', LEASE)).codes[0]).toBe(ClaimCode.IN_PROGRESS)
  })

  it('DONE expires after its TTL: the key is absent again', async () => {
    const { clock, store } = setup()
    await store.claim(['k'], [undefined], 'A', LEASE)
    await store.commit(['k'], undefined, 'A', TTL)
    clock.advance(TTL - 1)
    expect((await store.claim(['k'], [undefined], 'B', LEASE)).codes[0]).toBe(ClaimCode.DONE)
    clock.advance(1)
    expect((await store.claim(['k'], [undefined], 'B', LEASE)).codes[0]).toBe(ClaimCode.CLAIMED)
  })

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
