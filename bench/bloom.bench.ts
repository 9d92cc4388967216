/**
 * Bloom suite: dedup test-and-add, idem's WASM bloom core against the two bloom
 * filters an npm user would pick instead.
 *
 * Compared, at the same geometry (m bits and k probes from idem's
 * bloomGeometry(n, 1%), handed to each peer's (m, k) constructor):
 *   - idem WASM, batched: KeyHasher.hash() of a batch of 1024 JS strings (pack
 *     into wasm memory, xxHash64) then BloomFilter.testAndAddHashes(): the
 *     engine's path, one wasm call per step per batch.
 *   - idem WASM, per key: BloomFilter.testAndAdd(key), one key per wasm call.
 *   - bloomfilter 1.1.0: `if (f.test(key)) seen++; else f.add(key)`, the dedup
 *     operation its user writes (FNV-1a over UTF-16 units, pure JS). Baseline.
 *   - bloom-filters 3.0.4: has() then add(). It runs ~40k ops/s (XXH64 in
 *     emulated 64-bit JS), so its passes use fewer keys; rates are per key.
 *
 * Workload: one pass takes an empty filter to its design load, n fresh keys
 * (n = 1M, or 100k with --quick) of ~45 UTF-8 bytes, so the rate is the mean
 * over the filter's working life, cache misses included (a generation is
 * ~1.2 MB at 1M keys and 1%). Every pass gets keys no earlier pass touched,
 * decoded from bytes (fresh-keys.ts): reused or concatenated strings carry a
 * cached hash or a flattened rope and made every contender look 1.6–2.4×
 * faster than on real traffic. Every contender reads the same key texts. Three
 * warmup passes each are thrown away first (the first long wasm call runs
 * 2.5–3× slower until V8 tiers it up), then the contenders run in interleaved
 * rounds (passes.ts), because a long run drifts: bloomfilter's pass time, for
 * one, is bimodal here (~0.35 s and ~0.65 s per 1M keys), and --trace-deopt
 * shows its locations() bailing out on a minus zero once `a % m` meets a
 * negative multiple of m (about one key in a few million), then recompiled.
 * The ASCII keys take KeyHasher's one-join latin1 fast path; the non-ASCII
 * variant (Cyrillic and an emoji: two-byte strings, surrogate pairs) takes
 * its per-key UTF-8 path.
 *
 * The public entry, idem/bloom (KeyBloomFilter), is measured on the traffic
 * its users have rather than on one key shape: keys parsed out of JSON bodies,
 * of mixed shapes and lengths, 30% of them repeats spread through the stream
 * (json-traffic.ts), once ASCII only and once with 2% CJK keys. Its batch and
 * per-key calls run beside the engine's internal path and bloomfilter, in the
 * same interleaved rounds. With CJK keys nearly every batch holds one, which
 * sends the whole batch down the per-key UTF-8 path: the two tables show what
 * that costs.
 *
 * Also checked, outside the timed passes: no false negatives (every filled key
 * asked again, as a new string, through both idem paths: a batched/per-key
 * hashing mismatch would show here), the false-positive rate at design load
 * on never-seen probes against the theory (1 - e^(-kn/m))^k, and memory: idem's
 * bytes per generation against m/8 for the unrounded m = -n ln p / ln²2.
 */
import bloomFilters from 'bloom-filters'
import { BloomFilter as JsBloomFilter } from 'bloomfilter'
import { BloomFilter, bloomGeometry } from '../src/bloom/bloom-filter.js'
import { KeyBloomFilter } from '../src/bloom/index.js'
import { KeyHasher } from '../src/bloom/key-hasher.js'
import { KeySpace, type KeyAlphabet } from './fresh-keys.js'
import { JsonTraffic } from './json-traffic.js'
import { measureRounds, type PassCase, type PassRate } from './passes.js'
import { formatPercent, gcNote, progress, settleHeap, shortRate, withRatios, type BenchTable, type Check, type Column, type Row, type SuiteOptions, type SuiteResult, type Target } from './report.js'

