import type { ErrorData } from './actor/protocol.js'
import { ConflictError, IdemError } from './errors.js'
import { Verdict, type Outcome } from './message.js'

const verdictOf: readonly Verdict[] = [Verdict.NEW, Verdict.DUPLICATE, Verdict.IN_FLIGHT, Verdict.CONFLICT, Verdict.INVALID]

/** Builds the public outcome of one message from what the actor sent back as data. */
export function toOutcome(key: string, code: number, result: unknown, error: ErrorData | undefined): Outcome {
  const outcome: Outcome = { key, verdict: verdictOf[code] }
  if (result !== undefined) outcome.result = result
  if (error !== undefined) outcome.error = error.code === 'CONFLICT' ? new ConflictError(key, error.message) : new IdemError(error.code, error.message, { key })
  return outcome
}

export function invalidOutcome(key: unknown, error: IdemError): Outcome {
  return { key: typeof key === 'string' ? key : String(key), verdict: Verdict.INVALID, error }
}
