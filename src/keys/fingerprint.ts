/**
 * fingerprint(): the digest of a payload that a message carries, so that the
 * same key with another payload is a `conflict`, not a silent duplicate. It
 * must not depend on what does not change the payload's meaning (the order
 * an object's fields were set in, 1 written as 1.0, a member set to
 * undefined), or a retry of the same event would be a conflict. These rules
 * are a contract: changing one changes fingerprints, and every record stored
 * before the change would then conflict with its own redelivery.
 *
 * The canonical text is the payload as JSON.stringify writes it, with:
 * - object members sorted by key, comparing UTF-16 code units (the default
 *   order of Array.prototype.sort on strings; RFC 8785 sorts the same way);
 *   no whitespace;
 * - members whose value is undefined left out (so undefined reads as
 *   missing); undefined in an array written null, as JSON does;
 * - numbers as JSON writes them (ECMAScript Number::toString: 1 and 1.0 are
 *   one number, -0 is written 0, 1e21 is written 1e+21); NaN and ±Infinity
 *   refused, where JSON would write them null;
 * - a bigint written as its decimal digits followed by n (`42n`): not JSON,
 *   so it can equal no number and no string (42n, 42 and '42' all differ);
 * - a Date written as JSON writes it, its ISO string (a Date and its ISO
 *   string agree); an invalid Date refused;
 * - an object with a toJSON method (other than a Date) written as what
 *   toJSON returns, called once with the member's key as JSON does; it must
 *   return data (a primitive, a plain object or an array), else refused;
 * - a getter that throws, or a toJSON that throws, refused at its place;
 * - everything else refused: functions, symbols, Map, Set, typed arrays,
 *   boxed primitives, instances of other classes, cycles.
 *
 * So for any payload fingerprint accepts that holds no bigint,
 * fingerprint(payload) === fingerprint(JSON.parse(JSON.stringify(payload))):
 * a producer and a consumer that reads the payload back from JSON agree.
 */
import { createHash } from 'node:crypto'
import { errorText, ErrorCode, IdemError } from '../errors.js'
import { mustBe } from '../validation.js'

/** Deeper payloads are refused with a message rather than a stack overflow: no business payload nests this deep. */
export const MAX_PAYLOAD_DEPTH = 512

const DATA_RULE = 'JSON data (a plain object, array, string, finite number, boolean, null, bigint or Date, or an object with toJSON)'

/**
 * The SHA-256 of the payload's canonical JSON (see canonicalJson), as 64
 * lowercase hex digits: the `fingerprint` to send with a message.
 *
 *   { key: idempotencyKey('order-paid', order.id), payload: order, fingerprint: fingerprint(order) }
 *
 * @throws IdemError INVALID_MESSAGE naming where the payload holds what has
 *   no canonical form: `payload.items[3].at: must be a valid Date, got an instance of Date`.
 */
export function fingerprint(payload: unknown): string {
  return createHash('sha256').update(canonicalJson(payload), 'utf8').digest('hex')
}

/**
 * The canonical text fingerprint() digests, for seeing why two payloads
 * differ, or for writing the same digest in another language. JSON except
 * for bigints (`42n`); the rules are at the top of this file and in the README.
 */
export function canonicalJson(payload: unknown): string {
  return write(payload, '', 'payload', [], 0)
}

/**
 * `key` is what JSON.stringify would pass to toJSON (the member's name, the
 * index as a string, '' at the top); `ancestors` are the objects being
 * written around this one, for cycles.
 */
