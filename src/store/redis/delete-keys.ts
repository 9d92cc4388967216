import type { Redis } from 'ioredis'

/** SCAN's page size here: each page is one bounded SCAN and at most one UNLINK per hash slot on it. */
const SCAN_PAGE = 1_000

/**
 * Deletes every key under `prefix`, a SCAN page at a time: never KEYS (it
 * blocks the server) and never a flush, so a shared Redis loses only the
 * caller's own keys. For clean-ups (the demo, the benches, the tests), not
 * for the engine's records, which expire by their TTL.
 */
export async function deleteKeysUnder(redis: Redis, prefix: string): Promise<void> {
  await deleteScanned(redis, `${globEscaped(prefix)}*`, () => '')
}

/**
 * Deletes the keys a SCAN with `pattern` finds and `slotOf` accepts (undefined:
 * keep the key), one page at a time, one UNLINK per page and slot group (keys
 * of one group must share a cluster slot). Returns how many keys went.
 */
export async function deleteScanned(redis: Redis, pattern: string, slotOf: (key: string) => string | undefined): Promise<number> {
  let removed = 0
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', SCAN_PAGE)
    cursor = next
    const bySlot = new Map<string, string[]>()
    for (const key of keys) {
      const slot = slotOf(key)
      if (slot === undefined) continue
      let group = bySlot.get(slot)
      if (group === undefined) bySlot.set(slot, (group = []))
      group.push(key)
    }
    for (const group of bySlot.values()) removed += await redis.unlink(...group)
  } while (cursor !== '0')
  return removed
}

/** MATCH takes a glob: text holding * ? [ ] or \ must match only itself. */
export function globEscaped(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&')
}
