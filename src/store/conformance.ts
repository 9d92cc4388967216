/**
 * The store contract as executable cases: the state machine of DESIGN.md §2
 * that every store must keep. idem runs them on each of its own stores
 * (test/contract/store-conformance.test.ts); a custom store runs them in its
 * own test suite, with any runner:
 *
 *   for (const c of storeConformanceCases) it(c.name, () => c.run(() => ({ store: new MyStore(), advance: sleep }), { leaseMs: 300, ttlMs: 1200 }))
 *
 * Each case makes its own store (so cases never share keys), throws an
 * AssertionError when the store breaks the contract, and waits with
 * `advance`, which a store on a manual clock can make instant.
 */
import { deepStrictEqual, ok, strictEqual } from 'node:assert/strict'
import { ClaimCode, CommitCode, type DedupStore } from './store.js'

export interface ConformanceSubject {
  store: DedupStore
  /** Lets `ms` pass on the store's clock: a sleep for a server's clock, an advance for a manual one. */
  advance(ms: number): Promise<void>
}

export interface ConformanceTiming {
  /** Leases the cases take: long enough for a few round trips, short enough to wait out. */
  leaseMs: number
  /** TTL of DONE records in the cases; more than twice the lease. */
  ttlMs: number
}

export interface ConformanceCase {
  name: string
  run(make: () => ConformanceSubject, timing: ConformanceTiming): Promise<void>
}

const none = [undefined]
const codesOf = (codes: Uint8Array): number[] => Array.from(codes)

