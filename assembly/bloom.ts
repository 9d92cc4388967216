// The bloom core: xxHash64 over keys packed by the JS side, jump consistent
// hashing to pick a shard, and a two-generation bloom filter.
//
// One instance holds one filter and the IO regions its JS owner writes keys
// into and reads answers from. Memory grows only in init(), so the JS views
// over it stay valid between calls. No i64 crosses the boundary: a 64-bit hash
// travels as two u32, lo then hi.
//
// Memory layout after init (every region 16-byte aligned, in this order):
//   generation A, generation B   u64 words each; `current` and `previous` point at them
//   hashes                       u32 × 2 × maxKeys   (lo, hi)
//   offsets                      u32 × (maxKeys + 1) (key i is keyBytes[offsets[i] .. offsets[i+1]))
//   shards                       u32 × maxKeys
//   results                      u8  × maxKeys       (1 maybe seen, 0 never seen)
//   keyBytes                     u8  × maxKeyBytes

const PRIME1: u64 = 0x9e3779b185ebca87
const PRIME2: u64 = 0xc2b2ae3d27d4eb4f
const PRIME3: u64 = 0x165667b19e3779f9
const PRIME4: u64 = 0x85ebca77c2b2ae63
const PRIME5: u64 = 0x27d4eb2f165667c5

let current: usize = 0
let previous: usize = 0
let generationSize: usize = 0
// Bits per generation as u64: the Lemire mapping multiplies a u32 by it, and
// m = 2^32 (the cap) does not fit a u32.
let bitCount: u64 = 0
let probeCount: u32 = 0

let hashesStart: usize = 0
let offsetsStart: usize = 0
let shardsStart: usize = 0
let resultsStart: usize = 0
let keyBytesStart: usize = 0

// @ts-ignore: decorator
@inline function align16(address: usize): usize {
  return (address + 15) & ~(<usize>15)
}

/**
 * Lays out two generations of `wordsPerGeneration` u64 words (m = 64 × words
 * bits each, at most 2^32 — the JS side enforces the cap, which keeps every
 * probe index a u32) and the IO regions for batches of up to `maxKeys` keys
 * totalling `maxKeyBytes`. Zero words make a hasher-only instance. Traps if
 * the memory cannot grow.
 */
export function init(wordsPerGeneration: u32, k: u32, maxKeys: u32, maxKeyBytes: u32): void {
  generationSize = <usize>wordsPerGeneration << 3
  bitCount = <u64>wordsPerGeneration << 6
  probeCount = k

  current = align16(__heap_base)
  previous = current + generationSize
  hashesStart = align16(previous + generationSize)
  offsetsStart = align16(hashesStart + (<usize>maxKeys << 3))
  shardsStart = align16(offsetsStart + ((<usize>maxKeys + 1) << 2))
  resultsStart = align16(shardsStart + (<usize>maxKeys << 2))
  keyBytesStart = align16(resultsStart + <usize>maxKeys)
  const end = keyBytesStart + <usize>maxKeyBytes

  const pagesNeeded = <i32>((end + 0xffff) >>> 16)
  const pagesHeld = memory.size()
  if (pagesNeeded > pagesHeld && memory.grow(pagesNeeded - pagesHeld) < 0) unreachable()
  clear()
}

export function keyBytesPtr(): usize { return keyBytesStart }
export function offsetsPtr(): usize { return offsetsStart }
export function hashesPtr(): usize { return hashesStart }
export function shardsPtr(): usize { return shardsStart }
export function resultsPtr(): usize { return resultsStart }
/** 0 is the current generation, 1 the previous one. */
export function generationPtr(i: u32): usize { return i == 0 ? current : previous }
export function generationBytes(): usize { return generationSize }

// @ts-ignore: decorator
@inline function round(acc: u64, lane: u64): u64 {
  return rotl<u64>(acc + lane * PRIME2, 31) * PRIME1
}

// @ts-ignore: decorator
@inline function mergeRound(acc: u64, lane: u64): u64 {
  return (acc ^ round(0, lane)) * PRIME1 + PRIME4
}