function write(value: unknown, key: string, path: string, ancestors: object[], depth: number): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value)
    case 'boolean':
      return value ? 'true' : 'false'
    case 'number':
      if (!Number.isFinite(value)) throw refused(path, 'a finite number', value)
      return JSON.stringify(value)
    case 'bigint':
      return `${value}n`
    case 'undefined':
      // Only reached at the top: members are left out and array items written null before this.
      throw refused(path, DATA_RULE, value)
    case 'function':
    case 'symbol':
      throw refused(path, DATA_RULE, value)
  }
  if (value === null) return 'null'
  const object = value as object
  if (ancestors.includes(object)) throw refused(path, 'free of cycles (an object that contains itself has no JSON form)', object)
  if (depth >= MAX_PAYLOAD_DEPTH) throw refused(path, `nested at most ${MAX_PAYLOAD_DEPTH} deep`, object)
  if (object instanceof Date) {
    // Checked before toJSON: an invalid Date's toJSON gives null, which would make every invalid Date equal null.
    if (Number.isNaN(object.getTime())) throw refused(path, 'a valid Date', object)
    return JSON.stringify(object.toISOString())
  }
  if (Array.isArray(object)) return within(object, ancestors, () => writeArray(object, path, ancestors, depth))
  const toJSON = (object as { toJSON?: unknown }).toJSON
  if (typeof toJSON === 'function') return within(object, ancestors, () => writeJsonOf(object, toJSON, key, path, ancestors, depth))
  if (!isPlainObject(object)) throw refused(path, DATA_RULE, object)
  return within(object, ancestors, () => writeObject(object as Record<string, unknown>, path, ancestors, depth))
}

/** Writes an object's contents with the object among the ancestors, for the cycle check. */
function within(object: object, ancestors: object[], writeContents: () => string): string {
  ancestors.push(object)
  try {
    return writeContents()
  } finally {
    ancestors.pop()
  }
}

function isPlainObject(object: object): boolean {
  const prototype = Object.getPrototypeOf(object) as unknown
  return prototype === Object.prototype || prototype === null
}

function writeArray(array: readonly unknown[], path: string, ancestors: object[], depth: number): string {
  const items: string[] = new Array(array.length)
  for (let i = 0; i < array.length; i++) {
    const item = read(array, i, `${path}[${i}]`)
    // A hole reads as undefined too: both are null in JSON.
    items[i] = item === undefined ? 'null' : write(item, String(i), `${path}[${i}]`, ancestors, depth + 1)
  }
  return `[${items.join(',')}]`
}

function writeObject(object: Record<string, unknown>, path: string, ancestors: object[], depth: number): string {
  // Object.keys: own enumerable string keys, as JSON reads them; sort() with
  // no comparator orders strings by UTF-16 code units, in every engine.
  const keys = Object.keys(object).sort()
  const members: string[] = []
  for (const key of keys) {
    const memberAt = memberPath(path, key)
    const member = read(object, key, memberAt)
    if (member === undefined) continue
    members.push(`${JSON.stringify(key)}:${write(member, key, memberAt, ancestors, depth + 1)}`)
  }
  return `{${members.join(',')}}`
}

/**
 * What toJSON returns is written in its place, as JSON does; toJSON is not
 * called again on that value itself. Only data may come back: an object that
 * is not plain (a Date, a class instance) would be written by JSON as its
 * enumerable members, which is rarely what its author meant, so it is refused.
 */
function writeJsonOf(object: object, toJSON: Function, key: string, path: string, ancestors: object[], depth: number): string {
  let json: unknown
  try {
    json = toJSON.call(object, key)
  } catch (error) {
    throw new IdemError(ErrorCode.INVALID_MESSAGE, `${path}: its toJSON threw: ${errorText(error)}`, { cause: error })
  }
  if (json === undefined) throw refused(path, `${DATA_RULE}; its toJSON returned undefined`, object)
  if (json === null || typeof json !== 'object') return write(json, key, path, ancestors, depth)
  if (ancestors.includes(json)) throw refused(path, 'free of cycles (an object that contains itself has no JSON form)', json)
  if (Array.isArray(json)) return within(json, ancestors, () => writeArray(json, path, ancestors, depth))
  if (!isPlainObject(json)) throw refused(path, `${DATA_RULE}; its toJSON returned another kind of object`, json)
  return within(json, ancestors, () => writeObject(json as Record<string, unknown>, path, ancestors, depth))
}

/** A member or item, read once: a getter that throws fails the fingerprint with the place it threw. */
function read(container: object, key: string | number, path: string): unknown {
  try {
    return (container as Record<string | number, unknown>)[key]
  } catch (error) {
    throw new IdemError(ErrorCode.INVALID_MESSAGE, `${path}: reading it threw: ${errorText(error)}`, { cause: error })
  }
}

/** `payload.items[3].at`, or `payload["first name"]` for a key that is not an identifier. */
function memberPath(path: string, key: string): string {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`
}

function refused(path: string, rule: string, value: unknown): IdemError {
  return new IdemError(ErrorCode.INVALID_MESSAGE, mustBe(path, rule, value))
}
