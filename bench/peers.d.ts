/**
 * Types for `bloomfilter` 1.1.0 (jasondavies/bloomfilter.js), which ships none:
 * only the parts the bloom bench calls.
 */
declare module 'bloomfilter' {
  export class BloomFilter {
    /** m bits (rounded up to a multiple of 32), k probes per key (FNV-1a, enhanced double hashing). */
    constructor(m: number, k: number)
    readonly m: number
    readonly k: number
    readonly buckets: Uint32Array
    add(value: string): void
    test(value: string): boolean
  }
}
