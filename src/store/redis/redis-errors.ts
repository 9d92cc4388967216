import { ErrorCode, IdemError, errorText } from '../../errors.js'

/**
 * The Redis error replies idem acts on, by their first word, in one table:
 * the store and the streams transport read a reply's kind here instead of
 * matching text where they call. `retry: false` marks a reply no retry can
 * fix soon: it is reported at once, with what to do.
 */
const replies = {
  /** A key idem writes holds another data type: something else writes under the prefix (or the stream name). */
  WRONGTYPE: { retry: false, advice: 'a key idem writes holds another data type: another program writes under this prefix; choose another one' },
  /** Redis is at maxmemory and evicts nothing (noeviction): every write is refused until memory is freed. */
  OOM: { retry: false, advice: 'Redis is at maxmemory and refuses writes (noeviction): raise maxmemory or free memory' },
  /** The connection reaches a replica (a failover in progress, or a wrong URL). */
  READONLY: { retry: true, advice: 'the server is a read-only replica; point the store at the primary' },
  /** The server is loading its dataset after a restart. */
  LOADING: { retry: true, advice: 'the server is still loading its dataset' },
  /** The consumer group does not exist (the stream was deleted or never created). */
  NOGROUP: { retry: true, advice: 'the consumer group does not exist' },
  /** XGROUP CREATE found the group already there: the wanted state. */
  BUSYGROUP: { retry: true, advice: 'the consumer group exists already' },
} as const

export type RedisReplyKind = keyof typeof replies

/** The kind of a Redis error reply, when it is one the table knows. */
export function replyKind(error: unknown): RedisReplyKind | undefined {
  const text = errorText(error)
  const space = text.indexOf(' ')
  const word = space < 0 ? text : text.slice(0, space)
  return Object.hasOwn(replies, word) ? (word as RedisReplyKind) : undefined
}

/** A reply no retry can fix, as the STORE_FAILED error to report now; undefined for anything worth retrying. */
export function permanentRedisError(error: unknown, where: string): IdemError | undefined {
  const kind = replyKind(error)
  if (kind === undefined || replies[kind].retry) return undefined
  return new IdemError(ErrorCode.STORE_FAILED, `${where}: ${errorText(error)} (${replies[kind].advice})`, { cause: error })
}
