/**
 * `idem/bloom`: idem's WASM bloom filter on its own, for string keys, with
 * batch calls, generations that forget, measured stats and snapshots. No
 * server, no engine, no peer dependency: this entry loads the wasm core and
 * nothing else of idem's runtime.
 */
export { KeyBloomFilter, type KeyBloomOptions, type KeyBloomStats } from './key-bloom-filter.js'
export { bloomGeometry, type BloomGeometry } from './bloom-filter.js'
export { MAX_KEY_BYTES } from './key-hasher.js'
export { IdemError, ConfigError, ErrorCode } from '../errors.js'
export type { Clock } from '../clock.js'