const SUITE = 'bloom'
const FALSE_POSITIVE_RATE = 0.01
/** The engine's default maxBatch: what one router call hashes. */
const BATCH_KEYS = 1024
const BASELINE = 'bloomfilter 1.1.0'
const SLOW_PEER = 'bloom-filters 3.0.4'
const BATCHED = 'idem wasm, batched 1024'
const PUBLIC_BATCHED = `idem/bloom testAndAddBatch(${BATCH_KEYS})`
const PUBLIC_PER_KEY = 'idem/bloom testAndAdd, per key'
const ENGINE_PATH = `engine path: KeyHasher + testAndAddHashes(${BATCH_KEYS})`
const DUP_RATE = 0.3
const CJK_SHARE = 0.02
const USER_TRAFFIC: readonly UserTraffic[] = [
  { name: 'ASCII only', cjkShare: 0 },
  { name: `${CJK_SHARE * 100}% CJK`, cjkShare: CJK_SHARE },
]
const TARGET_SPEEDUP = 4
const MEMORY_TOLERANCE = 0.05

interface Sizes {
  designLoad: number
  /** Keys per pass for bloom-filters, ~40k keys/s. */
  slowPeerKeys: number
  /** Never-seen keys probed for the false-positive rate. */
  probes: number
  /** bloom-filters' accuracy runs on a filter sized for this many keys (same bits per key and k). */
  slowPeerLoad: number
  warmupPasses: number
  rounds: number
}

function sizesFor(quick: boolean): Sizes {
  return quick
    ? { designLoad: 100_000, slowPeerKeys: 5_000, probes: 20_000, slowPeerLoad: 5_000, warmupPasses: 2, rounds: 3 }
    : { designLoad: 1_000_000, slowPeerKeys: 20_000, probes: 100_000, slowPeerLoad: 50_000, warmupPasses: 3, rounds: 5 }
}

// bloom-filters is CommonJS: its classes hang off the default export.
const SlowPeerFilter = bloomFilters.BloomFilter
type SlowPeerFilter = InstanceType<typeof SlowPeerFilter>