/** xxHash64 with seed 0 (XXH64 from the xxHash specification). */
function xxh64(start: usize, length: usize): u64 {
  let p = start
  const end = start + length
  let h: u64
  if (length >= 32) {
    let v1: u64 = PRIME1 + PRIME2
    let v2: u64 = PRIME2
    let v3: u64 = 0
    let v4: u64 = 0 - PRIME1
    const limit = end - 32
    do {
      v1 = round(v1, load<u64>(p))
      v2 = round(v2, load<u64>(p, 8))
      v3 = round(v3, load<u64>(p, 16))
      v4 = round(v4, load<u64>(p, 24))
      p += 32
    } while (p <= limit)
    h = rotl<u64>(v1, 1) + rotl<u64>(v2, 7) + rotl<u64>(v3, 12) + rotl<u64>(v4, 18)
    h = mergeRound(h, v1)
    h = mergeRound(h, v2)
    h = mergeRound(h, v3)
    h = mergeRound(h, v4)
  } else {
    h = PRIME5
  }
  h += <u64>length
  while (p + 8 <= end) {
    h = rotl<u64>(h ^ round(0, load<u64>(p)), 27) * PRIME1 + PRIME4
    p += 8
  }
  if (p + 4 <= end) {
    h = rotl<u64>(h ^ (<u64>load<u32>(p) * PRIME1), 23) * PRIME2 + PRIME3
    p += 4
  }
  while (p < end) {
    h = rotl<u64>(h ^ (<u64>load<u8>(p) * PRIME5), 11) * PRIME1
    p++
  }
  h ^= h >> 33
  h *= PRIME2
  h ^= h >> 29
  h *= PRIME3
  h ^= h >> 32
  return h
}

/**
 * Jump consistent hash (Lamping & Veach, 2014): a bucket in [0, buckets) that
 * moves for only 1/(buckets+1) of keys when a bucket is added.
 */
function jumpHash(key: u64, buckets: u32): u32 {
  let bucket: i64 = -1
  let next: i64 = 0
  while (next < <i64>buckets) {
    bucket = next
    key = key * 2862933555777941757 + 1
    next = <i64>(<f64>(bucket + 1) * (<f64>(<i64>1 << 31) / <f64>((key >> 33) + 1)))
  }
  return <u32>bucket
}

const ASCII_BYTES: u64 = 0x8080808080808080

/**
 * Turns offsets[1..n] from UTF-16 unit ends into byte ends, for a batch the JS
 * side wrote as one UTF-8 string: JS knows each key's length in units for free
 * (string.length) but its UTF-8 length only by encoding it alone. Walks the
 * lead bytes: a 1-, 2- or 3-byte sequence is one unit, a 4-byte one a
 * surrogate pair (two). Returns the longest key in bytes, or -1 if the units
 * and the byteCount bytes disagree: a key boundary inside a 4-byte sequence is
 * a pair that only the join made whole (a lone surrogate ending one key, its
 * mate starting the next), and a short write runs out of bytes.
 */
export function utf8Offsets(n: u32, byteCount: u32): i32 {
  let p = keyBytesStart
  const end = keyBytesStart + <usize>byteCount
  let unit: u32 = 0
  let keyStart = p
  let longest: usize = 0
  for (let i: usize = 1; i <= <usize>n; i++) {
    const unitEnd = load<u32>(offsetsStart + (i << 2))
    while (unit < unitEnd) {
      // Most keys are mostly ASCII: eight bytes that are eight units at a time.
      if (unitEnd - unit >= 8 && p + 8 <= end && (load<u64>(p) & ASCII_BYTES) == 0) {
        p += 8
        unit += 8
        continue
      }
      if (p >= end) return -1
      const lead = <u32>load<u8>(p)
      if (lead < 0x80) {
        p += 1
        unit += 1
      } else if (lead < 0xe0) {
        p += 2
        unit += 1
      } else if (lead < 0xf0) {
        p += 3
        unit += 1
      } else {
        p += 4
        unit += 2
      }
    }
    if (unit != unitEnd || p > end) return -1
    store<u32>(offsetsStart + (i << 2), <u32>(p - keyBytesStart))
    if (p - keyStart > longest) longest = p - keyStart
    keyStart = p
  }
  return p == end ? <i32>longest : -1
}

