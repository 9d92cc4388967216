import type { KeyView } from './store.js'

/** What an operator is told about one key (engine.inspect, `idem keys inspect`). */
export interface KeyInspection {
  /** 'unknown': a handler's effect may or may not have happened (DESIGN.md §2); only a reconcile hook or `idem keys resolve` ends it. */
  state: 'absent' | 'in-progress' | 'done' | 'unknown'
  /** ms until the record lapses on the store's clock: its lease (in progress), its TTL (done, unknown); 0 when absent. */
  expiresInMs: number
  /** In progress: ms left on the owner's lease (the same as expiresInMs). */
  leaseLeftMs?: number
  /** The fingerprint stored with the key, when it has one. */
  fingerprint?: string
  /** Done with a kept result: its size as JSON, in bytes. */
  resultBytes?: number
}

/** A store's view of a key (undefined: absent) as an operator is told it. */
export function inspectionOf(view: KeyView | undefined): KeyInspection {
  if (view === undefined) return { state: 'absent', expiresInMs: 0 }
  const inspection: KeyInspection = { state: view.state, expiresInMs: view.expiresInMs }
  if (view.state === 'in-progress') inspection.leaseLeftMs = view.expiresInMs
  if (view.fingerprint !== undefined) inspection.fingerprint = view.fingerprint
  if (view.state === 'done' && view.result !== undefined) {
    const bytes = jsonBytes(view.result)
    if (bytes !== undefined) inspection.resultBytes = bytes
  }
  return inspection
}

/** A kept result's size as JSON (a memory store keeps values as they are); undefined when it has none. */
function jsonBytes(result: unknown): number | undefined {
  try {
    const text = JSON.stringify(result)
    return text === undefined ? undefined : Buffer.byteLength(text)
  } catch {
    return undefined
  }
}
