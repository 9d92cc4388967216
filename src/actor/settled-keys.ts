/**
 * What the strict and the owned actor share about settled keys: the LRU that
 * answers duplicates without I/O, how a settled key answers a message (its
 * result, or a conflict of fingerprints), and the bloom filter's generations.
 */
import { LRUCache } from 'lru-cache'
import type { BloomFilter } from '../bloom/bloom-filter.js'
import { VerdictCode } from './protocol.js'

/** A settled key held in memory: enough to answer a duplicate without I/O. */
interface Settled {
  fingerprint: string | undefined
  result: unknown
  expiresAt: number
}

/** A shard's LRU of settled keys; `maxKeys` 0 holds nothing. */
export class SettledKeys {
  private readonly cache: LRUCache<string, Settled> | undefined

  constructor(maxKeys: number) {
    this.cache = maxKeys > 0 ? new LRUCache<string, Settled>({ max: maxKeys }) : undefined
  }

  /** The key's entry while its record lives in the store, else undefined. */
  get(key: string, now: number): Settled | undefined {
    const hit = this.cache?.get(key)
    return hit !== undefined && hit.expiresAt > now ? hit : undefined
  }

  /** An operator forgot the key in the store: its next message must ask the store. */
  forget(key: string): void {
    this.cache?.delete(key)
  }

  /** An operator purged the namespace: every key "namespace NUL …" goes (a walk over the LRU, bounded by its size). */
  forgetNamespace(namespace: string): void {
    if (this.cache === undefined) return
    const head = `${namespace}\0`
    for (const key of [...this.cache.keys()]) if (key.startsWith(head)) this.cache.delete(key)
  }

  /** Held until the record expires in the store: a full TTL after our own commit, the store's remaining time for a DONE key it answered. */
  remember(key: string, fingerprint: string | undefined, result: unknown, now: number, expiresInMs: number): void {
    if (expiresInMs <= 0) return
    this.cache?.set(key, { fingerprint, result, expiresAt: now + expiresInMs })
  }
}

/** A message meeting its settled key: duplicate with the stored result, or conflict when both have fingerprints that differ. */
export function answerSettled(
  i: number,
  storedFingerprint: string | undefined,
  result: unknown,
  fingerprint: string | undefined,
  verdicts: Uint8Array,
  results: unknown[],
  storedFingerprints: (string | undefined)[],
): void {
  if (storedFingerprint !== undefined && fingerprint !== undefined && storedFingerprint !== fingerprint) {
    verdicts[i] = VerdictCode.CONFLICT
    storedFingerprints[i] = storedFingerprint
  } else {
    verdicts[i] = VerdictCode.DUPLICATE
    results[i] = result
  }
}

/**
 * Each generation spans one TTL, so current + previous remember every key for
 * at least the dedup window: the filter may forget a key only after its DONE
 * record could have expired. Returns how many rotations were made (0, 1 or 2);
 * the caller's generation then starts at `now`.
 */
export function rotateGenerations(bloom: BloomFilter, generationStartedAt: number, now: number, ttlMs: number): number {
  const elapsed = now - generationStartedAt
  if (elapsed < ttlMs) return 0
  const rotations = elapsed >= 2 * ttlMs ? 2 : 1
  for (let r = 0; r < rotations; r++) bloom.rotate()
  return rotations
}
