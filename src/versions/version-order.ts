/**
 * Versions travel to the stores as text that sorts, byte by byte, in version
 * order: the one comparison a Lua script, a SQL column and this process all
 * make alike, whatever kind the user's version is.
 *
 *  - an integer (a safe non-negative number, or a bigint below 10^99) is 'i',
 *    its digit count as two digits, then its digits: 'i0212' < 'i03100';
 *  - a string (an event time in ISO 8601, a padded sequence) is 's' and the
 *    string, compared by UTF-8 bytes (code point order). Every integer sorts
 *    before every string, so one key's versions should be of one kind.
 */

/** What versionOf may return. */
export type Version = number | bigint | string

/** Longest string version, in UTF-8 bytes. */
export const MAX_VERSION_BYTES = 256

/** The sortable text of a version, or the reason it is not one. */
export function encodeVersion(version: unknown): { text: string } | { problem: string } {
  if (typeof version === 'number') {
    if (!Number.isSafeInteger(version) || version < 0) return { problem: `a number version must be a non-negative safe integer, got ${version}` }
    return { text: integerText(String(version)) }
  }
  if (typeof version === 'bigint') {
    if (version < 0n) return { problem: `a bigint version must be non-negative, got ${version}` }
    const digits = version.toString()
    if (digits.length > 99) return { problem: `a bigint version must be below 10^99, got one of ${digits.length} digits` }
    return { text: integerText(digits) }
  }
  if (typeof version === 'string') {
    if (version.length === 0) return { problem: 'a string version must not be empty' }
    if (Buffer.byteLength(version) > MAX_VERSION_BYTES) return { problem: `a string version must be at most ${MAX_VERSION_BYTES} UTF-8 bytes` }
    if (!version.isWellFormed()) return { problem: 'a string version must be well-formed UTF-16 (no lone surrogate)' }
    // NUL separates the fields of a Redis record.
    if (version.includes('\0')) return { problem: 'a string version must not contain U+0000' }
    return { text: `s${version}` }
  }
  return { problem: `versionOf must return a number, a bigint or a string, got ${version === null ? 'null' : typeof version}` }
}

function integerText(digits: string): string {
  return `i${digits.length < 10 ? '0' : ''}${digits.length}${digits}`
}

/** The version a sortable text stands for, as a user reads it (stats, inspect, errors). */
export function decodeVersion(text: string): string {
  return text.charCodeAt(0) === 0x69 /* 'i' */ ? text.slice(3) : text.slice(1)
}

/**
 * Byte order of the UTF-8 forms (code point order), without encoding them:
 * UTF-16 order differs only where a surrogate meets U+E000..U+FFFF, so those
 * units are moved above the others before comparing.
 */
export function compareVersionTexts(a: string, b: string): number {
  if (a === b) return 0
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x !== y) return codePointRank(x) - codePointRank(y)
  }
  return a.length - b.length
}

function codePointRank(unit: number): number {
  if (unit < 0xd800) return unit
  return unit < 0xe000 ? unit + 0x2000 : unit - 0x800
}
