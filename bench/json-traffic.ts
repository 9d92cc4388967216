/**
 * Idempotency keys as a consumer of a real queue meets them: read out of
 * JSON message bodies by JSON.parse, so every key is a new flat string that
 * nothing has hashed yet (see fresh-keys.ts for why that matters), of mixed
 * shapes and lengths, some of them CJK, with repeats spread through the
 * stream (dup-stream.ts: half recent resends, half late redeliveries, or
 * another `recentShare`).
 *
 * Shapes, chosen per key id by a hash of (seed, id), so the same id always has
 * the same text:
 *   uuid    3f2a9c1e-7b04-4d5a-9e3f-0a1b2c3d4e5f                      36 bytes, 40%
 *   short   ord_gjdgxs                                                ~10 bytes, 30%
 *   long    tenant-0042/orders/2026-11-26/1000000042/payment-capture  ~56 bytes, the rest
 *   cjk     订单/1000000042/支付确认, 注文/1000000042/決済             ~30 bytes, `cjkShare` of the ids
 * With cjkShare 0 the same ids take the ASCII shapes: the two streams differ
 * only in their CJK keys, which is what the bloom bench compares.
 */
import { dupIds } from './dup-stream.js'
import { mix32 } from './fresh-keys.js'

export interface TrafficPass {
  /** Keys in arrival order, each a fresh string from JSON.parse. */
  keys: string[]
  /** Keys that repeat an earlier key of the same pass. */
  repeats: number
}

const HEX = '0123456789abcdef'

/** Passes of keys; every pass uses ids no earlier pass used, so a pass never meets an earlier pass's keys. */
export class JsonTraffic {
  readonly #cjkShare: number
  readonly #seed: number
  readonly #dupRate: number
  readonly #recentShare: number | undefined
  #nextId = 0
  #pass = 0

  /** recentShare: the share of repeats that resend one of the last 100 keys (dupIds' default when absent); 0 spreads every repeat uniformly over the earlier keys. */
  constructor(options: { cjkShare: number; dupRate: number; seed: number; recentShare?: number }) {
    this.#cjkShare = options.cjkShare
    this.#dupRate = options.dupRate
    this.#recentShare = options.recentShare
    this.#seed = options.seed >>> 0
  }

  /** `count` messages, parsed from one JSON text: what a consumer holds after decoding a batch of bodies. */
  next(count: number): TrafficPass {
    const { ids, unique } = dupIds(count, this.#seed + this.#pass++, this.#dupRate, this.#recentShare)
    const first = this.#nextId
    this.#nextId += unique
    const bodies = ids.map((id, i) => `{"key":"${this.#keyText(first + id)}","amount":${i % 997}}`)
    const messages = JSON.parse(`[${bodies.join(',')}]`) as { key: string }[]
    return { keys: messages.map((message) => message.key), repeats: count - unique }
  }

  #keyText(id: number): string {
    const h = mix32(id ^ Math.imul(this.#seed, 0x9e3779b9))
    const shape = h / 2 ** 32
    if (shape < this.#cjkShare) return id % 2 === 0 ? `订单/${1_000_000_000 + id}/支付确认` : `注文/${1_000_000_000 + id}/決済`
    if (shape < 0.4) return uuidOf(h, id)
    if (shape < 0.7) return `ord_${(id * 7919 + 36 ** 5).toString(36)}`
    return `tenant-${String(h % 10_000).padStart(4, '0')}/orders/2026-11-26/${1_000_000_000 + id}/payment-capture`
  }
}

/** A version-4-shaped UUID that is a pure function of (h, id). */
function uuidOf(h: number, id: number): string {
  let hex = ''
  let state = h
  for (let word = 0; word < 4; word++) {
    state = mix32(state ^ id ^ (word * 0x85ebca6b))
    hex += state.toString(16).padStart(8, '0')
  }
  const at = (from: number, to: number) => hex.slice(from, to)
  return `${at(0, 8)}-${at(8, 12)}-4${at(13, 16)}-${HEX[8 + (h & 3)]}${at(17, 20)}-${at(20, 32)}`
}