export async function runBloomSuite(options: SuiteOptions): Promise<SuiteResult> {
  const sizes = sizesFor(options.quick)
  const { bits, k } = bloomGeometry(sizes.designLoad, FALSE_POSITIVE_RATE)
  progress(SUITE, `geometry for ${sizes.designLoad.toLocaleString('en-US')} keys at 1%: m = ${bits.toLocaleString('en-US')} bits, k = ${k}`)
  const tables: BenchTable[] = []
  const checks: Check[] = []
  const targets: Target[] = []

  for (const alphabet of ['ascii', 'non-ascii'] as const) {
    const rates = await measureThroughput(alphabet, sizes, bits, k)
    const space = new KeySpace(alphabet)
    tables.push(
      withRatios({
        title: `bloom dedup test-and-add, ${alphabet} keys (${space.keyBytes} UTF-8 bytes), m = ${bits.toLocaleString('en-US')} bits, k = ${k}: keys/s`,
        baseline: BASELINE,
        ratioOf: 'keysPerSecond',
        columns: RATE_COLUMNS,
        rows: rates.map((rate) => rateRow(rate, rate.name === SLOW_PEER ? sizes.slowPeerKeys : sizes.designLoad)),
        notes: [
          `one pass: an empty filter filled to design load with fresh keys (the same texts for every contender); ${sizes.warmupPasses} warmup passes each, then ${sizes.rounds} interleaved rounds`,
          'keys/s: median over rounds of keys per pass / pass time; bloom-filters passes use fewer keys (it runs ~40k keys/s), its rate is still per key',
        ],
      }),
    )
    const batched = rates.find((r) => r.name === BATCHED)!.perSecond
    const peer = rates.find((r) => r.name === BASELINE)!.perSecond
    targets.push({
      name: `idem WASM batched vs bloomfilter test-then-add (${alphabet} keys)`,
      goal: `>= ${TARGET_SPEEDUP}x`,
      measured: `${(batched / peer).toFixed(2)}x (${Math.round(batched).toLocaleString('en-US')} vs ${Math.round(peer).toLocaleString('en-US')} keys/s)`,
      met: batched / peer >= TARGET_SPEEDUP,
    })
  }

  const publicBatchedRates: number[] = []
  for (const traffic of USER_TRAFFIC) {
    const measured = await measureUserTraffic(traffic, sizes)
    tables.push(measured.table)
    checks.push(...measured.checks)
    publicBatchedRates.push(measured.publicBatched)
  }
  const [asciiOnly, withCjk] = publicBatchedRates
  tables[tables.length - 1].notes!.push(
    `one non-ASCII key in a batch sends the whole batch down KeyHasher's per-key UTF-8 path, and at ${CJK_SHARE * 100}% CJK keys nearly every ` +
      `${BATCH_KEYS}-key batch holds one (all but (1 - ${CJK_SHARE})^${BATCH_KEYS} ≈ ${((1 - CJK_SHARE) ** BATCH_KEYS).toExponential(0)} of them): ` +
      `${PUBLIC_BATCHED} ran ${(asciiOnly / withCjk).toFixed(2)}× faster on the ASCII-only stream (${shortRate(asciiOnly)} vs ${shortRate(withCjk)} keys/s)`,
  )

  const accuracy = measureAccuracy(sizes, bits, k)
  tables.push(accuracy.table)
  checks.push(...accuracy.checks)

  const memory = measureMemory(sizes, bits, k)
  tables.push(memory.table)
  checks.push(memory.check)

  return { suite: SUITE, tables, checks, targets }
}

/** The four contenders over one alphabet, interleaved in rounds (passes.ts). */
async function measureThroughput(alphabet: KeyAlphabet, sizes: Sizes, bits: number, k: number): Promise<PassRate[]> {
  const n = sizes.designLoad
  // One key space per contender with the same seed: every contender reads the
  // same key texts, each through its own fresh string objects.
  const keysOf = () => new KeySpace(alphabet, 7)
  const cases: PassCase[] = []

  {
    const space = keysOf()
    const filter = idemFilter(n)
    assertGeometry('idem', filter.bits, filter.k, bits, k)
    const testAndAdd = engineTestAndAdd(filter)
    let batches: string[][] = []
    cases.push({
      name: BATCHED,
      unitsPerPass: n,
      beforePass: () => {
        filter.clear()
        batches = inBatches(space.fresh(n), BATCH_KEYS)
      },
      pass: () => testAndAdd(batches),
    })
  }
  {
    const space = keysOf()
    const filter = idemFilter(n)
    let keys: string[] = []
    cases.push({
      name: 'idem wasm, per key',
      unitsPerPass: n,
      beforePass: () => {
        filter.clear()
        keys = space.fresh(n)
      },
      pass: () => {
        let seen = 0
        for (const key of keys) if (filter.testAndAdd(key)) seen++
        return seen
      },
    })
  }
  {
    const space = keysOf()
    let filter = new JsBloomFilter(bits, k)
    assertGeometry(BASELINE, filter.m, filter.k, bits, k)
    let keys: string[] = []
    cases.push({
      name: BASELINE,
      unitsPerPass: n,
      beforePass: () => {
        filter = new JsBloomFilter(bits, k)
        keys = space.fresh(n)
      },
      pass: () => {
        let seen = 0
        for (const key of keys) {
          if (filter.test(key)) seen++
          else filter.add(key)
        }
        return seen
      },
    })
  }
  {
    const space = keysOf()
    let filter: SlowPeerFilter = new SlowPeerFilter(bits, k)
    assertGeometry('bloom-filters', filter.size, filter._nbHashes, bits, k)
    let keys: string[] = []
    cases.push({
      name: SLOW_PEER,
      unitsPerPass: sizes.slowPeerKeys,
      beforePass: () => {
        filter = new SlowPeerFilter(bits, k)
        keys = space.fresh(sizes.slowPeerKeys)
      },
      pass: () => {
        let seen = 0
        for (const key of keys) {
          if (filter.has(key)) seen++
          else filter.add(key)
        }
        return seen
      },
    })
  }

  progress(
    SUITE,
    `${alphabet} keys: warmup ${sizes.warmupPasses} passes per contender, then ${sizes.rounds} rounds of one pass per contender (${n.toLocaleString('en-US')} fresh keys; bloom-filters ${sizes.slowPeerKeys.toLocaleString('en-US')})…`,
  )
  return measureRounds(cases, {
    warmupPasses: sizes.warmupPasses,
    rounds: sizes.rounds,
    passesPerRound: 1,
    onRound: (round, rates) =>
      progress(SUITE, `  ${alphabet} round ${round + 1}/${sizes.rounds}: ${rates.map((r) => `${r.name} ${shortRate(r.perSecond)}`).join(', ')} keys/s`),
  })
}

