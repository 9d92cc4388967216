/**
 * What idem accepts from its users, and the words it uses when it does not.
 * Every problem reads `field: must be …, got …`, the value shown by show():
 * options gather one such line per bad field into one ConfigError
 * (DESIGN.md §8), and a bad key or namespace fails its own message with
 * INVALID_KEY (§4.6).
 */
import type { Engine } from './engine.js'
import { ConfigError, ErrorCode, IdemError } from './errors.js'

/** Longer values are cut: a problem line names the field and shows enough of the value to recognise it. */
const SHOWN_CHARS = 60
/** Objects inside objects deeper than this show as `{…}`: enough to tell a shape, and no cycle is followed. */
const SHOWN_DEPTH = 2

/**
 * A value as a problem line shows it: data as JavaScript would write it
 * (`"text"`, `42`, `[1, 2]`, `{ host: "a", port: 1 }`), cut after 60
 * characters; an instance of a class by its class (`an instance of Pool`).
 */
export function show(value: unknown): string {
  const text = shape(value, 0)
  // A string is cut inside its quotes already.
  return typeof value !== 'string' && text.length > SHOWN_CHARS ? `${text.slice(0, SHOWN_CHARS)}…` : text
}

function shape(value: unknown, depth: number): string {
  switch (typeof value) {
    case 'string':
      // Long strings are cut before quoting, so that the quotes stay visible.
      return JSON.stringify(value.length > SHOWN_CHARS ? `${value.slice(0, SHOWN_CHARS)}…` : value)
    case 'number':
    case 'boolean':
    case 'undefined':
      return String(value)
    case 'bigint':
      return `${value}n`
    case 'symbol':
      return value.toString()
    case 'function':
      return value.name === '' ? 'a function' : `function ${value.name}`
  }
  if (value === null) return 'null'
  if (Array.isArray(value)) return depth >= SHOWN_DEPTH ? '[…]' : `[${value.map((item) => shape(item, depth + 1)).join(', ')}]`
  const prototype = Object.getPrototypeOf(value) as { constructor?: { name?: unknown } } | null
  if (prototype !== null && prototype !== Object.prototype) {
    const name = prototype.constructor?.name
    return typeof name === 'string' && name !== '' ? `an instance of ${name}` : 'an object'
  }
  const entries = Object.entries(value as object)
  if (entries.length === 0) return '{}'
  if (depth >= SHOWN_DEPTH) return '{…}'
  const fields = entries.map(([key, field]) => `${/^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key)}: ${shape(field, depth + 1)}`)
  return `{ ${fields.join(', ')} }`
}

/** The one problem line: `field: must be <rule>, got <value>`. */
export function mustBe(field: string, rule: string, value: unknown): string {
  return line(field, rule, show(value))
}

function line(field: string, rule: string, shown: string): string {
  return `${field}: must be ${rule}, got ${shown}`
}

/** Options after defaults: the fields named in Given stay as the user gave them, every other one is filled in. */
export type Filled<T, Given extends keyof T = never> = Pick<T, Given> & Required<Omit<T, Given>>

/** The field names of an options type, checked by the compiler against it, so that no option is forgotten here. */
export function fieldsOf<T>(fields: Record<keyof T, true>): string[] {
  return Object.keys(fields)
}

/** A range of real numbers: `(0, 0.5]` is `{ above: 0, to: 0.5 }`, `[0, 1)` is `{ from: 0, below: 1 }`. */
export type Interval = ({ from: number } | { above: number }) & ({ to: number } | { below: number })

function inInterval(n: number, interval: Interval): boolean {
  const low = 'above' in interval ? n > interval.above : n >= interval.from
  const high = 'below' in interval ? n < interval.below : n <= interval.to
  return low && high
}

