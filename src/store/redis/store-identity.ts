/**
 * The Redis store's identity record (DESIGN.md §2, "the store is checked
 * before it is trusted"): one string under `${prefix}identity`, created by the
 * first engine that uses the prefix. It says how the records under the prefix
 * are laid out, so an engine with another layout is refused instead of
 * looking its keys up under other names, and it is the canary of data loss:
 * a Redis restarted without persistence, or flushed, loses it with every
 * record, and an engine that finds it gone knows every key settled before
 * the loss would run again.
 *
 * The record is JSON with a fixed field order, so a Lua script can compare it
 * as a string and turn it into a reset marker with one substitution:
 *   {"layout":1,"hashTags":64,"storeId":"<16 hex>"[,"ackOf":"<16 hex>"],"state":"ok"}
 *   {"layout":1,"hashTags":64,"storeId":"<16 hex>"[,"ackOf":…],"state":"reset","since":<ms>}
 * Owned partitions (a later issue) go between hashTags and storeId.
 */
import { randomBytes } from 'node:crypto'
import type { Cluster, Redis } from 'ioredis'
import { ErrorCode, IdemError } from '../../errors.js'

/** The record layout this code writes and reads (recordKey, the lease records); a new layout is a new number. */
export const IDENTITY_LAYOUT = 1

export interface StoreIdentity {
  layout: number
  hashTags: number
  /** Random, new at first use and at each acknowledged reset. */
  storeId: string
  /** The storeId of the reset this identity acknowledged: running engines of that store adopt it. */
  ackOf?: string
  state: 'ok' | 'reset'
  /** For a reset: when an engine found the record gone (ms since the epoch, Redis's clock). */
  since?: number
}

export function identityKey(prefix: string): string {
  return `${prefix}identity`
}

/** The record as stored, fields in their fixed order (batch.lua relies on `"state":"ok"}` ending an ok record). */
export function formatIdentity(identity: StoreIdentity): string {
  const { layout, hashTags, storeId, ackOf, state, since } = identity
  return JSON.stringify({ layout, hashTags, storeId, ...(ackOf === undefined ? {} : { ackOf }), state, ...(state === 'reset' ? { since } : {}) })
}

/** A new identity: first use, or the one that acknowledges the reset of `ackOf`. */
export function freshIdentity(hashTags: number, ackOf?: string): StoreIdentity {
  return { layout: IDENTITY_LAYOUT, hashTags, storeId: randomBytes(8).toString('hex'), ...(ackOf === undefined ? {} : { ackOf }), state: 'ok' }
}

/** The record's fields, or undefined for a value idem did not write. */
export function parseIdentity(text: string): StoreIdentity | undefined {
  let value: Record<string, unknown>
  try {
    value = JSON.parse(text) as Record<string, unknown>
  } catch {
    return undefined
  }
  if (value === null || typeof value !== 'object') return undefined
  const { layout, hashTags, storeId, ackOf, state, since } = value
  if (!Number.isInteger(layout) || !Number.isInteger(hashTags) || typeof storeId !== 'string') return undefined
  if (ackOf !== undefined && typeof ackOf !== 'string') return undefined
  if (state !== 'ok' && !(state === 'reset' && typeof since === 'number')) return undefined
  return value as unknown as StoreIdentity
}

/**
 * The identity an engine with `hashTags` may run on, from the record it found
 * under `prefix`; STORE_LAYOUT_MISMATCH for a record of another layout or not
 * idem's. A reset record is returned as it is: the caller fails closed.
 */
