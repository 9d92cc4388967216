import { KeyHasher, KeyStatus, MAX_KEY_BYTES } from './bloom/key-hasher.js'
import { ErrorCode, IdemError } from './errors.js'
import type { Message } from './message.js'

/**
 * Validates keys and maps each to its shard by a stable hash (jump consistent
 * hash over xxHash64 of the key's UTF-8 bytes). The 64-bit hash is computed
 * once here and travels with the key: the shard's bloom filter probes with it.
 */
export class Router {
  private readonly hasher: KeyHasher
  hashes = new Uint32Array(0)
  shards = new Uint32Array(0)
  private status = new Uint8Array(0)
  /** Per message of the last route(): the key the store sees (namespace-scoped). */
  scopedKeys: unknown[] = []
  /** Per message of the last route(): why it is invalid, or undefined. */
  errors: (IdemError | undefined)[] = []

  constructor(
    private readonly shardCount: number,
    maxBatch: number,
  ) {
    this.hasher = new KeyHasher({ maxBatchKeys: Math.max(1024, maxBatch) })
  }

  /** Fills hashes, shards, scopedKeys and errors for messages[0..n); returns the count of invalid ones. */
  route(messages: readonly unknown[]): number {
    const n = messages.length
    if (this.shards.length < n) {
      this.hashes = new Uint32Array(n * 2)
      this.shards = new Uint32Array(n)
      this.status = new Uint8Array(n)
    }
    const scoped: unknown[] = new Array(n)
    const errors: (IdemError | undefined)[] = new Array(n)
    let namespaced = false
    let invalid = 0
    for (let i = 0; i < n; i++) {
      const message = messages[i] as Message | null
      if (message === null || typeof message !== 'object') {
        errors[i] = new IdemError(ErrorCode.INVALID_MESSAGE, `message must be an object with a key, got ${message === null ? 'null' : typeof message}`)
        invalid++
        scoped[i] = ''
        continue
      }
      const { key, namespace, fingerprint } = message
      if (fingerprint !== undefined && typeof fingerprint !== 'string') {
        errors[i] = new IdemError(ErrorCode.INVALID_MESSAGE, `fingerprint must be a string when given, got ${typeof fingerprint}`, keyContext(key))
        invalid++
        scoped[i] = ''
        continue
      }
      if (namespace === undefined) {
        scoped[i] = key
        continue
      }
      const problem = namespaceProblem(namespace) ?? (typeof key === 'string' && key.includes('\0') ? 'key contains U+0000' : undefined)
      if (problem !== undefined) {
        errors[i] = new IdemError(ErrorCode.INVALID_KEY, problem, keyContext(key))
        invalid++
        scoped[i] = ''
        continue
      }
      namespaced = true
      // U+0000 cannot occur in a key or a namespace, so "namespace NUL key" is
      // unambiguous and never equals a key sent without a namespace.
      scoped[i] = typeof key === 'string' ? `${namespace}\0${key}` : key
    }
    // The hasher lets U+0000 through when any key of the batch is namespaced, so
    // plain keys of such a batch are checked here: "acme NUL order-1" sent as a
    // plain key must not pass for order-1 of namespace acme.
    if (namespaced) {
      for (let i = 0; i < n; i++) {
        const message = messages[i] as Message
        if (errors[i] !== undefined || message.namespace !== undefined || typeof message.key !== 'string' || !message.key.includes('\0')) continue
        errors[i] = new IdemError(ErrorCode.INVALID_KEY, 'key contains U+0000', keyContext(message.key))
        invalid++
        scoped[i] = ''
      }
    }
    // Not the hasher's own count: it counts again the messages refused above (their placeholder key '' is empty to it).
    this.hasher.hash(scoped, this.shardCount, this.hashes, this.shards, this.status, { allowNul: namespaced })
    for (let i = 0; i < n; i++) {
      const status = this.status[i]
      if (status === KeyStatus.OK || errors[i] !== undefined) continue
      errors[i] = new IdemError(ErrorCode.INVALID_KEY, keyProblem(status, scoped[i]), keyContext((messages[i] as Message).key))
      invalid++
    }
    this.scopedKeys = scoped
    this.errors = errors
    return invalid
  }
}

function keyContext(key: unknown): { key?: string } {
  return typeof key === 'string' ? { key } : {}
}

function keyProblem(status: number, key: unknown): string {
  switch (status) {
    case KeyStatus.NOT_STRING:
      return `key must be a string, got ${key === null ? 'null' : typeof key}`
    case KeyStatus.EMPTY:
      return 'key must not be empty'
    case KeyStatus.TOO_LONG:
      return `key is ${Buffer.byteLength(key as string)} UTF-8 bytes (namespace included); the limit is ${MAX_KEY_BYTES}`
    case KeyStatus.LONE_SURROGATE:
      return 'key contains a lone surrogate (not well-formed UTF-16)'
    default:
      return 'key contains U+0000'
  }
}

function namespaceProblem(namespace: unknown): string | undefined {
  if (typeof namespace !== 'string') return `namespace must be a string when given, got ${namespace === null ? 'null' : typeof namespace}`
  if (namespace.length === 0) return 'namespace must not be empty when given'
  if (namespace.includes('\0')) return 'namespace contains U+0000'
  if (!namespace.isWellFormed()) return 'namespace contains a lone surrogate (not well-formed UTF-16)'
  return undefined
}
