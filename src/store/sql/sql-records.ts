/**
 * How a record is named and written in a SQL table, in one place for the three
 * stores and the transaction helper: the key column's bytes, the table a key
 * lives in (values are JSON text, encoded by the store base: record-codec.ts).
 */
import { ErrorCode, IdemError } from '../../errors.js'
import { invalidKey, KeyStatus, keyStatusOf, MAX_KEY_BYTES } from '../../validation.js'
import { KeyState } from '../record-state.js'
import { MAX_TOKEN_BYTES } from '../store-base.js'

/**
 * Width of the key column, in bytes: the engine's own key limit (namespace
 * included), so every key the router accepts fits, and the check below only
 * ever fires for callers that use a store directly.
 */
export const KEY_COLUMN_BYTES = MAX_KEY_BYTES

/** Width of the token column: the store base's token limit (engine tokens are ~20 ASCII characters). */
export const TOKEN_COLUMN_BYTES = MAX_TOKEN_BYTES

/** The `state` column: the KeyState numbers, so a row reads like record-state.ts. */
export const RowState = { IN_PROGRESS: KeyState.IN_PROGRESS, DONE: KeyState.DONE, UNKNOWN: KeyState.UNKNOWN } as const

/**
 * Version of the table layout: a store refuses a schema with any other, except
 * version 1 (states 1 and 3 only, before UNKNOWN), which it upgrades (sql-schema.ts).
 */
export const SCHEMA_VERSION = 2

/**
 * The key column's value: the store key's UTF-8 bytes ("key", or "namespace
 * U+0000 key" as the router scoped it). Binary, so the comparison is exact
 * (no collation folds 'A' into 'a') and U+0000 needs no escaping. A key the
 * column cannot hold is refused before anything is written.
 */
export function keyBytes(key: string): Buffer {
  // allowNul: a store key may be "namespace U+0000 key", joined by the router.
  const status = keyStatusOf(key, true)
  if (status !== KeyStatus.OK) throw invalidKey('key', status, key)
  return Buffer.from(key, 'utf8')
}

/**
 * FNV-1a over the key's bytes, modulo the table count: the routing is a pure
 * function of the key, so it is the same in every process and after every
 * restart. It is part of the on-disk format: changing it moves every key.
 */
export function tableIndexOf(key: Buffer, tables: number): number {
  if (tables === 1) return 0
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key[i], 0x01000193)
  return (h >>> 0) % tables
}

/** `<prefix>records` for one table, `<prefix>records_<i>` for several. */
export function recordsTableName(prefix: string, index: number, tables: number): string {
  return tables === 1 ? `${prefix}records` : `${prefix}records_${index}`
}

export function metaTableName(prefix: string): string {
  return `${prefix}meta`
}

/** Consumer positions saved by the transaction helper (savePosition), created on first use. */
export function positionsTableName(prefix: string): string {
  return `${prefix}positions`
}

export function allTableNames(prefix: string, tables: number): string[] {
  return [...Array.from({ length: tables }, (_, i) => recordsTableName(prefix, i, tables)), metaTableName(prefix)]
}