interface UserTraffic {
  name: string
  cjkShare: number
}

/**
 * The public entry on the traffic its users have: keys parsed from JSON
 * bodies, mixed shapes, 30% repeats spread through the stream, once ASCII
 * only and once with some CJK keys (json-traffic.ts). One pass: an empty
 * filter sized for the pass's distinct keys at 1%, then every message's key
 * through it; each contender gets its own copy of the same traffic.
 * Contenders: the public batch and per-key calls, the engine's internal path
 * (what the public batch call adds on top of it: checking, a result array per
 * batch), and bloomfilter's test-then-add at the same m and k.
 */
async function measureUserTraffic(traffic: UserTraffic, sizes: Sizes): Promise<{ table: BenchTable; checks: Check[]; publicBatched: number }> {
  const messages = sizes.designLoad
  const expectedItems = Math.round(messages * (1 - DUP_RATE))
  const { bits, k } = bloomGeometry(expectedItems, FALSE_POSITIVE_RATE)
  const cases: PassCase[] = []
  /** Keys and repeats each contender was given, warmup passes included (its checksum counts those too). */
  const given = new Map<string, { keys: number; repeats: number }>()
  const contender = (name: string, beforePass: () => void, pass: (keys: string[], batches: string[][]) => number): void => {
    const source = new JsonTraffic({ cjkShare: traffic.cjkShare, dupRate: DUP_RATE, seed: 23 })
    const total = { keys: 0, repeats: 0 }
    given.set(name, total)
    let keys: string[] = []
    let batches: string[][] = []
    cases.push({
      name,
      unitsPerPass: messages,
      beforePass: () => {
        beforePass()
        const next = source.next(messages)
        keys = next.keys
        batches = inBatches(keys, BATCH_KEYS)
        total.keys += messages
        total.repeats += next.repeats
      },
      pass: () => pass(keys, batches),
    })
  }

  const publicOptions = { expectedItems, falsePositiveRate: FALSE_POSITIVE_RATE, maxBatchKeys: BATCH_KEYS }
  const batchedFilter = new KeyBloomFilter(publicOptions)
  assertGeometry(PUBLIC_BATCHED, batchedFilter.stats().bits, batchedFilter.stats().k, bits, k)
  contender(
    PUBLIC_BATCHED,
    () => batchedFilter.clear(),
    (_, batches) => {
      let seen = 0
      for (const batch of batches) {
        const maybeSeen = batchedFilter.testAndAddBatch(batch)
        for (let i = 0; i < maybeSeen.length; i++) seen += maybeSeen[i]
      }
      return seen
    },
  )
  const perKeyFilter = new KeyBloomFilter(publicOptions)
  contender(
    PUBLIC_PER_KEY,
    () => perKeyFilter.clear(),
    (keys) => {
      let seen = 0
      for (const key of keys) if (perKeyFilter.testAndAdd(key)) seen++
      return seen
    },
  )
  const engineFilter = idemFilter(expectedItems)
  const engineBatches = engineTestAndAdd(engineFilter)
  contender(
    ENGINE_PATH,
    () => engineFilter.clear(),
    (_, batches) => engineBatches(batches),
  )
  let peer = new JsBloomFilter(bits, k)
  assertGeometry(BASELINE, peer.m, peer.k, bits, k)
  contender(
    BASELINE,
    () => (peer = new JsBloomFilter(bits, k)),
    (keys) => {
      let seen = 0
      for (const key of keys) {
        if (peer.test(key)) seen++
        else peer.add(key)
      }
      return seen
    },
  )

  progress(SUITE, `JSON traffic, ${traffic.name}: ${messages.toLocaleString('en-US')} messages per pass, ${DUP_RATE * 100}% repeats, filter for ${expectedItems.toLocaleString('en-US')} keys…`)
  const rates = await measureRounds(cases, {
    warmupPasses: sizes.warmupPasses,
    rounds: sizes.rounds,
    passesPerRound: 1,
    onRound: (round, roundRates) =>
      progress(SUITE, `  ${traffic.name} round ${round + 1}/${sizes.rounds}: ${roundRates.map((r) => `${r.name} ${shortRate(r.perSecond)}`).join(', ')} keys/s`),
  })

  // Every repeat is a key the filter holds, so maybe seen = repeats + false positives among first deliveries.
  const falsePositives = (rate: PassRate) => rate.checksum - given.get(rate.name)!.repeats
  const firstDeliveries = (rate: PassRate) => given.get(rate.name)!.keys - given.get(rate.name)!.repeats
  const idemRates = rates.filter((rate) => rate.name !== BASELINE)
  const checks: Check[] = [
    {
      name: `idem/bloom, JSON traffic ${traffic.name}: no repeat missed`,
      ok: rates.every((rate) => falsePositives(rate) >= 0),
      detail: rates.map((rate) => `${rate.name}: ${rate.checksum.toLocaleString('en-US')} maybe seen for ${given.get(rate.name)!.repeats.toLocaleString('en-US')} repeats`).join('; '),
    },
    {
      name: `idem/bloom, JSON traffic ${traffic.name}: batch, per-key and engine path answer alike`,
      ok: idemRates.every((rate) => rate.checksum === idemRates[0].checksum),
      detail: idemRates.map((rate) => `${rate.name}: ${rate.checksum.toLocaleString('en-US')}`).join(', '),
    },
  ]
  const table = withRatios({
    title: `idem/bloom on JSON-parsed keys, ${traffic.name} (mixed shapes 10–56 bytes, ${DUP_RATE * 100}% repeats), m = ${bits.toLocaleString('en-US')} bits, k = ${k}: keys/s`,
    baseline: BASELINE,
    ratioOf: 'keysPerSecond',
    columns: [...RATE_COLUMNS, { key: 'firstFalsePositives', title: 'FP among first deliveries', format: formatPercent(3) }],
    rows: rates.map((rate) => rateRow(rate, messages, { firstFalsePositives: falsePositives(rate) / firstDeliveries(rate) })),
    notes: [
      `one pass: ${messages.toLocaleString('en-US')} messages decoded by JSON.parse, through an empty filter sized for the pass's ~${expectedItems.toLocaleString('en-US')} distinct keys; ${sizes.warmupPasses} warmup passes each, then ${sizes.rounds} interleaved rounds (median shown)`,
      `FP among first deliveries: maybe-seen answers beyond the repeats, over the filter's filling life (so below the 1% it reaches at design load)`,
    ],
  })
  return { table, checks, publicBatched: rates.find((rate) => rate.name === PUBLIC_BATCHED)!.perSecond }
}

