/**
 * LRU suite: lru-cache 11, the LRU of settled keys inside every shard actor
 * (DESIGN.md §6), against a plain Map, the floor any JS key→record table pays.
 *
 * Compared, at max = 1M keys (100k with --quick):
 *   - set: a Map filled from empty; lru-cache filled from empty to max; and
 *     lru-cache at capacity, where each set evicts the oldest key (the steady
 *     state of a long-running actor).
 *   - get: hits on held keys in random order, and misses on never-seen keys.
 * Values are shaped like idem's settled record, `{ fingerprint: undefined,
 * result: undefined, expiresAt: number }`, built inside the timed pass as the
 * actor builds one per commit.
 *
 * Workload: keys are fresh ~45-byte strings decoded from bytes, and a lookup
 * of a held key uses a NEW string with the same text, as a redelivered message
 * brings (fresh-keys.ts): V8 caches a string's hash after its first Map use,
 * so reused key strings skip the hashing real traffic pays and made this look
 * 1.6–2.4× faster. One timed pass is a whole million operations; the
 * contenders of each table run in interleaved rounds (passes.ts).
 *
 * Memory: heap and ArrayBuffer bytes per settled key held, key string
 * included, after filling to max; lru-cache preallocates its index arrays
 * (typed arrays, off the V8 heap), so both are counted.
 */
import { LRUCache } from 'lru-cache'
import { KeySpace, seededRandom } from './fresh-keys.js'
import { measureRounds, type PassCase, type PassRate } from './passes.js'
import { gcNote, progress, settleHeap, shortRate, withRatios, type BenchTable, type Row, type SuiteOptions, type SuiteResult } from './report.js'

const SUITE = 'lru'
const TTL_MS = 86_400_000
const MAP_SET = 'Map.set, empty → max'
const MAP_GET = 'Map.get, hits'

/** What the shard actor keeps per settled key (src/actor/shard-actor.ts, Settled). */
interface SettledRecord {
  fingerprint: string | undefined
  result: unknown
  expiresAt: number
}

export async function runLruSuite(options: SuiteOptions): Promise<SuiteResult> {
  const n = options.quick ? 100_000 : 1_000_000
  const plan = { warmupPasses: options.quick ? 1 : 2, rounds: options.quick ? 3 : 5, passesPerRound: 1 }
  const now = Date.now()
  const record = (i: number): SettledRecord => ({ fingerprint: undefined, result: undefined, expiresAt: now + TTL_MS + i })
  const measure = async (group: string, cases: PassCase[]): Promise<PassRate[]> => {
    progress(SUITE, `${group}: warmup ${plan.warmupPasses} pass(es) per contender, then ${plan.rounds} rounds of one pass per contender (${n.toLocaleString('en-US')} ops)…`)
    return measureRounds(cases, {
      ...plan,
      onRound: (round, rates) => progress(SUITE, `  ${group} round ${round + 1}/${plan.rounds}: ${rates.map((r) => `${r.name} ${shortRate(r.perSecond)}`).join(', ')} ops/s`),
    })
  }

  // set: each contender has its own key space with the same seed (same texts, its own strings).
  const setCases: PassCase[] = []
  {
    const space = new KeySpace('ascii', 23)
    let keys: string[] = []
    let map = new Map<string, SettledRecord>()
    setCases.push({
      name: MAP_SET,
      unitsPerPass: n,
      beforePass: () => {
        map = new Map()
        keys = space.fresh(n)
      },
      pass: () => {
        for (let i = 0; i < keys.length; i++) map.set(keys[i], record(i))
        return map.size
      },
    })
  }
  {
    const space = new KeySpace('ascii', 23)
    let keys: string[] = []
    let cache = new LRUCache<string, SettledRecord>({ max: n })
    setCases.push({
      name: 'lru-cache set, empty → max',
      unitsPerPass: n,
      beforePass: () => {
        cache = new LRUCache({ max: n })
        keys = space.fresh(n)
      },
      pass: () => {
        for (let i = 0; i < keys.length; i++) cache.set(keys[i], record(i))
        return cache.size
      },
    })
  }
  {
    // Full before the first pass, and every pass's fresh keys evict the previous pass's.
    const space = new KeySpace('ascii', 29)
    let keys: string[] = []
    const cache = new LRUCache<string, SettledRecord>({ max: n })
    for (const key of space.fresh(n)) cache.set(key, record(0))
    setCases.push({
      name: 'lru-cache set at max (evicts)',
      unitsPerPass: n,
      beforePass: () => {
        keys = space.fresh(n)
      },
      pass: () => {
        for (let i = 0; i < keys.length; i++) cache.set(keys[i], record(i))
        return cache.size
      },
    })
  }
  const setRates = await measure('set', setCases)
  setCases.length = 0

  // get: both tables hold the same n keys; every pass looks them up through new strings, in a random order.
  const space = new KeySpace('ascii', 31)
  const heldFirst = space.reserve(n)
  const order = shuffled(n, 99)
  const cache = new LRUCache<string, SettledRecord>({ max: n })
  const map = new Map<string, SettledRecord>()
  for (const key of space.decode(n, (i) => heldFirst + i)) {
    cache.set(key, record(0))
    map.set(key, record(0))
  }
  const lookupCase = (name: string, table: { get(key: string): SettledRecord | undefined }, lookups: () => string[]): PassCase => {
    let keys: string[] = []
    return {
      name,
      unitsPerPass: n,
      beforePass: () => {
        keys = lookups()
      },
      pass: () => {
        let hits = 0
        for (let i = 0; i < keys.length; i++) if (table.get(keys[i]) !== undefined) hits++
        return hits
      },
    }
  }
  const heldCopies = () => space.decode(n, (i) => heldFirst + order[i])
  const getRates = await measure('get', [
    lookupCase(MAP_GET, map, heldCopies),
    lookupCase('lru-cache get, hits', cache, heldCopies),
    lookupCase('lru-cache get, misses', cache, () => space.fresh(n)),
  ])
  map.clear()
  cache.clear()

  const memory = measureMemory(n, new KeySpace('ascii', 37), now)
  const opsTable = (title: string, baseline: string, rates: PassRate[], notes: string[]): BenchTable =>
    withRatios({
      title,
      baseline,
      ratioOf: 'opsPerSecond',
      columns: [
        { key: 'passes', title: 'passes' },
        { key: 'slowest', title: 'slowest round' },
        { key: 'fastest', title: 'fastest round' },
        { key: 'opsPerSecond', title: 'ops/s (median)' },
      ],
      rows: rates.map((r) => ({
        label: r.name,
        values: { passes: r.passes, slowest: r.slowestRound, fastest: r.fastestRound, opsPerSecond: r.perSecond },
        raw: { roundRates: r.rounds },
      })),
      notes: [`${n.toLocaleString('en-US')} ops per pass; warmup ${plan.warmupPasses} pass(es) each, then ${plan.rounds} interleaved rounds; ops/s is the median over rounds`, ...notes],
    })
  const tables: BenchTable[] = [
    opsTable(`lru-cache 11 set, max ${n.toLocaleString('en-US')}, fresh ~45-byte keys: ops/s`, MAP_SET, setRates, [
      'each op also builds the settled record object, as the actor does per commit',
    ]),
    opsTable(`lru-cache 11 get, ${n.toLocaleString('en-US')} keys held: ops/s`, MAP_GET, getRates, [
      'hits look up held keys in random order through new strings with the same text (a redelivery)',
    ]),
    memory,
  ]
  return { suite: SUITE, tables, checks: [], targets: [] }
}

