/**
 * One decision of the engine about one message, as the platform layer sees it
 * (metrics, the audit log, the shadow report): emitted on the main thread,
 * whichever thread decided it, in the batches the engine hands out per turn.
 */
import type { Verdict } from '../message.js'

/** Which layer answered: the LRU of settled keys, the bloom filter (owned mode: a key never seen), the store, or the input check before any layer. */
export type DecisionLayer = 'lru' | 'bloom' | 'store' | 'input'

export interface DecisionEvent {
  /** ms since the epoch. */
  at: number
  namespace: string | undefined
  /** The key as given (not namespace-scoped). Raw keys can be personal data: sinks that keep them say so in their config. */
  key: string
  /** The verdict enforce gives, or would have given in shadow. */
  verdict: Verdict
  layer: DecisionLayer
  /** Whether the verdict was acted on: false in shadow, and for the shadowed share of a gray rollout. */
  enforced: boolean
  /** The claim's owner token (strict mode) or `epoch:<n>` (owned mode), when there was a claim. */
  owner?: string
  /** The error code of the outcome, when it has one (in shadow: the one enforce would have given, as outcome.shadow.code). */
  errorCode?: string
}

/** Gets decisions in batches; must not throw (it runs while outcomes are handed out) and must not hold on to the array. */
export type DecisionObserver = (events: readonly DecisionEvent[]) => void
