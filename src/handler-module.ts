import { isAbsolute, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { errorText, ErrorCode, IdemError } from './errors.js'
import type { Handler } from './message.js'

/** The module's default export, or its `handle` export, must be the handler function. */
export async function loadHandlerModule(specifier: string): Promise<Handler> {
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
  return handler as Handler
}