function intervalText(interval: Interval): string {
  const low = 'above' in interval ? `(${interval.above}` : `[${interval.from}`
  const high = 'below' in interval ? `${interval.below})` : `${interval.to}]`
  return `${low}, ${high}`
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

/**
 * Reads one options object field by field. A bad field is recorded as one
 * problem line and reads as its fallback, so the reading goes on and one
 * ConfigError can name every bad field. Sections (`bloom`, `store`) are read
 * by readers of their own that share the problems and prefix the names.
 */
export class OptionReader {
  /** False when the value read was given but is not an object (recorded as a problem): it reads as {}. */
  readonly valid: boolean
  readonly #options: Record<string, unknown>
  readonly #prefix: string

  /** `name` is how problems name the object itself; its fields are named `name.field` (just `field` at the top). */
  constructor(
    options: unknown,
    readonly problems: string[] = [],
    private readonly name?: string,
    rule = 'an object',
  ) {
    this.valid = options === undefined || isRecord(options)
    this.#options = isRecord(options) ? options : {}
    this.#prefix = name === undefined ? '' : `${name}.`
    if (!this.valid) this.problems.push(mustBe(name ?? 'options', rule, options))
  }

  /** The name a field's problems carry: `store.url`. */
  nameOf(field: string): string {
    return this.#prefix + field
  }

  value(field: string): unknown {
    return this.#options[field]
  }

  has(field: string): boolean {
    return this.#options[field] !== undefined
  }

  /** Records `field: must be <rule>, got <value>`; the value is the field's own unless given. */
  mustBe(field: string, rule: string, value: unknown = this.#options[field]): void {
    this.problems.push(mustBe(this.nameOf(field), rule, value))
  }

  /** The object at `field`, read by a reader of its own (an absent one reads as {}). */
  section(field: string, rule?: string): OptionReader {
    return new OptionReader(this.#options[field], this.problems, this.nameOf(field), rule)
  }

  /** Records every field not in `known`: a misspelt option must not pass silently for its default. */
  onlyKnown(known: readonly string[], owner: string): void {
    for (const [field, value] of Object.entries(this.#options)) {
      if (!known.includes(field)) this.mustBe(field, `left out (not an option of ${owner}; known: ${known.join(', ')})`, value)
    }
  }

  /** Records unless exactly one of `fields` is given: `store: must be given exactly one of url or pool …, got none`. */
  exactlyOne(fields: readonly string[], owner: string): void {
    const given = fields.filter((field) => this.has(field))
    if (given.length === 1) return
    this.problems.push(line(this.name ?? 'options', `given exactly one of ${orList(fields)} for ${owner}`, given.length === 0 ? 'none' : given.join(' and ')))
  }

  /** An integer in [min, max]; with no fallback the field is required (and a bad one reads as NaN). */
  integer(field: string, fallback: number | undefined, min: number, max = Infinity): number {
    const value = this.#options[field]
    if (value === undefined && fallback !== undefined) return fallback
    if (typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max) return value
    this.mustBe(field, max === Infinity ? `an integer of at least ${min}` : `an integer from ${min} to ${max}`)
    return fallback ?? Number.NaN
  }

  /** A number in the interval; with no fallback the field is required (and a bad one reads as NaN). */
  number(field: string, fallback: number | undefined, interval: Interval): number {
    const value = this.#options[field]
    if (value === undefined && fallback !== undefined) return fallback
    if (typeof value === 'number' && inInterval(value, interval)) return value
    this.mustBe(field, `a number in ${intervalText(interval)}`)
    return fallback ?? Number.NaN
  }

  boolean(field: string, fallback: boolean): boolean {
    const value = this.#options[field]
    if (value === undefined) return fallback
    if (typeof value === 'boolean') return value
    this.mustBe(field, 'a boolean')
    return fallback
  }

  /** One of the choices, written `'a', 'b' or 'c'` in the problem line. */
  oneOf<T extends string>(field: string, choices: readonly T[], fallback: T): T {
    const value = this.#options[field]
    if (value === undefined) return fallback
    if (choices.includes(value as T)) return value as T
    this.mustBe(field, quotedChoices(choices))
    return fallback
  }

  /** A string that `accept` takes (by default: any non-empty one); with no fallback the field is required. */
  string(field: string, fallback: string | undefined, rule: string, accept: (value: string) => boolean = (value) => value.length > 0): string {
    const value = this.#options[field]
    if (value === undefined && fallback !== undefined) return fallback
    if (typeof value === 'string' && accept(value)) return value
    this.mustBe(field, rule)
    return fallback ?? ''
  }

  /** A function, `rule` saying of what (`a function of the job`); an optional one may be absent. */
  function<F>(field: string, rule: string, required: boolean): F | undefined {
    const value = this.#options[field]
    if (value === undefined && !required) return undefined
    if (typeof value === 'function') return value as F
    this.mustBe(field, rule)
    return undefined
  }

  /** Throws one ConfigError naming every problem recorded so far, if there is one. */
  check(): void {
    if (this.problems.length > 0) throw new ConfigError(this.problems)
  }
}

/** `'a', 'b' or 'c'`. */
export function quotedChoices(choices: readonly string[]): string {
  return orList(choices.map((choice) => `'${choice}'`))
}

/** `a, b or c`. */
function orList(items: readonly string[]): string {
  return items.length === 1 ? items[0] : `${items.slice(0, -1).join(', ')} or ${items.at(-1)}`
}

/** Whether a transport was given an idem Engine: by shape, so that two copies of idem in one program still work together. */
export function isEngine(value: unknown): value is Engine {
  const engine = value as Engine | null | undefined
  return typeof engine?.processBatch === 'function' && typeof engine.config?.leaseMs === 'number'
}

/** The longest key, in UTF-8 bytes, namespace included. */
export const MAX_KEY_BYTES = 1024

/** What keyStatusOf found; the key hasher reports one per key of a batch. */
export const KeyStatus = { OK: 0, NOT_STRING: 1, EMPTY: 2, TOO_LONG: 3, LONE_SURROGATE: 4, NUL: 5 } as const
export type KeyStatus = (typeof KeyStatus)[keyof typeof KeyStatus]
export type BadKeyStatus = Exclude<KeyStatus, typeof KeyStatus.OK>

/** Any string of this many UTF-16 units or fewer fits MAX_KEY_BYTES: a unit takes at most 3 UTF-8 bytes. */
const SURELY_SHORT_UNITS = Math.floor(MAX_KEY_BYTES / 3)

/**
 * The rule for keys and namespaces: a non-empty string of at most
 * MAX_KEY_BYTES UTF-8 bytes, well-formed (a lone surrogate would be written
 * as U+FFFD, so two keys could share a record), without U+0000, which joins
 * a namespace to its key. allowNul is for a key already joined that way.
 * Allocates nothing; the UTF-8 length is measured only for keys long enough
 * to need it.
 */
export function keyStatusOf(key: unknown, allowNul = false): KeyStatus {
  if (typeof key !== 'string') return KeyStatus.NOT_STRING
  if (key.length === 0) return KeyStatus.EMPTY
  // Each UTF-16 unit takes at least one UTF-8 byte.
  if (key.length > MAX_KEY_BYTES) return KeyStatus.TOO_LONG
  if (!key.isWellFormed()) return KeyStatus.LONE_SURROGATE
  if (!allowNul && key.indexOf('\0') !== -1) return KeyStatus.NUL
  if (key.length > SURELY_SHORT_UNITS && Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) return KeyStatus.TOO_LONG
  return KeyStatus.OK
}

const keyRules: Record<BadKeyStatus, string> = {
  [KeyStatus.NOT_STRING]: 'a non-empty string',
  [KeyStatus.EMPTY]: 'a non-empty string',
  [KeyStatus.TOO_LONG]: `at most ${MAX_KEY_BYTES} UTF-8 bytes`,
  [KeyStatus.LONE_SURROGATE]: 'well-formed UTF-16 (a lone surrogate has no UTF-8 form)',
  [KeyStatus.NUL]: 'free of U+0000 (it joins a namespace to its key)',
}

/**
 * The INVALID_KEY error of a bad key or namespace, as keyStatusOf judged it:
 * `key: must be a non-empty string, got 42`. `value` is what was judged:
 * for a namespaced message, the key joined to its namespace. `key` is the
 * message's own key, kept on the error when it is a string.
 */
export function invalidKey(field: string, status: BadKeyStatus, value: unknown, key: unknown = value): IdemError {
  let rule = keyRules[status]
  let shown = show(value)
  if (status === KeyStatus.TOO_LONG) {
    if (field === 'key' && value !== key) rule += ', namespace included'
    shown += ` (${Buffer.byteLength(value as string, 'utf8')} bytes)`
  }
  return new IdemError(ErrorCode.INVALID_KEY, line(field, rule, shown), typeof key === 'string' ? { key } : {})
}
