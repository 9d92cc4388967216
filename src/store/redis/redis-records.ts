/**
 * How a record is named and written in Redis. The Lua scripts read only the
 * first byte and the token; everything else is parsed here, in one place.
 */

/**
 * The record key of an engine key. Engine keys are "key" or "namespace NUL key"
 * (neither part may hold NUL), and the two shapes get different markers ('k:'
 * and 'n<bytes>:'), so no two (namespace, key) pairs share a record whatever
 * characters they hold. The hash tag keeps a tag's records in one cluster slot.
 */
export function recordKey(prefix: string, tag: number, key: string): string {
  const nul = key.indexOf('\0')
  if (nul < 0) return `${prefix}{${tag}}k:${key}`
  const namespace = key.slice(0, nul)
  return `${prefix}{${tag}}n${Buffer.byteLength(namespace)}:${namespace}:${key.slice(nul + 1)}`
}

/** FNV-1a over UTF-16 units: a cheap, stable spread of keys over hash tags. */
export function hashTagOf(key: string, tags: number): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
  return (h >>> 0) % tags
}

/**
 * Reads 'p' token '\n' fingerprint, 'd' token '\n' fingerprint '\n' result, or
 * 'u' token '\n' fingerprint '\n' since (UNKNOWN), values left as the JSON text
 * the store base decodes ('' for none). JSON never holds a raw newline, so
 * '\n' separates the fields unambiguously.
 */
export function readRecord(record: string): { done: boolean; unknown: boolean; token: string; fingerprint: string; result: string } {
  const tokenEnd = record.indexOf('\n')
  const done = record.charCodeAt(0) === 0x64 // 'd'
  const unknown = record.charCodeAt(0) === 0x75 // 'u'
  const fingerprintEnd = done || unknown ? record.indexOf('\n', tokenEnd + 1) : record.length
  return {
    done,
    unknown,
    token: record.slice(1, tokenEnd),
    fingerprint: record.slice(tokenEnd + 1, fingerprintEnd),
    result: done ? record.slice(fingerprintEnd + 1) : '',
  }
}
