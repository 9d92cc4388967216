/**
 * The evidence of a shadow (or gray) rollout: what enforce would have done
 * with the decisions it did not act on. Counts by reason and namespace, and
 * the most recent samples per reason, so an operator can decide to enforce
 * (README "Rolling out"). Fed by the engine's decision events; keeps no raw
 * key (a key can be personal data), only a digest of it.
 */
import { createHash } from 'node:crypto'
import { renameSync, writeFileSync } from 'node:fs'
import type { DecisionEvent, DecisionLayer } from './decision-event.js'

/** Why enforce would not have run the handler: every verdict but new. */
export type WouldDropReason = 'duplicate' | 'conflict' | 'in_flight' | 'invalid' | 'stale'
const reasonOf: Record<string, WouldDropReason | undefined> = { duplicate: 'duplicate', conflict: 'conflict', 'in-flight': 'in_flight', invalid: 'invalid', stale: 'stale' }

/** Namespaces counted apart; later ones count as `other`. */
const MAX_NAMESPACES = 100
const OTHER = 'other'
/** The label of messages with no namespace. */
const NO_NAMESPACE = '(none)'

export interface ShadowSample {
  /** ISO time of the decision. */
  at: string
  namespace: string | undefined
  /** sha256 of the key, first 16 hex characters: enough to find it again, not to read it. */
  keyDigest: string
  reason: WouldDropReason
  layer: DecisionLayer
  errorCode?: string
}

export interface ShadowReport {
  /** ISO times of the first and last shadowed decision enforce would have acted on (undefined: none yet). */
  since: string | undefined
  until: string | undefined
  /** Decisions enforce would have acted on (dropped, refused or held back), all reasons. */
  wouldDrop: number
  byReason: Record<WouldDropReason, number>
  /** By namespace (`(none)` for none, `other` past the first 100), then by reason. */
  byNamespace: Record<string, Partial<Record<WouldDropReason, number>>>
  /** The most recent samples of each reason, newest last. */
  samples: Record<WouldDropReason, ShadowSample[]>
}

export class ShadowEvidence {
  private since: number | undefined
  private until: number | undefined
  private wouldDrop = 0
  private readonly byReason: Record<WouldDropReason, number> = { duplicate: 0, conflict: 0, in_flight: 0, invalid: 0, stale: 0 }
  private readonly byNamespace = new Map<string, Partial<Record<WouldDropReason, number>>>()
  /** Per reason, a ring of the last `samplesPerReason` shadowed decisions (events, digested when a report is made). */
  private readonly rings: Record<WouldDropReason, { events: DecisionEvent[]; next: number }> = {
    duplicate: { events: [], next: 0 },
    conflict: { events: [], next: 0 },
    in_flight: { events: [], next: 0 },
    invalid: { events: [], next: 0 },
    stale: { events: [], next: 0 },
  }

  constructor(private readonly samplesPerReason: number) {}

  /** A DecisionObserver: keeps the shadowed decisions enforce would have acted on. */
  readonly observe = (events: readonly DecisionEvent[]): void => {
    for (const event of events) {
      if (event.enforced) continue
      const reason = reasonOf[event.verdict]
      if (reason === undefined) continue
      this.since ??= event.at
      this.until = event.at
      this.wouldDrop++
      this.byReason[reason]++
      const counts = this.namespaceCounts(event.namespace ?? NO_NAMESPACE)
      counts[reason] = (counts[reason] ?? 0) + 1
      const ring = this.rings[reason]
      // Events are the engine's: the ring keeps a copy of the few fields it reports.
      const kept: DecisionEvent = { at: event.at, namespace: event.namespace, key: event.key, verdict: event.verdict, layer: event.layer, enforced: false, ...(event.errorCode === undefined ? {} : { errorCode: event.errorCode }) }
      if (ring.events.length < this.samplesPerReason) ring.events.push(kept)
      else ring.events[ring.next] = kept
      ring.next = (ring.next + 1) % this.samplesPerReason
    }
  }

  report(): ShadowReport {
    const samples = {} as Record<WouldDropReason, ShadowSample[]>
    for (const [reason, ring] of Object.entries(this.rings) as [WouldDropReason, { events: DecisionEvent[]; next: number }][]) {
      const ordered = ring.events.length < this.samplesPerReason ? ring.events : [...ring.events.slice(ring.next), ...ring.events.slice(0, ring.next)]
      samples[reason] = ordered.map((event) => ({
        at: new Date(event.at).toISOString(),
        namespace: event.namespace,
        keyDigest: createHash('sha256').update(event.key).digest('hex').slice(0, 16),
        reason,
        layer: event.layer,
        ...(event.errorCode === undefined ? {} : { errorCode: event.errorCode }),
      }))
    }
    return {
      since: this.since === undefined ? undefined : new Date(this.since).toISOString(),
      until: this.until === undefined ? undefined : new Date(this.until).toISOString(),
      wouldDrop: this.wouldDrop,
      byReason: { ...this.byReason },
      byNamespace: Object.fromEntries([...this.byNamespace].map(([namespace, counts]) => [namespace, { ...counts }])),
      samples,
    }
  }

  /** Writes the report as JSON, whole or not at all: to a temporary file, then renamed over `file`. */
  writeTo(file: string): void {
    const temporary = `${file}.${process.pid}.tmp`
    writeFileSync(temporary, `${JSON.stringify(this.report(), null, 2)}\n`)
    renameSync(temporary, file)
  }

  private namespaceCounts(namespace: string): Partial<Record<WouldDropReason, number>> {
    let counts = this.byNamespace.get(namespace)
    if (counts !== undefined) return counts
    const key = this.byNamespace.size - (this.byNamespace.has(OTHER) ? 1 : 0) >= MAX_NAMESPACES ? OTHER : namespace
    counts = this.byNamespace.get(key)
    if (counts === undefined) this.byNamespace.set(key, (counts = {}))
    return counts
  }
}
