import { ErrorCode, IdemError } from '../errors.js'

/**
 * A broker's message id as a key, refused when its client library decoded
 * bytes that were not UTF-8 (amqplib and nats.js both put U+FFFD in their
 * place): two different ids could then read as one key, and the second
 * message would be dropped as a duplicate of the first.
 */
export function messageIdKey(id: unknown): unknown {
  if (typeof id === 'string' && id.includes('\uFFFD')) {
    throw new IdemError(ErrorCode.INVALID_KEY, 'the message id is not valid UTF-8 (decoded with U+FFFD in it): two ids could read as one key')
  }
  return id
}
