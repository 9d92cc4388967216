import { ConfigError } from '../errors.js'
import { OptionReader } from '../validation.js'
import type { Verdict } from '../message.js'
import { LayerCode } from '../actor/protocol.js'
import type { DecisionEvent, DecisionLayer, DecisionObserver } from './decision-event.js'

const layerOf: Record<LayerCode, DecisionLayer> = { [LayerCode.STORE]: 'store', [LayerCode.LRU]: 'lru', [LayerCode.BLOOM]: 'bloom', [LayerCode.INPUT]: 'input' }

export interface ObserverOptions {
  /** Only the decisions enforce acts on, or would have in shadow: every verdict but `new` (a metrics or audit sink that skips runs). @default false */
  acted?: boolean
}

/**
 * Where the engine's decision events go: gathered as outcomes are handed out,
 * and given to every observer once per turn (a microtask after the first).
 * Callers test `active` before building an event, so an engine nobody
 * observes builds none.
 */
export class DecisionHub {
  /** Whether any observer is registered: read on the hot path. */
  active = false
  /** Whether any observer wants decisions with verdict `new` (see wants()). */
  private wantsNew = false
  /** Observer calls that threw: counted, and the outcomes went on. */
  failures = 0
  private observers: { observer: DecisionObserver; actedOnly: boolean }[] = []
  private pending: DecisionEvent[] = []
  private scheduled = false
  /** Read once per batch: the events of one turn share their time. */
  private now = 0

  add(observer: DecisionObserver, options: ObserverOptions = {}): () => void {
    if (typeof observer !== 'function') throw new ConfigError([`observer: must be a function, got ${observer === null ? 'null' : typeof observer}`])
    const problems: string[] = []
    const actedOnly = new OptionReader(options, problems, 'observer options').boolean('acted', false)
    if (problems.length > 0) throw new ConfigError(problems)
    const entry = { observer, actedOnly }
    this.set([...this.observers, entry])
    let added = true
    return () => {
      if (!added) return
      added = false
      // A new list: a flush in progress keeps iterating the one it started with.
      this.set(this.observers.filter((e) => e !== entry))
    }
  }

  /** Whether a decision with this verdict (the one enforce gives) is wanted: callers skip building the rest of an event nobody takes. */
  wants(verdict: Verdict): boolean {
    return this.wantsNew || verdict !== 'new'
  }

  private set(observers: { observer: DecisionObserver; actedOnly: boolean }[]): void {
    this.observers = observers
    this.active = observers.length > 0
    this.wantsNew = observers.some((e) => !e.actedOnly)
  }

  /** One decision that wants() (callers ask first, before they work out its fields); `key` as given (not namespace-scoped). */
  emit(key: string, namespace: string | undefined, verdict: Verdict, layer: LayerCode, enforced: boolean, owner: string | undefined, errorCode: string | undefined): void {
    if (!this.scheduled) {
      this.scheduled = true
      this.now = Date.now()
      queueMicrotask(this.flush)
    }
    // Every field set, absent ones as undefined: one object shape for every event.
    const event: DecisionEvent = { at: this.now, namespace, key, verdict, layer: layerOf[layer], enforced, owner, errorCode }
    this.pending.push(event)
  }

  private readonly flush = (): void => {
    this.scheduled = false
    const events = this.pending
    this.pending = []
    let acted: DecisionEvent[] | undefined
    for (const { observer, actedOnly } of this.observers) {
      const given = actedOnly && this.wantsNew ? (acted ??= events.filter((e) => e.verdict !== 'new')) : events
      if (given.length === 0) continue
      try {
        observer(given)
      } catch {
        this.failures++
      }
    }
  }
}

/**
 * The namespace of a key as the store sees it: what comes before U+0000,
 * which neither a key nor a namespace may hold, so the lanes need not carry
 * namespaces apart.
 */
export function namespaceOfScoped(scopedKey: string): string | undefined {
  const cut = scopedKey.indexOf('\0')
  return cut < 0 ? undefined : scopedKey.slice(0, cut)
}
