/**
 * What identifies a request to the layer: its Idempotency-Key header, the
 * record key it is stored under (scoped to the caller), and its fingerprint.
 */
import { createHash } from 'node:crypto'
import { fingerprint } from '../keys/fingerprint.js'
import { idempotencyKey } from '../keys/idempotency-key.js'
import type { RequestView } from './options.js'

/** The IETF draft's bound on a key, in characters. */
export const MAX_HEADER_KEY_CHARS = 255

const HEADER = 'idempotency-key'

/** The key a request carries, or why it carries none that can be used. */
export type HeaderKey = { key: string } | { missing: true } | { malformed: string }

/**
 * The Idempotency-Key of a request. The draft makes it a Structured Field
 * string (`"8e03…"`); a bare token is what most clients send (Stripe's
 * practice), so both are taken, and `"abc"` and `abc` are one key.
 * Several header lines, or one line holding a list, are refused: which of
 * them would be the key is anybody's guess.
 */
export function headerKeyOf(rawHeaders: readonly string[]): HeaderKey {
  let value: string | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].length !== HEADER.length || rawHeaders[i].toLowerCase() !== HEADER) continue
    if (value !== undefined) return { malformed: 'the Idempotency-Key header must be sent once, it was sent more than once' }
    value = rawHeaders[i + 1]
  }
  if (value === undefined) return { missing: true }
  const key = structuredString(value.trim())
  if (key === undefined) return { malformed: 'the Idempotency-Key header must hold one key, a token or a quoted string, it holds a list or a broken quoted string' }
  if (key.length === 0) return { malformed: 'the Idempotency-Key header must not be empty' }
  if (key.length > MAX_HEADER_KEY_CHARS) return { malformed: `the Idempotency-Key header must be at most ${MAX_HEADER_KEY_CHARS} characters, it is ${key.length}` }
  return { key }
}

/** A bare token as it is; a quoted sf-string unescaped (\" and \\); undefined for a list or a broken string. */
function structuredString(value: string): string | undefined {
  if (!value.startsWith('"')) return /[",]/.test(value) ? undefined : value
  const match = /^"((?:[^"\\]|\\["\\])*)"$/.exec(value)
  return match === null ? undefined : match[1].replace(/\\(["\\])/g, '$1')
}

/**
 * The record a request's key is kept under: idempotencyKey's encoding makes
 * namespace, caller and key unambiguous, so no caller can name another
 * caller's record, and a request with no caller (`-`) never shares a record
 * with a caller's (`+subject`).
 */
export function recordKeyOf(namespace: string, scope: string | undefined, key: string): string {
  return idempotencyKey(namespace, scope === undefined ? '-' : `+${scope}`, key)
}

/**
 * The default fingerprint: method, path and body. A parsed body is digested
 * by its canonical JSON (so key order and spacing do not matter), raw bytes
 * as they are.
 */
export function defaultFingerprint(request: RequestView): string {
  const { body } = request
  let bodyDigest: string
  if (body === undefined) bodyDigest = 'none'
  else if (typeof body === 'string' || Buffer.isBuffer(body)) bodyDigest = `bytes:${createHash('sha256').update(body).digest('hex')}`
  else bodyDigest = `json:${fingerprint(body)}`
  return fingerprint({ method: request.method, path: request.path, body: bodyDigest })
}