interface Accuracy {
  label: string
  filled: number
  probes: number
  falsePositives: number
  falseNegatives: number
}

/**
 * Fill to design load, ask every filled key again (as new strings), then probe
 * never-seen keys. idem is filled through the batched path and asked through
 * both paths, so any mismatch between batched and per-key hashing is a false
 * negative here. bloom-filters is too slow to fill a million keys in a bench,
 * so it gets a filter sized for fewer keys at the same bits per key and k,
 * which is what its false-positive rate depends on.
 */
function measureAccuracy(sizes: Sizes, bits: number, k: number): { table: BenchTable; checks: Check[] } {
  const n = sizes.designLoad
  const results: Accuracy[] = []
  const checks: Check[] = []
  for (const alphabet of ['ascii', 'non-ascii'] as const) {
    const space = new KeySpace(alphabet, 11)
    progress(SUITE, `accuracy, ${alphabet}: fill ${n.toLocaleString('en-US')} keys, ask them again, probe ${sizes.probes.toLocaleString('en-US')} never-seen keys…`)
    {
      const filter = idemFilter(n)
      const testAndAdd = engineTestAndAdd(filter)
      const first = space.reserve(n)
      const filled = space.decode(n, (i) => first + i)
      testAndAdd(inBatches(filled, BATCH_KEYS))
      const again = space.decode(n, (i) => first + i)
      const batchedMisses = n - testAndAdd(inBatches(again, BATCH_KEYS))
      const copies = space.decode(n, (i) => first + i)
      let perKeyMisses = 0
      for (const key of copies) if (!filter.has(key)) perKeyMisses++
      let falsePositives = 0
      for (const key of space.fresh(sizes.probes)) if (filter.has(key)) falsePositives++
      results.push({ label: `idem wasm (${alphabet})`, filled: n, probes: sizes.probes, falsePositives, falseNegatives: batchedMisses + perKeyMisses })
      checks.push({
        name: `idem bloom: no false negatives, ${alphabet} keys`,
        ok: batchedMisses + perKeyMisses === 0,
        detail: `${n.toLocaleString('en-US')} filled keys asked again as new strings: ${batchedMisses} missed by the batched path, ${perKeyMisses} by per-key has()`,
      })
    }
    {
      const filter = new JsBloomFilter(bits, k)
      const first = space.reserve(n)
      for (const key of space.decode(n, (i) => first + i)) if (!filter.test(key)) filter.add(key)
      let misses = 0
      for (const key of space.decode(n, (i) => first + i)) if (!filter.test(key)) misses++
      let falsePositives = 0
      for (const key of space.fresh(sizes.probes)) if (filter.test(key)) falsePositives++
      results.push({ label: `${BASELINE} (${alphabet})`, filled: n, probes: sizes.probes, falsePositives, falseNegatives: misses })
    }
    {
      const load = sizes.slowPeerLoad
      const scaled = bloomGeometry(load, FALSE_POSITIVE_RATE)
      const filter = new SlowPeerFilter(scaled.bits, scaled.k)
      const first = space.reserve(load)
      for (const key of space.decode(load, (i) => first + i)) if (!filter.has(key)) filter.add(key)
      let misses = 0
      for (const key of space.decode(load, (i) => first + i)) if (!filter.has(key)) misses++
      let falsePositives = 0
      for (const key of space.fresh(load)) if (filter.has(key)) falsePositives++
      results.push({ label: `bloom-filters 3.0.4 (${alphabet})*`, filled: load, probes: load, falsePositives, falseNegatives: misses })
    }
    settleHeap()
  }
  const theory = (1 - Math.exp((-k * n) / bits)) ** k
  const rows: Row[] = [
    { label: 'theory (1 - e^(-kn/m))^k', values: { filled: n, probes: '', falsePositives: '', rate: theory, falseNegatives: 0 } },
    ...results.map((r) => ({
      label: r.label,
      values: { filled: r.filled, probes: r.probes, falsePositives: r.falsePositives, rate: r.falsePositives / r.probes, falseNegatives: r.falseNegatives },
    })),
  ]
  const table = withRatios({
    title: `bloom accuracy at design load (target rate 1%): false-positive rate of never-seen keys`,
    baseline: 'theory (1 - e^(-kn/m))^k',
    ratioOf: 'rate',
    columns: [
      { key: 'filled', title: 'keys filled' },
      { key: 'probes', title: 'never-seen probes' },
      { key: 'falsePositives', title: 'false positives' },
      { key: 'rate', title: 'FP rate', format: formatPercent(3) },
      { key: 'falseNegatives', title: 'false negatives' },
    ],
    rows,
    notes: [
      'false negatives: every filled key asked again as a new string (idem: through the batched path and per-key has(), both counted)',
      `* bloom-filters: a filter sized for ${sizes.slowPeerLoad.toLocaleString('en-US')} keys at 1% (same bits per key and k), filled to that load: a 1M fill takes it ~30 s`,
    ],
  })
  return { table, checks }
}

