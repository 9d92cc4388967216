import { LRUCache } from 'lru-cache'
import { compareVersionTexts } from './version-order.js'

interface Applied {
  version: string
  expiresAt: number
}

/**
 * The version-aware counterpart of the settled-keys LRU: the newest applied
 * version this process knows per key, held until its record expires in the
 * store. An applied version only grows while its record lives, so a message
 * not newer than the one held here is stale (or a duplicate) with no store
 * call. `maxKeys` 0 holds nothing.
 */
export class AppliedVersions {
  private readonly cache: LRUCache<string, Applied> | undefined

  constructor(maxKeys: number) {
    this.cache = maxKeys > 0 ? new LRUCache<string, Applied>({ max: maxKeys }) : undefined
  }

  /** The applied version held for the key, while its record lives. */
  get(key: string, now: number): string | undefined {
    const hit = this.cache?.get(key)
    return hit !== undefined && hit.expiresAt > now ? hit.version : undefined
  }

  remember(key: string, version: string, now: number, expiresInMs: number): void {
    if (this.cache === undefined || expiresInMs <= 0) return
    const held = this.cache.get(key)
    if (held !== undefined && held.expiresAt > now && compareVersionTexts(held.version, version) > 0) return
    this.cache.set(key, { version, expiresAt: now + expiresInMs })
  }
}
