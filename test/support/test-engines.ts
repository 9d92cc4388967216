import { afterEach } from 'vitest'
import { createEngine, type Engine, type EngineInternals } from '../../dist/src/engine.js'
import type { EngineOptions } from '../../dist/src/config.js'

/**
 * createEngine for one test file, over `defaults`: every engine it made is
 * closed after each test, passed or failed.
 */
export function enginesClosedAfterEach(defaults: EngineOptions): (options: EngineOptions, internals?: EngineInternals) => Promise<Engine> {
  const engines: Engine[] = []
  afterEach(async () => {
    await Promise.all(engines.splice(0).map((e) => e.close()))
  })
  return async (options, internals) => {
    const e = await createEngine({ ...defaults, ...options }, internals)
    engines.push(e)
    return e
  }
}
