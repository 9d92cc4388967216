/**
 * The delivery limit every transport with dead letters applies (Redis
 * Streams, RabbitMQ): when a message is out of deliveries, and what its dead
 * letter says.
 */
import { ErrorCode } from '../errors.js'
import { Verdict, type Outcome } from '../message.js'

/**
 * A message (a stream entry, a queue delivery) delivered more than
 * maxDeliveries times has had its every chance: its earlier deliveries ended
 * without an outcome (consumers died or stopped holding it). It still goes through the engine, so a key that one of them
 * did commit is acked as a duplicate; otherwise its handler is not run again.
 */
export function exhausted(deliveries: number, maxDeliveries: number): boolean {
  return deliveries > maxDeliveries
}

/** The dead letter's code and message for an outcome its transport dead-letters (conflict, bad input, out of deliveries). */
export function deadLetterReason(outcome: Outcome, deliveries: number, maxDeliveries: number): { code: ErrorCode; message: string } {
  if (outcome.verdict === Verdict.NEW && exhausted(deliveries, maxDeliveries)) {
    return {
      code: ErrorCode.DELIVERIES_EXHAUSTED,
      message: `delivered ${deliveries} times (maxDeliveries ${maxDeliveries}) and never settled: the consumers that held it stopped before its outcome was durable; not run again`,
    }
  }
  return failureReason(outcome, deliveries, maxDeliveries)
}

/**
 * The code and message of an outcome no retry will follow: a conflict, bad
 * input, or a handler's error on its last delivery (with that delivery's
 * number). For a transport whose delivery count also counts waits (JetStream
 * naks), where running out of deliveries never means the handler was skipped.
 */
export function failureReason(outcome: Outcome, deliveries: number, maxDeliveries: number): { code: ErrorCode; message: string } {
  const code = outcome.error?.code ?? (outcome.verdict === Verdict.CONFLICT ? ErrorCode.CONFLICT : ErrorCode.INVALID_MESSAGE)
  const message = outcome.error?.message ?? outcome.verdict
  if (outcome.verdict === Verdict.NEW) return { code, message: `${message} (delivery ${deliveries} of maxDeliveries ${maxDeliveries})` }
  return { code, message }
}