/** Hashes keys [0, n) into hashes[2i], hashes[2i+1]; with shardCount > 0 also picks shards[i]. */
export function hashKeys(n: u32, shardCount: u32): void {
  for (let i: usize = 0; i < <usize>n; i++) {
    const start = <usize>load<u32>(offsetsStart + (i << 2))
    const end = <usize>load<u32>(offsetsStart + (i << 2), 4)
    const h = xxh64(keyBytesStart + start, end - start)
    store<u64>(hashesStart + (i << 3), h)
    if (shardCount > 0) store<u32>(shardsStart + (i << 2), jumpHash(h, shardCount))
  }
}

/**
 * The k probes of each of n hashes, by double hashing over 32-bit values:
 * probe i is x = lo + i·hi (mod 2^32), mapped to a bit by Lemire's fast range,
 * (x × m) >> 32, which needs no division and is uniform for any m ≤ 2^32. Two
 * hashes suffice for the usual false-positive rate (Kirsch & Mitzenmacher,
 * 2006). Two probes of a key share a bit only when a small multiple of hi falls
 * within one bit's width (2^32/m) of a multiple of 2^32: about k²/m per key,
 * negligible. Neither an odd hi nor the "enhanced" cubic term changes that
 * under fast range (both move x by less than a bit's width), so neither is
 * used. test/bloom-oracle.ts mirrors this formula.
 *
 * Branchless on purpose: reading a word, folding its bit into the answer and
 * storing it back with the bit set costs less than branching on "already set"
 * (a branch measured twice the probe cost). Testing and setting probe by probe
 * is still exact: a probe can only find a bit its own key set earlier once an
 * earlier probe has already found a clear bit.
 */
// @ts-ignore: decorator
@inline function probeBatch(n: u32, testBits: bool, setBits: bool): u32 {
  let maybeSeenCount: u32 = 0
  for (let i: usize = 0; i < <usize>n; i++) {
    let x = load<u32>(hashesStart + (i << 3))
    const step = load<u32>(hashesStart + (i << 3), 4)
    let inCurrent: u64 = 1
    let inPrevious: u64 = 1
    for (let probe: u32 = 0; probe < probeCount; probe++) {
      const bit = (<u64>x * bitCount) >> 32
      const wordOffset = <usize>(bit >> 6) << 3
      const shift = bit & 63
      const word = load<u64>(current + wordOffset)
      if (testBits) {
        inCurrent &= word >> shift
        inPrevious &= load<u64>(previous + wordOffset) >> shift
      }
      if (setBits) store<u64>(current + wordOffset, word | (<u64>1 << shift))
      x += step
    }
    if (testBits) {
      const maybeSeen = <u32>((inCurrent | inPrevious) & 1)
      store<u8>(resultsStart + i, <u8>maybeSeen)
      maybeSeenCount += maybeSeen
    }
  }
  return maybeSeenCount
}

/** For each of n hashes: results[i] = 1 if maybe seen (in either generation), then add it to the current one. Returns the maybe-seen count. */
export function testAndAdd(n: u32): u32 {
  return probeBatch(n, true, true)
}

/** testAndAdd without adding. */
export function test(n: u32): u32 {
  return probeBatch(n, true, false)
}

/** Adds n hashes to the current generation. */
export function add(n: u32): void {
  probeBatch(n, false, true)
}

/** The current generation becomes the previous one; the old previous one is cleared and becomes current. */
export function rotate(): void {
  const cleared = previous
  previous = current
  current = cleared
  memory.fill(current, 0, generationSize)
}

export function clear(): void {
  memory.fill(current, 0, generationSize)
  memory.fill(previous, 0, generationSize)
}

/** Set bits in generation i (0 current, 1 previous). An f64, because a full 2^32-bit generation overflows a u32. */
export function popcount(i: u32): f64 {
  const start = generationPtr(i)
  const end = start + generationSize
  let count: u64 = 0
  for (let p = start; p < end; p += 8) count += popcnt<u64>(load<u64>(p))
  return <f64>count
}
