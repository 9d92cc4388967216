import type { JsMsg } from '@nats-io/jetstream'
import type { Outcome } from '../../message.js'
import { Settle, settleOf } from '../../outcome.js'
import { messageIdKey } from '../message-id.js'

/** JetStream's dedup header: the publisher sets it to the key, and the stream drops a second message with it inside its duplicate window. */
export const MSG_ID_HEADER = 'Nats-Msg-Id'

/** The key of a message unless keyOf is given: its `Nats-Msg-Id` header, refused when it was not valid UTF-8 (messageIdKey). */
export function defaultKeyOf(message: JsMsg): unknown {
  return messageIdKey(message.headers?.get(MSG_ID_HEADER) || undefined)
}

/** What the consumer does with one message once its outcome is known (DESIGN.md §3, by settleOf). */
export const MsgAction = {
  /** ack: the handler ran and committed, or the key was done (a duplicate). */
  ACK: 'ack',
  /** nak with inFlightDelayMs: another owner holds the key, or its commit did not reach the store. */
  WAIT: 'wait',
  /** nak with retryDelayMs: the handler threw, or its commit was refused. */
  RETRY: 'retry',
  /** term, the code and message as its reason: conflict, bad input, or the handler out of deliveries. */
  TERM: 'term',
} as const
export type MsgAction = (typeof MsgAction)[keyof typeof MsgAction]

/** The settle table of the JetStream transport; a retry on delivery maxDeliveries (or later) is a term instead. */
export function msgActionOf(outcome: Outcome, deliveries: number, maxDeliveries: number): MsgAction {
  switch (settleOf(outcome)) {
    case Settle.DONE:
      return MsgAction.ACK
    case Settle.WAIT:
      return MsgAction.WAIT
    case Settle.RETRY:
      return deliveries >= maxDeliveries ? MsgAction.TERM : MsgAction.RETRY
    case Settle.REJECT:
      return MsgAction.TERM
  }
}

/**
 * Whether a server of this version reads a term's reason (`+TERM <reason>`,
 * nats-server 2.10 and later, where it shows in the MSG_TERMINATED advisory).
 * An older one ignores such a term as an unknown ack, leaving the message
 * pending, so it gets a bare term and the reason only in the consumer's event.
 */
export function termTakesReason(serverVersion: string | undefined): boolean {
  const [major, minor] = (serverVersion ?? '').split('.').map(Number)
  return major > 2 || (major === 2 && minor >= 10)
}
