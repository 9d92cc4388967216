import type { Message } from '../message.js'
import { OptionReader } from '../validation.js'
import type { Version } from './version-order.js'

/** `versions` of createEngine: version-aware keys (README "Versions and state machines"). */
export interface VersionOptions<P = any> {
  /** The message's version: a non-negative integer (number or bigint) or a string compared by UTF-8 bytes (an ISO 8601 time). Required. */
  versionOf: (message: Message<P>) => Version
  /** The state a message moves its key to; with `transitions`, checked against the state the applied version left. */
  stateOf?: (message: Message<P>) => string
  /** Allowed moves: `{ created: ['paid', 'cancelled'], paid: ['shipped'] }`. A move not listed is `invalid` with ILLEGAL_TRANSITION. */
  transitions?: Record<string, readonly string[]>
  /** States a key may start in (no version applied yet). @default every state */
  initial?: readonly string[]
}

/** The options after validation: transitions as sets. */
export interface VersionRules {
  versionOf: (message: Message) => unknown
  stateOf?: (message: Message) => unknown
  transitions?: Map<string, ReadonlySet<string>>
  initial?: ReadonlySet<string>
}

/** A state is stored with the record: a short, non-empty string. */
export const MAX_STATE_LENGTH = 100
const STATE_RULE = `a non-empty string of at most ${MAX_STATE_LENGTH} characters, without U+0000`

/** NUL separates the fields of a Redis record. */
export function isState(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= MAX_STATE_LENGTH && value.isWellFormed() && !value.includes('\0')
}

/** Reads `versions`, pushing one line per bad field. */
export function readVersionRules(o: OptionReader): VersionRules | undefined {
  if (!o.has('versions')) return undefined
  const section = o.section('versions')
  if (!section.valid) return undefined
  section.onlyKnown(['versionOf', 'stateOf', 'transitions', 'initial'], 'versions')
  const versionOf = section.function<VersionRules['versionOf']>('versionOf', 'a function (message) => number | bigint | string', true)
  const stateOf = section.function<NonNullable<VersionRules['stateOf']>>('stateOf', 'a function (message) => state', false)
  const given = section.value('transitions')
  let transitions: Map<string, ReadonlySet<string>> | undefined
  if (given !== undefined) {
    const entries = given !== null && typeof given === 'object' && !Array.isArray(given) ? Object.entries(given) : undefined
    if (entries === undefined || entries.length === 0 || !entries.every(([from, to]) => isState(from) && Array.isArray(to) && to.every(isState))) {
      section.mustBe('transitions', `an object of states (${STATE_RULE}) to arrays of states, like { created: ['paid', 'cancelled'] }`)
    } else transitions = new Map(entries.map(([from, to]) => [from, new Set(to as string[])]))
  }
  if ((stateOf === undefined) !== (given === undefined)) section.mustBe(stateOf === undefined ? 'transitions' : 'stateOf', 'given together with versions.' + (stateOf === undefined ? 'stateOf' : 'transitions'))
  let initial: Set<string> | undefined
  if (section.has('initial')) {
    const states = section.value('initial')
    if (transitions === undefined) section.mustBe('initial', 'given only with versions.transitions')
    else if (!Array.isArray(states) || states.length === 0 || !states.every(isState)) section.mustBe('initial', `a non-empty array of states (${STATE_RULE})`)
    else initial = new Set(states)
  }
  if (versionOf === undefined) return undefined
  const rules: VersionRules = { versionOf }
  if (stateOf !== undefined) rules.stateOf = stateOf
  if (transitions !== undefined) rules.transitions = transitions
  if (initial !== undefined) rules.initial = initial
  return rules
}

/** Whether a key in state `from` (undefined: no version applied) may move to `to`. */
export function allowedMove(rules: VersionRules, from: string | undefined, to: string): boolean {
  if (from === undefined) return rules.initial === undefined || rules.initial.has(to)
  return rules.transitions?.get(from)?.has(to) === true
}