/**
 * Bytes per generation: idem's as the wasm reports them (snapshot() copies each
 * generation's bytes out of wasm memory), the peers' from their bit arrays,
 * all against m/8 for the unrounded m of the formula. The process column is the
 * `external` memory a new filter adds after gc (wasm memory and ArrayBuffers
 * count there): for idem it includes the IO regions of one batch.
 */
function measureMemory(sizes: Sizes, bits: number, k: number): { table: BenchTable; check: Check } {
  const n = sizes.designLoad
  const theoryBits = (-n * Math.log(FALSE_POSITIVE_RATE)) / Math.LN2 ** 2
  const theoryBytes = theoryBits / 8
  progress(SUITE, 'memory: bytes per generation against m/8…')

  idemFilter(n) // compiles the wasm module before measuring, so its code is not counted
  const idem = externalBytesOf(() => idemFilter(n))
  const snapshotHeader = 32
  const idemPerGeneration = (idem.value.snapshot().length - snapshotHeader) / 2
  const jsPeer = externalBytesOf(() => new JsBloomFilter(bits, k))
  const slowPeer = externalBytesOf(() => new SlowPeerFilter(bits, k))
  const slowPeerBytes = (slowPeer.value._filter as unknown as { array: Uint8Array }).array.byteLength

  const rows: Row[] = [
    { label: 'theory m/8 (unrounded m)', values: { bits: theoryBits, perGeneration: theoryBytes, generations: 1, total: theoryBytes, process: '' } },
    { label: 'idem wasm', values: { bits: idem.value.bits, perGeneration: idemPerGeneration, generations: 2, total: 2 * idemPerGeneration, process: idem.externalBytes } },
    { label: BASELINE, values: { bits: jsPeer.value.m, perGeneration: jsPeer.value.buckets.byteLength, generations: 1, total: jsPeer.value.buckets.byteLength, process: jsPeer.externalBytes } },
    { label: 'bloom-filters 3.0.4', values: { bits: slowPeer.value.size, perGeneration: slowPeerBytes, generations: 1, total: slowPeerBytes, process: slowPeer.externalBytes } },
  ]
  const deviation = idemPerGeneration / theoryBytes - 1
  const check: Check = {
    name: 'idem bloom: bytes per generation within 5% of m/8',
    ok: Math.abs(deviation) <= MEMORY_TOLERANCE,
    detail: `${idemPerGeneration.toLocaleString('en-US')} bytes vs ${Math.round(theoryBytes).toLocaleString('en-US')} (${(deviation * 100).toFixed(3)}%)`,
  }
  const table = withRatios({
    title: `bloom memory for ${n.toLocaleString('en-US')} keys at 1%: bytes per generation`,
    baseline: 'theory m/8 (unrounded m)',
    ratioOf: 'perGeneration',
    columns: [
      { key: 'bits', title: 'bits m' },
      { key: 'perGeneration', title: 'bytes/generation' },
      { key: 'generations', title: 'generations' },
      { key: 'total', title: 'bytes total' },
      { key: 'process', title: 'process bytes (external, measured)' },
    ],
    rows,
    notes: [
      'idem keeps two generations (current + previous) so it can forget keys older than the dedup window; the peers cannot forget',
      "idem's process bytes include its wasm IO regions for one batch, rounded to 64 KiB wasm pages",
      `process bytes ${gcNote()}`,
    ],
  })
  return { table, check }
}

