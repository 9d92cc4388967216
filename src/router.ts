import { KeyHasher } from './bloom/key-hasher.js'
import { ErrorCode, errorText, IdemError } from './errors.js'
import type { Message } from './message.js'
import { invalidKey, KeyStatus, keyStatusOf, mustBe, type BadKeyStatus } from './validation.js'

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
  /** Per message of the last route(): the key as given, read once (a getter is not read twice). */
  keys: string[] = []
  /** Per message of the last route(): the key the store sees (namespace-scoped). */
  scopedKeys: unknown[] = []
  /** Per message of the last route(): its fingerprint, read once. */
  fingerprints: (string | undefined)[] = []
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
    const keys: string[] = new Array(n)
    const fingerprints: (string | undefined)[] = new Array(n)
    const errors: (IdemError | undefined)[] = new Array(n)
    let namespaced = false
    for (let i = 0; i < n; i++) {
      const message = messages[i] as Message | null
      if (message === null || typeof message !== 'object') {
        errors[i] = new IdemError(ErrorCode.INVALID_MESSAGE, mustBe('message', 'an object with a key', message))
        scoped[i] = ''
        continue
      }
      let key: unknown, namespace: unknown, fingerprint: unknown
      try {
        ;({ key, namespace, fingerprint } = message)
      } catch (error) {
        // A getter that throws, or a Proxy that refuses: this message is invalid, the batch goes on.
        // The message is not shown: showing it would read it again.
        errors[i] = new IdemError(ErrorCode.INVALID_MESSAGE, `message: must be an object whose key, namespace and fingerprint can be read, got one whose reading threw: ${errorText(error)}`, { cause: error })
        scoped[i] = ''
        continue
      }
      if (fingerprint !== undefined && typeof fingerprint !== 'string') {
        errors[i] = new IdemError(ErrorCode.INVALID_MESSAGE, mustBe('fingerprint', 'a string when given', fingerprint), typeof key === 'string' ? { key } : {})
        scoped[i] = ''
        continue
      }
      keys[i] = key as string
      fingerprints[i] = fingerprint
      if (namespace === undefined) {
        scoped[i] = key
        continue
      }
      const namespaceStatus = keyStatusOf(namespace)
      // The key is judged on its own too: joined, '' would pass as "acme NUL".
      const ownStatus = typeof key === 'string' && (key.length === 0 || key.includes('\0')) ? keyStatusOf(key) : KeyStatus.OK
      if (namespaceStatus !== KeyStatus.OK || ownStatus !== KeyStatus.OK) {
        errors[i] = namespaceStatus !== KeyStatus.OK ? invalidKey('namespace', namespaceStatus, namespace, key) : invalidKey('key', ownStatus as BadKeyStatus, key)
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
        errors[i] = invalidKey('key', KeyStatus.NUL, message.key)
        scoped[i] = ''
      }
    }
    // Messages refused above were hashed as '' (EMPTY): the hasher's count would count them twice.
    this.hasher.hash(scoped, this.shardCount, this.hashes, this.shards, this.status, { allowNul: namespaced })
    let invalid = 0
    for (let i = 0; i < n; i++) {
      const status = this.status[i]
      if (status !== KeyStatus.OK && errors[i] === undefined) errors[i] = invalidKey('key', status as BadKeyStatus, scoped[i], (messages[i] as Message).key)
      if (errors[i] !== undefined) invalid++
    }
    this.keys = keys
    this.scopedKeys = scoped
    this.fingerprints = fingerprints
    this.errors = errors
    return invalid
  }
}