/**
 * Bytes per key held: (heapUsed + arrayBuffers) after filling, minus before,
 * over n. Keys are made in chunks so no array of all keys outlives the fill
 * except where the row is "the keys alone".
 */
function measureMemory(n: number, space: KeySpace, now: number): BenchTable {
  progress(SUITE, `memory: bytes per settled key held, ${n.toLocaleString('en-US')} keys…`)
  const chunk = 65_536
  const fill = (put: (key: string, record: SettledRecord) => void) => {
    for (let done = 0; done < n; done += chunk) {
      const keys = space.fresh(Math.min(chunk, n - done))
      for (let i = 0; i < keys.length; i++) put(keys[i], { fingerprint: undefined, result: undefined, expiresAt: now + TTL_MS + done + i })
    }
  }
  const keysAlone = bytesHeldBy(() => space.fresh(n))
  const inMap = bytesHeldBy(() => {
    const map = new Map<string, SettledRecord>()
    fill((key, record) => map.set(key, record))
    return map
  })
  const inCache = bytesHeldBy(() => {
    const cache = new LRUCache<string, SettledRecord>({ max: n })
    fill((key, record) => cache.set(key, record))
    return cache
  })
  const keyBytes = keysAlone.bytes / n
  const row = (label: string, bytes: number): Row => ({
    label,
    values: { perKey: bytes / n, withoutKey: bytes / n - keyBytes, total: bytes / 2 ** 20 },
  })
  return withRatios({
    title: `memory per settled key held, ${n.toLocaleString('en-US')} keys: heap + ArrayBuffer bytes`,
    baseline: 'Map<string, record>',
    ratioOf: 'perKey',
    columns: [
      { key: 'perKey', title: 'bytes/key' },
      { key: 'withoutKey', title: 'bytes/key beyond the key string' },
      { key: 'total', title: 'MiB total' },
    ],
    rows: [row('key strings alone (string[])', keysAlone.bytes), row('Map<string, record>', inMap.bytes), row(`lru-cache 11, max ${n.toLocaleString('en-US')}`, inCache.bytes)],
    notes: [
      'record = { fingerprint: undefined, result: undefined, expiresAt: number }, the shard actor\'s settled entry',
      '"beyond the key string" subtracts the string[] row, which also counts its 8-byte array slot per key',
      gcNote(),
    ],
  })
}

function bytesHeldBy(build: () => unknown): { bytes: number } {
  settleHeap()
  const before = process.memoryUsage()
  let held: unknown = build()
  settleHeap()
  const after = process.memoryUsage()
  const bytes = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers)
  // Keep `held` reachable until after the measurement, then let it go.
  if (held === undefined) throw new Error('nothing built')
  held = undefined
  return { bytes }
}

/** A seeded random permutation of 0..n-1 (Fisher-Yates). */
function shuffled(n: number, seed: number): Uint32Array {
  const random = seededRandom(seed)
  const order = new Uint32Array(n)
  for (let i = 0; i < n; i++) order[i] = i
  for (let i = n - 1; i > 0; i--) {
    const j = random() % (i + 1)
    const t = order[i]
    order[i] = order[j]
    order[j] = t
  }
  return order
}