export function acceptIdentity(found: string, prefix: string, hashTags: number): StoreIdentity {
  const identity = parseIdentity(found)
  const key = JSON.stringify(identityKey(prefix))
  if (identity === undefined) {
    throw new IdemError(
      ErrorCode.STORE_LAYOUT_MISMATCH,
      `the key ${key} holds ${JSON.stringify(found.slice(0, 200))}, not an idem identity record: another program writes under this prefix; choose another store.prefix`,
    )
  }
  if (identity.layout !== IDENTITY_LAYOUT) {
    throw new IdemError(
      ErrorCode.STORE_LAYOUT_MISMATCH,
      `the records under prefix ${JSON.stringify(prefix)} have layout ${identity.layout} (${key}); this version of idem reads layout ${IDENTITY_LAYOUT}: run the version that wrote them, or use another store.prefix`,
    )
  }
  if (identity.hashTags !== hashTags) {
    throw new IdemError(
      ErrorCode.STORE_LAYOUT_MISMATCH,
      `the records under prefix ${JSON.stringify(prefix)} are spread over hashTags ${identity.hashTags} (${key}); this engine has hashTags ${hashTags} and would look every key up under another name, so settled keys would run again: set store.hashTags: ${identity.hashTags}, or use another store.prefix`,
    )
  }
  return identity
}

/**
 * The ok record a reset marker was made from (batch.lua's substitution undone):
 * what a store that finds the marker at its start expects, so that it adopts
 * the acknowledgement of that reset like the stores that saw it happen.
 */
export function okRecordOf(marker: string): string {
  return marker.replace(/"state":"reset","since":\d+\}$/, '"state":"ok"}')
}

/**
 * Whether `found` acknowledges the reset of the store `mine` ran on: an ok
 * identity of the same layout whose ackOf is mine's storeId. A running engine
 * adopts it and resumes; any other identity (a second reset, someone else's
 * record) keeps it failing closed until it restarts.
 */
export function acknowledges(found: StoreIdentity | undefined, mine: StoreIdentity): boolean {
  return found !== undefined && found.state === 'ok' && found.ackOf === mine.storeId && found.layout === mine.layout && found.hashTags === mine.hashTags
}

/** The STORE_RESET error the store fails closed with, saying what it found under the prefix and what the operator does. */
export function resetError(prefix: string, found: string): IdemError {
  const identity = parseIdentity(found)
  const seen = identity?.state === 'reset' ? `it was found gone at ${new Date(identity.since!).toISOString()}` : `it now holds ${JSON.stringify(found.slice(0, 200))}`
  return new IdemError(
    ErrorCode.STORE_RESET,
    `the redis store under prefix ${JSON.stringify(prefix)} lost its data (its identity record ${JSON.stringify(identityKey(prefix))} went missing: a restart without persistence, or a flush; ${seen}): every key settled before the loss would run again, so it fails closed until an operator runs \`idem store ack-reset\``,
  )
}

export type IdentityRead = { state: 'absent' } | { state: 'ok' | 'reset'; record: string; identity: StoreIdentity } | { state: 'foreign'; record: string }

/** What is under the prefix now, for `idem store show` and `ack-reset`. */
export async function readIdentity(client: Redis | Cluster, prefix: string): Promise<IdentityRead> {
  const record = await client.get(identityKey(prefix))
  if (record === null) return { state: 'absent' }
  const identity = parseIdentity(record)
  if (identity === undefined) return { state: 'foreign', record }
  return { state: identity.state, record, identity }
}

/**
 * Acknowledges a reset: replaces the reset marker with a fresh ok identity
 * whose ackOf names the lost store, so the engines running on it resume. The
 * write is WATCHed: an identity that changed since it was read is left alone
 * (undefined is returned; read again).
 */
export async function acknowledgeReset(client: Redis, prefix: string, marker: string, lost: StoreIdentity): Promise<StoreIdentity | undefined> {
  const key = identityKey(prefix)
  await client.watch(key)
  if ((await client.get(key)) !== marker) {
    await client.unwatch()
    return undefined
  }
  const acknowledged = { ...freshIdentity(lost.hashTags, lost.storeId), layout: lost.layout }
  const applied = await client.multi().set(key, formatIdentity(acknowledged)).exec()
  return applied === null ? undefined : acknowledged
}