function externalBytesOf<T>(create: () => T): { value: T; externalBytes: number } {
  settleHeap()
  const before = process.memoryUsage().external
  const value = create()
  settleHeap()
  return { value, externalBytes: process.memoryUsage().external - before }
}

function idemFilter(n: number): BloomFilter {
  return new BloomFilter({ expectedItems: n, falsePositiveRate: FALSE_POSITIVE_RATE, maxBatchKeys: BATCH_KEYS })
}

/**
 * The engine's path over batches of at most BATCH_KEYS keys: KeyHasher packs
 * and hashes a batch in one wasm call, then the filter tests and adds the
 * hashes in another. The returned function gives the maybe-seen count.
 */
function engineTestAndAdd(filter: BloomFilter): (batches: readonly string[][]) => number {
  const hasher = new KeyHasher({ maxBatchKeys: BATCH_KEYS })
  const hashes = new Uint32Array(2 * BATCH_KEYS)
  const shards = new Uint32Array(BATCH_KEYS)
  const status = new Uint8Array(BATCH_KEYS)
  const maybeSeen = new Uint8Array(BATCH_KEYS)
  return (batches) => {
    let seen = 0
    for (const batch of batches) {
      // shardCount 0: no jump hash, the bloom work alone (the engine's router adds it).
      if (hasher.hash(batch, 0, hashes, shards, status) !== 0) throw new Error('KeyHasher rejected a bench key')
      seen += filter.testAndAddHashes(hashes, batch.length, maybeSeen)
    }
    return seen
  }
}

