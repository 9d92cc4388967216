import { ConfigError } from '../errors.js'
import type { Verdict } from '../message.js'
import { LayerCode } from '../actor/protocol.js'
import type { DecisionEvent, DecisionLayer, DecisionObserver } from './decision-event.js'

const layerOf: Record<LayerCode, DecisionLayer> = { [LayerCode.STORE]: 'store', [LayerCode.LRU]: 'lru', [LayerCode.BLOOM]: 'bloom', [LayerCode.INPUT]: 'input' }

/**
 * Where the engine's decision events go: gathered as outcomes are handed out,
 * and given to every observer once per turn (a microtask after the first).
 * Callers test `active` before building an event, so an engine nobody
 * observes builds none.
 */
export class DecisionHub {
  /** Whether any observer is registered: read on the hot path. */
  active = false
  /** Observer calls that threw: counted, and the outcomes went on. */
  failures = 0
  private observers: DecisionObserver[] = []
  private pending: DecisionEvent[] = []
  private scheduled = false
  /** Read once per batch: the events of one turn share their time. */
  private now = 0

  add(observer: DecisionObserver): () => void {
    if (typeof observer !== 'function') throw new ConfigError([`observer: must be a function, got ${observer === null ? 'null' : typeof observer}`])
    this.observers = [...this.observers, observer]
    this.active = true
    let added = true
    return () => {
      if (!added) return
      added = false
      // A copy: a flush in progress keeps iterating the list it started with.
      const observers = [...this.observers]
      observers.splice(observers.indexOf(observer), 1)
      this.observers = observers
      this.active = observers.length > 0
    }
  }

  /** One decision; `key` as given (not namespace-scoped). */
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
    for (const observer of this.observers) {
      try {
        observer(events)
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
