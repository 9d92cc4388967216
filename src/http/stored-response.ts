/**
 * The response kept with a key's DONE record (its `result`), and how a
 * replay is made from it. Kept as JSON data so that every store can hold it:
 * the body as base64, so the replay is the original byte for byte.
 */
import type { LayerReply } from './problem.js'

/** Why a completed request's response was not kept. */
export const NotReplayable = {
  /** The body was larger than maxBodyBytes. */
  TOO_LARGE: 'too-large',
  /** The route streamed its body (a write before the end): storing part of it would replay a truncated response. */
  STREAMED: 'streamed',
  /** The response went out past the layer (Fastify's reply.hijack()): the layer never saw its body. */
  NOT_CAPTURED: 'not-captured',
} as const
export type NotReplayable = (typeof NotReplayable)[keyof typeof NotReplayable]

/** A record's result: the response, or the reason it was not kept. `v` is the layout, for a later change to be told apart. */
export type StoredResponse = { v: 1; status: number; headers: [string, string][]; body: string } | { v: 1; status: number; notReplayable: NotReplayable }

/** A response as an adapter captured it from the route. */
export interface CapturedResponse {
  status: number
  /** As Node's getHeaders() gives them. */
  headers: Record<string, number | string | string[] | undefined>
  body: Buffer
}

/** What a route's run ended with: its captured response, or a response the layer could not keep. */
export type RouteCompletion = CapturedResponse | { status: number; notReplayable: NotReplayable }

/** The record's result for a completion: the allowed headers and the body, or the reason it is not kept. */
export function storedResponseOf(completion: RouteCompletion, replayHeaders: ReadonlySet<string>, maxBodyBytes: number): StoredResponse {
  if ('notReplayable' in completion) return { v: 1, status: completion.status, notReplayable: completion.notReplayable }
  if (completion.body.length > maxBodyBytes) return { v: 1, status: completion.status, notReplayable: NotReplayable.TOO_LARGE }
  const headers: [string, string][] = []
  for (const [name, value] of Object.entries(completion.headers)) {
    if (value === undefined || !replayHeaders.has(name.toLowerCase())) continue
    if (Array.isArray(value)) for (const item of value) headers.push([name.toLowerCase(), item])
    else headers.push([name.toLowerCase(), String(value)])
  }
  return { v: 1, status: completion.status, headers, body: completion.body.toString('base64') }
}

/** The replay of a kept response, or why there is none: a result of another shape (or none: the store's cap refused it) is not replayable. */
export function replayOf(result: unknown): LayerReply | { notReplayable: string } {
  const stored = result as StoredResponse | null | undefined
  if (stored === null || typeof stored !== 'object' || stored.v !== 1) return { notReplayable: 'the store did not keep it (over its size cap)' }
  if ('notReplayable' in stored) return { notReplayable: notReplayableText[stored.notReplayable] ?? stored.notReplayable }
  return { status: stored.status, headers: [...stored.headers, ['idempotent-replayed', 'true']], body: Buffer.from(stored.body, 'base64') }
}

const notReplayableText: Record<NotReplayable, string> = {
  [NotReplayable.TOO_LARGE]: 'its body was over maxBodyBytes',
  [NotReplayable.STREAMED]: 'it was streamed',
  [NotReplayable.NOT_CAPTURED]: 'it was written past the idempotency layer',
}