const RATE_COLUMNS: Column[] = [
  { key: 'keysPerPass', title: 'keys/pass' },
  { key: 'passes', title: 'passes' },
  { key: 'medianPassMs', title: 'median pass ms' },
  { key: 'slowest', title: 'slowest round' },
  { key: 'fastest', title: 'fastest round' },
  { key: 'keysPerSecond', title: 'keys/s (median)' },
]

/** One contender's row under RATE_COLUMNS (and any extra columns the table adds). */
function rateRow(rate: PassRate, keysPerPass: number, extra: Record<string, number | string> = {}): Row {
  return {
    label: rate.name,
    values: {
      keysPerPass,
      passes: rate.passes,
      medianPassMs: rate.medianPassMs,
      slowest: rate.slowestRound,
      fastest: rate.fastestRound,
      keysPerSecond: rate.perSecond,
      ...extra,
    },
    raw: { roundRates: rate.rounds, checksum: rate.checksum },
  }
}

function inBatches<T>(items: T[], size: number): T[][] {
  const batches: T[][] = []
  for (let i = 0; i < items.length; i += size) batches.push(items.slice(i, i + size))
  return batches
}

/** The comparison is only fair at equal m and k; refuse to report otherwise. */
function assertGeometry(who: string, m: number, k: number, expectedM: number, expectedK: number): void {
  if (m !== expectedM || k !== expectedK) throw new Error(`${who}: geometry m = ${m}, k = ${k}, expected m = ${expectedM}, k = ${expectedK}`)
}
