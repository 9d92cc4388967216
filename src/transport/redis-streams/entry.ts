import type { ErrorCode } from '../../errors.js'

/** One stream entry as keyOf and the handler see it. */
export interface StreamEntry {
  /** The entry's stream id, e.g. '1718000000000-0'. */
  readonly id: string
  /**
   * The entry's field/value pairs, decoded as UTF-8 strings. A field named
   * twice in one XADD keeps its last value.
   */
  readonly fields: Readonly<Record<string, string>>
  /**
   * Deliveries of this entry so far, this one included, as Redis counts them
   * in the group's pending list (1 on the first read). In-flight retries do
   * not count; a delivery whose handler threw, or whose consumer died, does.
   */
  readonly deliveries: number
}

/** What the dead-letter stream holds for one entry. */
export interface DeadLetter {
  /** The entry's id in the source stream. */
  id: string
  /** Owned mode: the partition stream the entry was on (`${stream}:p${partition}`), as ids are per stream. */
  stream?: string
  /** The idempotency key, when keyOf gave a string. */
  key?: string
  code: ErrorCode
  message: string
  deliveries: number
  fields: Readonly<Record<string, string>>
}

/** Field/value pairs of an XREADGROUP or XAUTOCLAIM entry → a record. */
export function fieldsOf(pairs: readonly string[]): Record<string, string> {
  const fields: Record<string, string> = {}
  for (let i = 0; i + 1 < pairs.length; i += 2) fields[pairs[i]] = pairs[i + 1]
  return fields
}

/** Entries of one stream, as a read or a reclaim hands them over: settled on that stream. */
export interface StreamPart {
  stream: string
  entries: StreamEntry[]
}

/**
 * XREADGROUP's reply as fresh entries (delivery 1), per stream read. RESP2
 * gives `[[stream, items], …]`; RESP3 (ioredis 6's default protocol) gives a
 * map, which ioredis flattens to `[stream, items, stream, items, …]`. null:
 * nothing arrived within BLOCK. Streams with no entries are left out.
 */
export function partsOfRead(reply: unknown): StreamPart[] {
  if (reply === null || reply === undefined) return []
  const outer = reply as unknown[]
  const pairs: [string, Items][] = []
  if (typeof outer[0] === 'string') for (let i = 0; i + 1 < outer.length; i += 2) pairs.push([outer[i] as string, outer[i + 1] as Items])
  else for (const pair of outer as [string, Items][]) pairs.push(pair)
  const parts: StreamPart[] = []
  for (const [stream, items] of pairs) {
    const entries: StreamEntry[] = []
    // A '>' read only returns live entries; a null would be one deleted under us, with nothing to run.
    for (const [id, fields] of items ?? []) if (fields !== null) entries.push({ id, fields: fieldsOf(fields), deliveries: 1 })
    if (entries.length > 0) parts.push({ stream, entries })
  }
  return parts
}

type Items = [string, string[] | null][] | null

/** XREADGROUP's reply for one stream as fresh entries (delivery 1). */
export function entriesOfRead(reply: unknown): StreamEntry[] {
  return partsOfRead(reply)[0]?.entries ?? []
}

/** reclaim.lua's reply. */
export interface Reclaimed {
  next: string
  entries: StreamEntry[]
  deleted: string[]
}

export function entriesOfReclaim(reply: unknown): Reclaimed {
  const [next, taken, deleted] = reply as [string, (string | string[] | number)[], string[]]
  const entries: StreamEntry[] = []
  for (let i = 0; i + 2 < taken.length; i += 3) {
    entries.push({ id: taken[i] as string, fields: fieldsOf(taken[i + 1] as string[]), deliveries: Number(taken[i + 2]) })
  }
  return { next, entries, deleted }
}

/**
 * A dead letter's field/value pairs. The entry's own fields travel as one
 * JSON object in `fields`, so no field of the entry can be mistaken for one
 * of ours, and `JSON.parse(fields)` gives back exactly what keyOf saw.
 */
export function deadLetterFields(letter: DeadLetter, group: string, consumer: string): string[] {
  const pairs = ['id', letter.id]
  if (letter.stream !== undefined) pairs.push('stream', letter.stream)
  pairs.push('code', letter.code, 'message', letter.message, 'deliveries', String(letter.deliveries))
  if (letter.key !== undefined) pairs.push('key', letter.key)
  pairs.push('group', group, 'consumer', consumer, 'fields', JSON.stringify(letter.fields))
  return pairs
}
