import { expect } from 'vitest'
import { resolveConfig } from '../../dist/src/config.js'
import { ConfigError, ErrorCode } from '../../dist/src/errors.js'

/** The problem lines of the ConfigError that createEngine's options get; fails the test if they pass. */
export function problemsOf(options: unknown): readonly string[] {
  try {
    resolveConfig(options)
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).code).toBe(ErrorCode.INVALID_CONFIG)
    return (error as ConfigError).problems
  }
  throw new Error('expected a ConfigError')
}
