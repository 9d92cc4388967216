/**
 * newEventId(): a UUIDv7 (RFC 9562 §5.7) for a producer whose event has no
 * business key of its own. It names the event, not a send: minted once when
 * the event happens and stored with it, so that every retry of its send
 * carries the same id. An id minted per send makes every retry a new key,
 * and idem then has nothing to deduplicate.
 *
 * Layout (128 bits, big-endian):
 *   48 bits  unix_ts_ms   milliseconds since 1970 (Date.now(), or the last one used: see below)
 *    4 bits  ver          0111
 *   12 bits  rand_a       counter, high 12 bits
 *    2 bits  var          10
 *   30 bits  rand_b       counter, low 30 bits
 *   32 bits  rand_b       random
 *
 * The 42-bit counter is RFC 9562's "fixed bit-length dedicated counter"
 * (§6.2, method 1): seeded with 41 random bits at each new millisecond (the
 * top bit left 0, so it has room to count), and counted up for every further
 * id of the same millisecond. So ids of one process sort in the order they
 * were minted, as strings and as bytes; ids of two processes or threads in
 * one millisecond differ by their random bits (73 of them, or 32 at worst).
 * A counter that runs out moves the timestamp on by one millisecond, and a
 * clock that steps back is not followed until it catches up again: the ids
 * stay ordered, at the cost of a timestamp a little ahead of the clock.
 */
import { randomFillSync } from 'node:crypto'
import { systemClock, type Clock } from '../clock.js'

const COUNTER_BITS = 42
export const COUNTER_MAX = 2 ** COUNTER_BITS - 1
const LOW_COUNTER_BITS = 30
/** 6 bytes for a counter seed, 4 for the random tail. */
const RANDOM_BYTES_PER_ID = 10
/** Random bytes are fetched in blocks: one call into the OS per 400 ids, not one per id. */
const RANDOM_POOL_BYTES = 400 * RANDOM_BYTES_PER_ID

const hex: string[] = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, '0'))

/** The timestamp and counter of the last id minted. */
export interface Stamp {
  ms: number
  counter: number
}

/**
 * Moves the stamp on for the next id, at clock time `now`, with `seed` for a
 * fresh counter: the ordering rules of the header, in one place.
 */
export function advanceStamp(stamp: Stamp, now: number, seed: number): void {
  if (now > stamp.ms) {
    stamp.ms = now
    stamp.counter = seed
  } else if (stamp.counter < COUNTER_MAX) {
    stamp.counter++
  } else {
    stamp.ms++
    stamp.counter = seed
  }
}

/** A fresh counter: 41 random bits from bytes 0–5 of an id's randomness (the counter's top bit stays 0). */
function seedOf(random: Uint8Array, at: number): number {
  return (random[at] & 0x01) * 2 ** 40 + random[at + 1] * 2 ** 32 + random[at + 2] * 2 ** 24 + random[at + 3] * 2 ** 16 + random[at + 4] * 2 ** 8 + random[at + 5]
}

/** Mints UUIDv7s from one clock, in order. newEventId() uses one on the system clock; tests give it their own. */
export class EventIdMinter {
  readonly #stamp: Stamp = { ms: -Infinity, counter: 0 }
  readonly #pool = Buffer.alloc(RANDOM_POOL_BYTES)
  #poolOffset = RANDOM_POOL_BYTES
  readonly #bytes = new Uint8Array(16)

  constructor(private readonly clock: Clock = systemClock) {}

  next(): string {
    const at = this.#takeRandom()
    const random = this.#pool
    advanceStamp(this.#stamp, this.clock.now(), seedOf(random, at))
    const { ms, counter } = this.#stamp
    const bytes = this.#bytes
    // 48-bit timestamp: split, since bitwise operators work on 32 bits.
    const msHigh = Math.floor(ms / 2 ** 32)
    const msLow = ms >>> 0
    bytes[0] = msHigh >>> 8
    bytes[1] = msHigh
    bytes[2] = msLow >>> 24
    bytes[3] = msLow >>> 16
    bytes[4] = msLow >>> 8
    bytes[5] = msLow
    const counterHigh = Math.floor(counter / 2 ** LOW_COUNTER_BITS) // 12 bits
    const counterLow = counter % 2 ** LOW_COUNTER_BITS // 30 bits
    bytes[6] = 0x70 | (counterHigh >>> 8)
    bytes[7] = counterHigh
    bytes[8] = 0x80 | (counterLow >>> 24)
    bytes[9] = counterLow >>> 16
    bytes[10] = counterLow >>> 8
    bytes[11] = counterLow
    bytes[12] = random[at + 6]
    bytes[13] = random[at + 7]
    bytes[14] = random[at + 8]
    bytes[15] = random[at + 9]
    return format(bytes)
  }

  /** Where this id's 10 random bytes start in the pool: nothing is allocated per id. */
  #takeRandom(): number {
    if (this.#poolOffset + RANDOM_BYTES_PER_ID > RANDOM_POOL_BYTES) {
      randomFillSync(this.#pool)
      this.#poolOffset = 0
    }
    const at = this.#poolOffset
    this.#poolOffset += RANDOM_BYTES_PER_ID
    return at
  }
}

function format(bytes: Uint8Array): string {
  return (
    hex[bytes[0]] + hex[bytes[1]] + hex[bytes[2]] + hex[bytes[3]] + '-' +
    hex[bytes[4]] + hex[bytes[5]] + '-' +
    hex[bytes[6]] + hex[bytes[7]] + '-' +
    hex[bytes[8]] + hex[bytes[9]] + '-' +
    hex[bytes[10]] + hex[bytes[11]] + hex[bytes[12]] + hex[bytes[13]] + hex[bytes[14]] + hex[bytes[15]]
  )
}

const minter = new EventIdMinter()

/**
 * A new UUIDv7, lowercase and hyphenated (`0190f5e4-7a1c-7b3e-9c2d-5f6a7b8c9d0e`):
 * time-ordered, unique, for a producer whose event has no business key.
 * Mint it once, when the event happens, and store it with the event: an id
 * minted again for each send is a new key for each retry, which idem cannot
 * deduplicate.
 */
export function newEventId(): string {
  return minter.next()
}
