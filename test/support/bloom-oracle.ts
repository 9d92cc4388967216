/**
 * A tiny reference model of the wasm bloom core, written for obviousness
 * rather than speed: xxHash64 in BigInt, jump consistent hash, and a
 * two-generation bloom filter with the same probe formula and bit layout
 * (bit i of a generation is bit i % 8 of byte i / 8, as in the wasm's
 * little-endian u64 words). The suites run against both.
 */
const MASK64 = (1n << 64n) - 1n
const PRIME1 = 0x9e3779b185ebca87n
const PRIME2 = 0xc2b2ae3d27d4eb4fn
const PRIME3 = 0x165667b19e3779f9n
const PRIME4 = 0x85ebca77c2b2ae63n
const PRIME5 = 0x27d4eb2f165667c5n

const mul = (a: bigint, b: bigint) => (a * b) & MASK64
const add = (a: bigint, b: bigint) => (a + b) & MASK64
const rotl = (x: bigint, r: bigint) => ((x << r) | (x >> (64n - r))) & MASK64
const round = (acc: bigint, lane: bigint) => mul(rotl(add(acc, mul(lane, PRIME2)), 31n), PRIME1)
const mergeRound = (acc: bigint, lane: bigint) => add(mul(acc ^ round(0n, lane), PRIME1), PRIME4)

function readLE(bytes: Uint8Array, at: number, length: number): bigint {
  let value = 0n
  for (let i = length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[at + i])
  return value
}

/** XXH64 with seed 0, straight from the xxHash specification. */
export function xxh64(bytes: Uint8Array): bigint {
  const length = bytes.length
  let p = 0
  let h: bigint
  if (length >= 32) {
    let v1 = add(PRIME1, PRIME2)
    let v2 = PRIME2
    let v3 = 0n
    let v4 = (-PRIME1) & MASK64
    for (; p + 32 <= length; p += 32) {
      v1 = round(v1, readLE(bytes, p, 8))
      v2 = round(v2, readLE(bytes, p + 8, 8))
      v3 = round(v3, readLE(bytes, p + 16, 8))
      v4 = round(v4, readLE(bytes, p + 24, 8))
    }
    h = add(add(rotl(v1, 1n), rotl(v2, 7n)), add(rotl(v3, 12n), rotl(v4, 18n)))
    for (const v of [v1, v2, v3, v4]) h = mergeRound(h, v)
  } else {
    h = PRIME5
  }
  h = add(h, BigInt(length))
  for (; p + 8 <= length; p += 8) h = add(mul(rotl(h ^ round(0n, readLE(bytes, p, 8)), 27n), PRIME1), PRIME4)
  if (p + 4 <= length) {
    h = add(mul(rotl(h ^ mul(readLE(bytes, p, 4), PRIME1), 23n), PRIME2), PRIME3)
    p += 4
  }
  for (; p < length; p++) h = mul(rotl(h ^ mul(BigInt(bytes[p]), PRIME5), 11n), PRIME1)
  h = mul(h ^ (h >> 33n), PRIME2)
  h = mul(h ^ (h >> 29n), PRIME3)
  return h ^ (h >> 32n)
}

const encoder = new TextEncoder()
export const xxh64String = (key: string) => xxh64(encoder.encode(key))

/** Jump consistent hash (Lamping & Veach), as in their paper's C++. */
export function jumpHash(hash: bigint, buckets: number): number {
  let key = hash
  let bucket = -1
  let next = 0
  while (next < buckets) {
    bucket = next
    key = add(mul(key, 2862933555777941757n), 1n)
    next = Math.trunc((bucket + 1) * (2 ** 31 / Number((key >> 33n) + 1n)))
  }
  return bucket
}

export class OracleBloom {
  current: Uint8Array
  previous: Uint8Array

  constructor(
    readonly bits: number,
    readonly k: number,
  ) {
    this.current = new Uint8Array(bits / 8)
    this.previous = new Uint8Array(bits / 8)
  }

  /** Probe i is x = lo + i·hi (mod 2^32), mapped to [0, bits) by (x × bits) >> 32. */
  probes(lo: number, hi: number): number[] {
    const probes: number[] = []
    for (let i = 0; i < this.k; i++) {
      const x = BigInt(lo) + BigInt(i) * BigInt(hi)
      probes.push(Number(((x & 0xffffffffn) * BigInt(this.bits)) >> 32n))
    }
    return probes
  }

  hasHash(lo: number, hi: number): boolean {
    const probes = this.probes(lo, hi)
    const all = (generation: Uint8Array) => probes.every((bit) => (generation[bit >> 3] >> (bit & 7)) & 1)
    return all(this.current) || all(this.previous)
  }

  addHash(lo: number, hi: number): void {
    for (const bit of this.probes(lo, hi)) this.current[bit >> 3] |= 1 << (bit & 7)
  }

  testAndAddHash(lo: number, hi: number): boolean {
    const seen = this.hasHash(lo, hi)
    this.addHash(lo, hi)
    return seen
  }

  has(key: string): boolean {
    return this.hasHash(...split(xxh64String(key)))
  }

  add(key: string): void {
    this.addHash(...split(xxh64String(key)))
  }

  testAndAdd(key: string): boolean {
    return this.testAndAddHash(...split(xxh64String(key)))
  }

  rotate(): void {
    this.previous = this.current
    this.current = new Uint8Array(this.bits / 8)
  }

  clear(): void {
    this.current.fill(0)
    this.previous.fill(0)
  }
}

/** A 64-bit hash as the (lo, hi) u32 pair the wasm writes. */
export function split(hash: bigint): [number, number] {
  return [Number(hash & 0xffffffffn), Number(hash >> 32n)]
}
