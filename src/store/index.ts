/**
 * `idem/store`: the store contract, for a store of your own. Extend StoreBase
 * and write its primitives, one call per group of keys (it owns tokens,
 * repeats, values and retries), then prove it with storeConformanceCases in
 * your test suite. The README's "A store of your own" shows both.
 */
export { storeConformanceCases, type ConformanceCase, type ConformanceSubject, type ConformanceTiming } from './conformance.js'
export { MemoryStore } from './memory-store.js'
export { KeyState, stateOf, type KeyRecord } from './record-state.js'
export { jsonValues, MAX_TOKEN_BYTES, plainValues, StoreBase, type GroupClaim, type KeyGroup, type StoredRecord, type StorePolicy, type ValueCodec } from './store-base.js'
export { ClaimCode, CommitCode, type ClaimReplies, type DedupStore, type KeyView, type StoreHealth } from './store.js'
