import type { Message } from '../message.js'

export interface DemoStreamOptions {
  messages: number
  /** Share of messages that repeat an earlier key. */
  dupRate: number
  seed: number
}

export interface DemoPayload {
  /** Index of the unique key: the demo handler counts effects per index. */
  n: number
  amountCents: number
}

/**
 * A realistic duplicate mix, deterministic per seed. Of the duplicates: half are
 * producer resends (the same key again within a few messages), three in ten come
 * in redelivery bursts (a run of recent keys delivered again, as after a
 * consumer restart), two in ten are late duplicates of old keys, far enough
 * back that a small LRU has forgotten them and the bloom filter and the store
 * must answer.
 */
export function* demoStream(options: DemoStreamOptions): Generator<Message<DemoPayload>> {
  const random = splitmix32(options.seed)
  const total = options.messages
  const uniqueTarget = Math.round(total * (1 - options.dupRate))
  const emitted: Message<DemoPayload>[] = []
  let dupsLeft = total - uniqueTarget
  let burst = 0

  const fresh = (): Message<DemoPayload> => {
    const n = emitted.length
    const message: Message<DemoPayload> = {
      key: `orders/2026-11-26/${(1_000_000_000 + n).toString()}/${(random() >>> 0).toString(16).padStart(8, '0')}`,
      payload: { n, amountCents: random() % 100_000 },
    }
    emitted.push(message)
    return message
  }
  const recent = (window: number): Message<DemoPayload> => emitted[emitted.length - 1 - (random() % Math.min(window, emitted.length))]

  for (let produced = 0; produced < total; produced++) {
    const left = total - produced
    const newLeft = uniqueTarget - emitted.length
    const duplicate = emitted.length > 0 && dupsLeft > 0 && (newLeft === 0 || random() / 2 ** 32 < dupsLeft / left)
    if (!duplicate) {
      yield fresh()
      continue
    }
    dupsLeft--
    if (burst > 0) {
      burst--
      yield recent(2_000)
      continue
    }
    const kind = random() % 10
    if (kind < 5) yield recent(8)
    else if (kind < 8) {
      burst = 1 + (random() % 49)
      yield recent(2_000)
    } else yield emitted[random() % emitted.length]
  }
}

/** A small fast PRNG (splitmix32): the same seed gives the same stream on every machine. */
function splitmix32(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x9e3779b9) | 0
    let z = state
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return (z ^ (z >>> 16)) >>> 0
  }
}
