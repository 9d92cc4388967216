/**
 * idempotencyKey(): a producer's key built from the business parts that name
 * one event, so that nobody joins them by hand with a separator that a part
 * may contain. The encoding below is a contract: the same parts must give
 * the same key in every process and every release, or a redelivery after an
 * upgrade would run its handler again. Changing a rule here changes keys.
 *
 *   key     = element(namespace) element(part)…    (no separator: each element delimits itself)
 *   element = <n>:<text>,     a netstring: n is the UTF-8 byte length of text, in decimal
 *           | #43:<digest>,   a part whose text is over 128 UTF-8 bytes: digest = base64url(SHA-256(text)), unpadded
 *   and when the key so written is over MAX_KEY_BYTES, every part is replaced by one element
 *           | *43:<digest>,   digest = base64url(SHA-256(the part elements as written above))
 *
 * A literal element starts with a digit, a hashed one with # or *, and a
 * netstring says where it ends: so no two lists of parts write the same key
 * (('a:b', 'c') is `…3:a:b,1:c,`, ('a', 'b:c') is `…1:a,3:b:c,`), and a
 * short part can never pass for the digest of a long one.
 */
import { createHash } from 'node:crypto'
import { ErrorCode, IdemError } from '../errors.js'
import { invalidKey, KeyStatus, keyStatusOf, MAX_KEY_BYTES, mustBe } from '../validation.js'

/** What a key is built from: text, or a number or bigint written as decimal text (see partText). */
export type KeyPart = string | number | bigint

/**
 * Parts longer than this, in UTF-8 bytes, are written as their digest: an
 * order line's description or a URL stays in the key as 48 bytes, and a few
 * long parts cannot push the key past MAX_KEY_BYTES on their own.
 */
export const MAX_LITERAL_PART_BYTES = 128

/**
 * The namespace is written as it is, never hashed, so that a key says what
 * kind of event it names; this bound keeps room for the parts. A namespace is
 * a constant in the producer's code, so a longer one is a mistake, refused.
 */
export const MAX_NAMESPACE_BYTES = 128

/**
 * The deterministic key of one business event: `namespace` names the kind of
 * event (`'order-paid'`, `'invoice-sent'`), the parts name the event
 * (`orderId`, `attempt`…). The result is a valid idem key: non-empty,
 * well-formed, free of U+0000, at most 1024 UTF-8 bytes.
 *
 *   idempotencyKey('order-paid', 'ord_42', 3)   // '10:order-paid,6:ord_42,1:3,'
 *
 * Parts are text. A number is written as decimal text: an integer in plain
 * digits (-0 as 0), so a safe integer and the bigint or string of the same
 * digits are the same part (42, 42n and '42'): an id read as a number by one
 * producer and as text by another still gives one key. An integer beyond
 * Number.MAX_SAFE_INTEGER is refused (it may already be another id, rounded:
 * pass such an id as a bigint or a string), and so is NaN or ±Infinity; a
 * number with a fraction is written as JavaScript writes it (0.5, 1e-7).
 * An empty string is a part like any other.
 *
 * This namespace is part of the key. The message's own `namespace` (a tenant)
 * is another thing, applied by idem on top: both may be used.
 *
 * @throws IdemError INVALID_KEY naming the bad argument: `parts[2]: must be a
 *   finite number, got NaN`. Refused: a namespace that is not a non-empty
 *   well-formed string of at most 128 UTF-8 bytes free of U+0000; no parts;
 *   a part that is not a string, number or bigint; a string part with a lone
 *   surrogate or U+0000 (whatever its length, so that the rule does not
 *   depend on it).
 */
export function idempotencyKey(namespace: string, ...parts: KeyPart[]): string {
  const namespaceText = namespaceOf(namespace)
  if (parts.length === 0) throw new IdemError(ErrorCode.INVALID_KEY, mustBe('parts', 'at least one string, number or bigint after the namespace', parts))
  let written = ''
  for (let i = 0; i < parts.length; i++) written += partElement(partText(parts[i], `parts[${i}]`))
  const key = netstring(namespaceText) + written
  if (Buffer.byteLength(key, 'utf8') <= MAX_KEY_BYTES) return key
  // Only reached with many parts of up to 128 bytes each. The whole list as
  // one digest keeps the key bounded whatever the number of parts: at most
  // 133 bytes of namespace and 48 of digest.
  return netstring(namespaceText) + `*43:${digestOf(written)},`
}

function namespaceOf(namespace: unknown): string {
  const status = keyStatusOf(namespace)
  if (status !== KeyStatus.OK) throw invalidKey('namespace', status, namespace)
  const text = namespace as string
  if (Buffer.byteLength(text, 'utf8') > MAX_NAMESPACE_BYTES) {
    throw new IdemError(ErrorCode.INVALID_KEY, mustBe('namespace', `at most ${MAX_NAMESPACE_BYTES} UTF-8 bytes (it is written into every key as it is)`, text))
  }
  return text
}

/** A part as text, by the rules of idempotencyKey; `field` names it in the error. */
function partText(part: unknown, field: string): string {
  switch (typeof part) {
    case 'string':
      if (!part.isWellFormed()) throw invalidKey(field, KeyStatus.LONE_SURROGATE, part)
      if (part.indexOf('\0') !== -1) throw invalidKey(field, KeyStatus.NUL, part)
      return part
    case 'bigint':
      return part.toString()
    case 'number':
      if (!Number.isFinite(part)) throw new IdemError(ErrorCode.INVALID_KEY, mustBe(field, 'a finite number', part))
      if (!Number.isInteger(part)) return String(part)
      if (!Number.isSafeInteger(part)) {
        throw new IdemError(ErrorCode.INVALID_KEY, mustBe(field, 'a safe integer (at most 2^53 - 1 in magnitude: pass a larger id as a bigint or a string)', part))
      }
      // String(-0) is already '0'; safe integers are never written with an exponent.
      return String(part)
  }
  throw new IdemError(ErrorCode.INVALID_KEY, mustBe(field, 'a string, number or bigint', part))
}

function partElement(text: string): string {
  const bytes = Buffer.byteLength(text, 'utf8')
  return bytes > MAX_LITERAL_PART_BYTES ? `#43:${digestOf(text)},` : `${bytes}:${text},`
}

function netstring(text: string): string {
  return `${Buffer.byteLength(text, 'utf8')}:${text},`
}

/** SHA-256 of the UTF-8 text, base64url without padding: always 43 characters. */
function digestOf(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('base64url')
}
