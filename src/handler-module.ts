import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { errorText, ErrorCode, IdemError } from './errors.js'
import type { Handler, ReconcileHook } from './message.js'

/** A handler module's functions: the handler, and the reconcile hook for its UNKNOWN keys when it exports one. */
export interface HandlerModule {
  handle: Handler
  reconcile?: ReconcileHook
}

/** The module's default export, or its `handle` export, must be the handler function; a `reconcile` export, if any, a function too. */
export async function loadHandlerModule(specifier: string): Promise<HandlerModule> {
  const url = specifier.startsWith('file:') ? specifier : pathToFileURL(isAbsolute(specifier) ? specifier : resolve(specifier)).href
  let loaded: Record<string, unknown>
  try {
    loaded = (await import(url)) as Record<string, unknown>
  } catch (error) {
    throw new IdemError(ErrorCode.HANDLER_LOAD_FAILED, `handler module ${specifier} failed to load: ${errorText(error)}`, { cause: error })
  }
  const handler = typeof loaded.default === 'function' ? loaded.default : loaded.handle
  if (typeof handler !== 'function') {
    throw new IdemError(ErrorCode.HANDLER_LOAD_FAILED, `handler module ${specifier} exports no function: export default (message) => …, or export function handle(message)`)
  }
  const reconcile = loaded.reconcile
  if (reconcile !== undefined && typeof reconcile !== 'function') {
    throw new IdemError(ErrorCode.HANDLER_LOAD_FAILED, `handler module ${specifier} exports reconcile, but it is ${typeof reconcile}, not a function (message, { key, signal }) => 'done' | 'not-done' | 'unknown' | { result }`)
  }
  return { handle: handler as Handler, ...(reconcile === undefined ? {} : { reconcile: reconcile as ReconcileHook }) }
}