export const storeConformanceCases: readonly ConformanceCase[] = [
  {
    name: 'absent → claim → IN_PROGRESS; another owner sees in-progress with the fingerprint',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      strictEqual((await store.claim(['k'], ['fp1'], 'A', leaseMs, ttlMs)).codes[0], ClaimCode.CLAIMED)
      const other = await store.claim(['k'], ['fp2'], 'B', leaseMs, ttlMs)
      strictEqual(other.codes[0], ClaimCode.IN_PROGRESS)
      strictEqual(other.fingerprints[0], 'fp1')
    },
  },
  {
    name: 'a retried claim with the same token recognises its own claim',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      await store.claim(['k'], none, 'A', leaseMs, ttlMs)
      strictEqual((await store.claim(['k'], none, 'A', leaseMs, ttlMs)).codes[0], ClaimCode.CLAIMED)
    },
  },
  {
    name: 'a key twice in one claim batch is a REPEAT, not its own claim',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      const replies = await store.claim(['k', 'x', 'k'], [undefined, undefined, undefined], 'A', leaseMs, ttlMs)
      deepStrictEqual(codesOf(replies.codes), [ClaimCode.CLAIMED, ClaimCode.CLAIMED, ClaimCode.REPEAT])
    },
  },
  {
    name: 'commit(token) → DONE with fingerprint and result, answered to later claims; a retried commit is applied once',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      await store.claim(['k'], ['fp'], 'A', leaseMs, ttlMs)
      deepStrictEqual(codesOf(await store.commit(['k'], [{ id: 7 }], 'A', ttlMs)), [CommitCode.COMMITTED])
      deepStrictEqual(codesOf(await store.commit(['k'], [{ id: 7 }], 'A', ttlMs)), [CommitCode.COMMITTED])
      const again = await store.claim(['k'], ['fp'], 'B', leaseMs, ttlMs)
      strictEqual(again.codes[0], ClaimCode.DONE)
      strictEqual(again.fingerprints[0], 'fp')
      deepStrictEqual(again.results[0], { id: 7 })
    },
  },
  {
    name: 'a key without fingerprint or result stays without them; an empty-string fingerprint is kept as such',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      await store.claim(['a', 'b'], [undefined, ''], 'A', leaseMs, ttlMs)
      await store.commit(['a', 'b'], [undefined, null], 'A', ttlMs)
      const replies = await store.claim(['a', 'b'], none, 'B', leaseMs, ttlMs)
      deepStrictEqual(replies.fingerprints, [undefined, ''])
      deepStrictEqual(replies.results, [undefined, null])
    },
  },
  {
    name: 'a commit or release with a stale token is refused and changes nothing',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      await store.claim(['k'], none, 'A', leaseMs, ttlMs)
      deepStrictEqual(codesOf(await store.commit(['k'], undefined, 'B', ttlMs)), [CommitCode.REFUSED])
      deepStrictEqual(codesOf(await store.release(['k'], 'B')), [0])
      strictEqual((await store.claim(['k'], none, 'C', leaseMs, ttlMs)).codes[0], ClaimCode.IN_PROGRESS)
    },
  },
  {
    name: 'release(token) → absent: the next delivery claims it again',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      await store.claim(['k'], none, 'A', leaseMs, ttlMs)
      deepStrictEqual(codesOf(await store.release(['k'], 'A')), [1])
      strictEqual((await store.claim(['k'], none, 'B', leaseMs, ttlMs)).codes[0], ClaimCode.CLAIMED)
    },
  },
  {
    name: 'a release of a key whose lease lapsed with no new owner counts as applied (absent is what it wants)',
    async run(make, { leaseMs, ttlMs }) {
      const { store, advance } = make()
      await store.claim(['k'], none, 'A', leaseMs, ttlMs)
      await advance(leaseMs + 50)
      deepStrictEqual(codesOf(await store.release(['k'], 'A')), [1])
      strictEqual((await store.claim(['k'], none, 'B', leaseMs, ttlMs)).codes[0], ClaimCode.CLAIMED)
    },
  },
  {
    name: 'lease expired → another owner claims; the first owner is fenced out of commit, release and renew',
    async run(make, { leaseMs, ttlMs }) {
      const { store, advance } = make()
      await store.claim(['k'], none, 'A', leaseMs, ttlMs)
      await advance(leaseMs + 50)
      strictEqual((await store.claim(['k'], none, 'B', leaseMs, ttlMs)).codes[0], ClaimCode.CLAIMED)
      deepStrictEqual(codesOf(await store.commit(['k'], undefined, 'A', ttlMs)), [CommitCode.REFUSED])
      deepStrictEqual(codesOf(await store.release(['k'], 'A')), [0])
      deepStrictEqual(codesOf(await store.renew(['k'], 'A', leaseMs, ttlMs)), [0])
      deepStrictEqual(codesOf(await store.commit(['k'], ['b-result'], 'B', ttlMs)), [CommitCode.COMMITTED])
      strictEqual((await store.claim(['k'], none, 'C', leaseMs, ttlMs)).results[0], 'b-result')
    },
  },
  {
    name: 'a commit after the lease lapsed is refused even when nobody re-claimed',
    async run(make, { leaseMs, ttlMs }) {
      const { store, advance } = make()
      await store.claim(['k'], none, 'A', leaseMs, ttlMs)
      await advance(leaseMs + 50)
      deepStrictEqual(codesOf(await store.commit(['k'], undefined, 'A', ttlMs)), [CommitCode.REFUSED])
    },
  },
  {
    name: 'renew keeps a live lease alive past its first expiry',
    async run(make, { leaseMs, ttlMs }) {
      const { store, advance } = make()
      await store.claim(['k'], none, 'A', leaseMs, ttlMs)
      await advance(leaseMs / 2)
      deepStrictEqual(codesOf(await store.renew(['k'], 'A', leaseMs, ttlMs)), [1])
      await advance(leaseMs / 2 + 50)
      strictEqual((await store.claim(['k'], none, 'B', leaseMs, ttlMs)).codes[0], ClaimCode.IN_PROGRESS)
    },
  },
  {
    name: 'DONE expires after its TTL: the key is absent again',
    async run(make, { leaseMs, ttlMs }) {
      const { store, advance } = make()
      await store.claim(['k'], none, 'A', leaseMs, ttlMs)
      await store.commit(['k'], undefined, 'A', ttlMs)
      await advance(ttlMs / 2)
      strictEqual((await store.claim(['k'], none, 'B', leaseMs, ttlMs)).codes[0], ClaimCode.DONE)
      await advance(ttlMs / 2 + 100)
      strictEqual((await store.claim(['k'], none, 'B', leaseMs, ttlMs)).codes[0], ClaimCode.CLAIMED)
    },
  },
  {
    name: 'a batch of 1,000 keys mixing every state gets one code per key, in order',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      const keys = Array.from({ length: 1000 }, (_, i) => `key-${i}`)
      const fps = keys.map(() => undefined)
      await store.claim(keys.slice(0, 300), fps, 'A', leaseMs, ttlMs)
      await store.commit(keys.slice(0, 100), undefined, 'A', ttlMs)
      const codes = codesOf((await store.claim(keys, fps, 'B', leaseMs, ttlMs)).codes)
      deepStrictEqual(codes, [...keys.slice(0, 100).map(() => ClaimCode.DONE), ...keys.slice(100, 300).map(() => ClaimCode.IN_PROGRESS), ...keys.slice(300).map(() => ClaimCode.CLAIMED)])
    },
  },
  {
    name: 'inspect reads each state without changing it: absent, in progress (token, fingerprint, lease left), done (result, TTL left)',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      await store.claim(['running', 'done'], ['fp-r', 'fp-d'], 'A', leaseMs, ttlMs)
      await store.commit(['done'], [{ kept: true }], 'A', ttlMs)
      const [absent, running, done] = await store.inspect(['absent', 'running', 'done'])
      strictEqual(absent, undefined)
      ok(running !== undefined && done !== undefined)
      deepStrictEqual({ ...running, expiresInMs: 0 }, { state: 'in-progress', token: 'A', fingerprint: 'fp-r', result: undefined, expiresInMs: 0 })
      ok(running.expiresInMs > 0 && running.expiresInMs <= leaseMs, `lease left ${running.expiresInMs} ms, expected (0, ${leaseMs}]`)
      deepStrictEqual({ ...done, expiresInMs: 0 }, { state: 'done', token: 'A', fingerprint: 'fp-d', result: { kept: true }, expiresInMs: 0 })
      ok(done.expiresInMs > leaseMs && done.expiresInMs <= ttlMs, `TTL left ${done.expiresInMs} ms, expected (${leaseMs}, ${ttlMs}]`)
      strictEqual((await store.claim(['running'], none, 'B', leaseMs, ttlMs)).codes[0], ClaimCode.IN_PROGRESS)
    },
  },
  {
    name: 'inspect answers a lapsed lease as absent, and a key committed with its whole batch as done',
    async run(make, { leaseMs, ttlMs }) {
      const { store, advance } = make()
      await store.claim(['a', 'b'], [undefined, undefined], 'A', leaseMs, ttlMs)
      await store.commit(['a', 'b'], undefined, 'A', ttlMs)
      await store.claim(['lapsing'], none, 'B', leaseMs, ttlMs)
      await advance(leaseMs + 50)
      const [a, b, lapsed] = await store.inspect(['a', 'b', 'lapsing'])
      deepStrictEqual([a?.state, b?.state, lapsed], ['done', 'done', undefined])
    },
  },
  {
    name: 'forget removes a done or in-progress record (1) so the key is claimed again, and answers 0 for an absent key',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      await store.claim(['done', 'running'], [undefined, undefined], 'A', leaseMs, ttlMs)
      await store.commit(['done'], undefined, 'A', ttlMs)
      deepStrictEqual(codesOf(await store.forget(['done', 'running', 'absent'])), [1, 1, 0])
      deepStrictEqual(await store.inspect(['done', 'running']), [undefined, undefined])
      deepStrictEqual(codesOf((await store.claim(['done', 'running'], [undefined, undefined], 'B', leaseMs, ttlMs)).codes), [ClaimCode.CLAIMED, ClaimCode.CLAIMED])
    },
  },
  {
    name: 'markUnknown(token) → UNKNOWN: claims answer UNKNOWN with the fingerprint; the token can no longer commit, release or renew it; a retried mark answers 1',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      await store.claim(['k', 'other'], ['fp', undefined], 'A', leaseMs, ttlMs)
      deepStrictEqual(codesOf(await store.markUnknown(['k'], 'A', ttlMs)), [1])
      deepStrictEqual(codesOf(await store.markUnknown(['k'], 'A', ttlMs)), [1])
      const seen = await store.claim(['k'], ['fp'], 'B', leaseMs, ttlMs)
      strictEqual(seen.codes[0], ClaimCode.UNKNOWN)
      strictEqual(seen.fingerprints[0], 'fp')
      strictEqual(seen.unknownTokens?.[0], 'A')
      deepStrictEqual(codesOf(await store.renew(['k'], 'A', leaseMs, ttlMs)), [0])
      deepStrictEqual(codesOf(await store.release(['k'], 'A')), [0])
      // The batch's other key commits on its own; the unknown one stays unknown.
      deepStrictEqual(codesOf(await store.commit(['other'], undefined, 'A', ttlMs)), [CommitCode.COMMITTED])
      deepStrictEqual(codesOf(await store.commit(['k'], undefined, 'A', ttlMs)), [CommitCode.REFUSED])
      deepStrictEqual(codesOf((await store.claim(['k', 'other'], [undefined, undefined], 'C', leaseMs, ttlMs)).codes), [ClaimCode.UNKNOWN, ClaimCode.DONE])
    },
  },
  {
    name: 'markUnknown is fenced by the key: another token or an absent key marks nothing, a key taken over after its lease lapsed neither; a lapsed lease nobody took over is still marked',
    async run(make, { leaseMs, ttlMs }) {
      const { store, advance } = make()
      await store.claim(['held', 'lapsed', 'taken'], [undefined, undefined, undefined], 'A', leaseMs, ttlMs)
      deepStrictEqual(codesOf(await store.markUnknown(['held', 'absent'], 'B', ttlMs)), [0, 0])
      await advance(leaseMs + 50)
      strictEqual((await store.claim(['taken'], none, 'C', leaseMs, ttlMs)).codes[0], ClaimCode.CLAIMED)
      deepStrictEqual(codesOf(await store.markUnknown(['lapsed', 'taken'], 'A', ttlMs)), [1, 0])
      strictEqual((await store.claim(['lapsed'], none, 'D', leaseMs, ttlMs)).codes[0], ClaimCode.UNKNOWN)
      deepStrictEqual(codesOf(await store.commit(['taken'], undefined, 'C', ttlMs)), [CommitCode.COMMITTED])
    },
  },
  {
    name: 'resolve: UNKNOWN → DONE with its result, or → absent (claimed again); a key that is not UNKNOWN answers 0 and is left as it was',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      await store.claim(['yes', 'no', 'running'], ['fp', undefined, undefined], 'A', leaseMs, ttlMs)
      await store.markUnknown(['yes', 'no'], 'A', ttlMs)
      deepStrictEqual(codesOf(await store.resolve(['yes', 'no', 'running', 'absent'], [true, false, true, false], [{ paid: 1 }, null, null, null], ttlMs)), [1, 1, 0, 0])
      const after = await store.claim(['yes', 'no', 'running'], ['fp', undefined, undefined], 'B', leaseMs, ttlMs)
      deepStrictEqual(codesOf(after.codes), [ClaimCode.DONE, ClaimCode.CLAIMED, ClaimCode.IN_PROGRESS])
      strictEqual(after.fingerprints[0], 'fp')
      deepStrictEqual(after.results[0], { paid: 1 })
      deepStrictEqual(codesOf(await store.resolve(['yes'], [false], undefined, ttlMs)), [0])
      strictEqual((await store.claim(['yes'], none, 'C', leaseMs, ttlMs)).codes[0], ClaimCode.DONE)
    },
  },
  {
    name: 'resolve with a token resolves only the episode marked under it: an answer about an earlier episode leaves a later one as it is',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      await store.claim(['k'], none, 'A', leaseMs, ttlMs)
      await store.markUnknown(['k'], 'A', ttlMs)
      deepStrictEqual(codesOf(await store.resolve(['k'], [false], undefined, ttlMs, 'A')), [1])
      // A later episode of the same key, marked under B.
      await store.claim(['k'], none, 'B', leaseMs, ttlMs)
      await store.markUnknown(['k'], 'B', ttlMs)
      deepStrictEqual(codesOf(await store.resolve(['k'], [false], undefined, ttlMs, 'A')), [0])
      strictEqual((await store.claim(['k'], none, 'C', leaseMs, ttlMs)).codes[0], ClaimCode.UNKNOWN)
      deepStrictEqual(codesOf(await store.resolve(['k'], [true], [{ found: true }], ttlMs, 'B')), [CommitCode.COMMITTED])
      deepStrictEqual((await store.claim(['k'], none, 'C', leaseMs, ttlMs)).results[0], { found: true })
    },
  },
  {
    name: 'UNKNOWN outlives the lease (nobody takes it over) and ends with its TTL',
    async run(make, { leaseMs, ttlMs }) {
      const { store, advance } = make()
      await store.claim(['k'], none, 'A', leaseMs, ttlMs)
      await store.markUnknown(['k'], 'A', ttlMs)
      await advance(leaseMs + 50)
      strictEqual((await store.claim(['k'], none, 'B', leaseMs, ttlMs)).codes[0], ClaimCode.UNKNOWN)
      await advance(ttlMs)
      strictEqual((await store.claim(['k'], none, 'B', leaseMs, ttlMs)).codes[0], ClaimCode.CLAIMED)
    },
  },
  {
    name: 'inspect shows an UNKNOWN record (token, fingerprint, TTL left); forget removes it',
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      await store.claim(['k'], ['fp'], 'A', leaseMs, ttlMs)
      await store.markUnknown(['k'], 'A', ttlMs)
      const [view] = await store.inspect(['k'])
      ok(view !== undefined)
      deepStrictEqual({ ...view, expiresInMs: 0 }, { state: 'unknown', token: 'A', fingerprint: 'fp', result: undefined, expiresInMs: 0 })
      ok(view.expiresInMs > leaseMs && view.expiresInMs <= ttlMs, `TTL left ${view.expiresInMs} ms, expected (${leaseMs}, ${ttlMs}]`)
      deepStrictEqual(codesOf(await store.forget(['k'])), [1])
      strictEqual((await store.claim(['k'], none, 'B', leaseMs, ttlMs)).codes[0], ClaimCode.CLAIMED)
    },
  },
  {
    name: "purge removes every record of one namespace (done, in progress, unknown) and answers how many; other namespaces, a namespace it prefixes and keys without one are untouched",
    async run(make, { leaseMs, ttlMs }) {
      const { store } = make()
      const ours = ['a\0done', 'a\0running', 'a\0unknown']
      // 'x}n1:a:y' is a plain key that a Redis record of namespace 'a' would end like: a store matching records by pattern must not take it.
      const others = ['ab\0done', 'b\0done', 'a', 'plain', 'x}n1:a:y']
      await store.claim([...ours, ...others], [...ours, ...others].map(() => undefined), 'A', leaseMs, ttlMs)
      await store.markUnknown(['a\0unknown'], 'A', ttlMs)
      await store.commit(['a\0done', ...others], undefined, 'A', ttlMs)
      strictEqual(await store.purge('a'), 3)
      deepStrictEqual(await store.inspect(ours), [undefined, undefined, undefined])
      deepStrictEqual((await store.inspect(others)).map((view) => view?.state), others.map(() => 'done'))
      deepStrictEqual(codesOf((await store.claim(ours, ours.map(() => undefined), 'B', leaseMs, ttlMs)).codes), [ClaimCode.CLAIMED, ClaimCode.CLAIMED, ClaimCode.CLAIMED])
      strictEqual(await store.purge('nobody'), 0)
    },
  },
  {
    name: 'purge takes a namespace of many records in bounded steps (more than one page or statement)',
    async run(make) {
      const { store } = make()
      const keys = Array.from({ length: 2_500 }, (_, i) => `bulk\0key-${i}`)
      // Leases and windows that outlive the test: on a loaded machine writing and purging 2,500
      // records can take longer than the short leases the servers' stores are tested with.
      const long = 600_000
      await store.claim(keys, keys.map(() => undefined), 'A', long, long)
      await store.commit(keys, undefined, 'A', long)
      await store.claim(['kept\0k'], none, 'A', long, long)
      strictEqual(await store.purge('bulk'), keys.length)
      strictEqual(await store.purge('bulk'), 0)
      strictEqual((await store.inspect(['kept\0k']))[0]?.state, 'in-progress')
      strictEqual(await store.purge('kept'), 1)
    },
  },
]
