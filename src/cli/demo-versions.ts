import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { createEngine } from '../engine.js'
import type { Message } from '../message.js'
import { deleteKeysUnder } from '../store/redis/delete-keys.js'
import { consumeMemoryQueue, MemoryQueue } from '../transport/memory-queue.js'
import { Progress } from './progress.js'
import { formatTable } from './table.js'

/** A parcel's statuses, in the order its versions 1..5 carry them. */
const STATUSES = ['created', 'picked-up', 'in-transit', 'out-for-delivery', 'delivered'] as const

export interface StatusPayload {
  version: number
  status: string
}

export interface VersionsDemoOptions {
  messages: number
  dupRate: number
  seed: number
  json: boolean
  /** A Redis URL: the run uses a Redis store under a fresh prefix, deleted at the end. */
  redis?: string
}

export interface VersionsDemoSummary {
  messages: number
  parcels: number
  store: string
  /** Runs of the handler (versions applied). */
  applied: number
  stale: number
  duplicate: number
  /** Deliveries that came after a newer version of their parcel had been delivered: the out-of-order ones. */
  outOfOrder: number
  /** Parcels whose last applied status is their newest: all of them, or something was lost. */
  atNewest: number
  /** Runs of an older version after a newer one of the same parcel: 0. */
  wentBack: number
  /** Versions that ran twice: 0. */
  ranTwice: number
  msgsPerSec: number
}

/**
 * Status pushes (the logistics example of README "Versions and state
 * machines"): each parcel goes through five statuses, versions 1..5; the
 * stream delivers them out of order and repeats some. The truth is each
 * parcel's newest status; the summary checks that every parcel ends there,
 * that no parcel ever went back, and that no version ran twice.
 */
export async function runVersionsDemo(options: VersionsDemoOptions): Promise<VersionsDemoSummary> {
  const deliveries = statusStream(options)
  const parcels = deliveries.parcels
  const queue = new MemoryQueue<StatusPayload>()
  // Messages as a broker hands them over: fresh objects parsed from JSON.
  for (const text of deliveries.texts) queue.add(JSON.parse(text) as Message<StatusPayload>)
  const prefix = `idem-demo-versions:${randomUUID().slice(0, 8)}:`
  const engine = await createEngine({
    store: options.redis === undefined ? { kind: 'memory' } : { kind: 'redis', url: options.redis, prefix },
    versions: { versionOf: (m: Message<StatusPayload>) => m.payload!.version },
  })
  const applied = new Map<string, number>()
  let wentBack = 0
  let ranTwice = 0
  let runs = 0
  const handler = (message: Message<StatusPayload>): void => {
    const { version } = message.payload!
    const last = applied.get(message.key) ?? 0
    if (version < last) wentBack++
    else if (version === last) ranTwice++
    applied.set(message.key, Math.max(last, version))
    runs++
  }
  const progress = new Progress(deliveries.texts.length, 'msgs', !options.json && process.stderr.isTTY === true)
  let settled = 0
  const started = performance.now()
  try {
    await consumeMemoryQueue(queue, engine, handler, {
      onBatch: (size) => {
        settled += size
        progress.update(Math.min(settled, deliveries.texts.length))
      },
    })
  } finally {
    progress.finish()
    await engine.close()
    if (options.redis !== undefined) {
      const redis = new Redis(options.redis)
      await deleteKeysUnder(redis, prefix).finally(() => redis.disconnect())
    }
  }
  const seconds = (performance.now() - started) / 1000
  const { verdicts } = engine.stats().totals
  let atNewest = 0
  for (const [key, newest] of deliveries.newest) if (applied.get(key) === newest) atNewest++
  return {
    messages: deliveries.texts.length,
    parcels,
    store: options.redis === undefined ? 'memory' : 'redis',
    applied: runs,
    stale: verdicts.stale,
    duplicate: verdicts.duplicate,
    outOfOrder: deliveries.outOfOrder,
    atNewest,
    wentBack,
    ranTwice,
    msgsPerSec: Math.round(deliveries.texts.length / seconds),
  }
}

export function formatVersionsDemoSummary(s: VersionsDemoSummary): string {
  return formatTable(
    ['idem demo --versions', 'value'],
    [
      ['store', s.store],
      ['status messages', s.messages],
      ['parcels (5 statuses each)', s.parcels],
      ['  delivered after a newer status (out of order)', s.outOfOrder],
      ['applied (handler runs)', s.applied],
      ['stale (older than applied: skipped)', s.stale],
      ['duplicate (the applied version again: skipped)', s.duplicate],
      ['parcels ending at their newest status', `${s.atNewest} of ${s.parcels}`],
      ['went back to an older status', s.wentBack],
      ['version run twice', s.ranTwice],
      ['throughput (msgs/s)', s.msgsPerSec],
    ],
  )
}

/** Whether the run kept the contract: every parcel at its newest status, none went back, none ran twice. */
export function versionsDemoOk(s: VersionsDemoSummary): boolean {
  return s.atNewest === s.parcels && s.wentBack === 0 && s.ranTwice === 0 && s.applied + s.stale + s.duplicate === s.messages
}

/**
 * The stream: parcel p's version v is due at p + 40·v, plus up to 120 of
 * jitter (so statuses overtake each other), and a repeat (dupRate of the
 * statuses) comes up to 2,000 later (a redelivery, a producer resend). Keys
 * of mixed lengths, one in eight in CJK.
 */
export function statusStream(options: { messages: number; dupRate: number; seed: number }): { texts: string[]; parcels: number; newest: Map<string, number>; outOfOrder: number } {
  let state = options.seed * 0x9e3779b9 + 1
  const random = () => ((state = Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32
  const parcels = Math.max(1, Math.round(options.messages / (STATUSES.length * (1 + options.dupRate))))
  const timed: { at: number; key: string; version: number }[] = []
  const newest = new Map<string, number>()
  for (let p = 0; p < parcels; p++) {
    const key = p % 8 === 7 ? `包裹-${p}` : `parcel-${p.toString(36).padStart(1 + (p % 5), '0')}-${p}`
    newest.set(key, STATUSES.length)
    for (let v = 1; v <= STATUSES.length; v++) {
      const at = p + 40 * v + random() * 120
      timed.push({ at, key, version: v })
      if (random() < options.dupRate) timed.push({ at: at + random() * 2000, key, version: v })
    }
  }
  timed.sort((a, b) => a.at - b.at)
  const seen = new Map<string, number>()
  let outOfOrder = 0
  const texts = timed.map(({ key, version }) => {
    const latest = seen.get(key) ?? 0
    if (version < latest) outOfOrder++
    seen.set(key, Math.max(latest, version))
    return JSON.stringify({ key, payload: { version, status: STATUSES[version - 1] } })
  })
  return { texts, parcels, newest, outOfOrder }
}
