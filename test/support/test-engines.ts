import { afterEach } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'

/**
 * createEngine for one test file, over `defaults`: every engine it made is
 * closed after each test, passed or failed.
 */
export function enginesClosedAfterEach(defaults: Record<string, unknown>): (options: Record<string, unknown>) => Promise<Engine> {
  const engines: Engine[] = []
  afterEach(async () => {
    await Promise.all(engines.splice(0).map((e) => e.close()))
  })
  return async (options) => {
    const e = await createEngine({ ...defaults, ...options })
    engines.push(e)
    return e
  }
}
