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

/**
 * Types for `autocannon` 9 (mcollina/autocannon), which ships none: only the
 * parts the HTTP bench calls (autocannon(options) as a promise of its result).
 */
declare module 'autocannon' {
  interface Histogram {
    average: number
    p99: number
  }
  interface Result {
    requests: Histogram
    latency: Histogram
    errors: number
    non2xx: number
    '2xx': number
  }
  interface Options {
    url: string
    connections?: number
    duration?: number
    requests?: { method?: string; body?: string; setupRequest?: (request: Record<string, unknown>) => Record<string, unknown> }[]
  }
  export default function autocannon(options: Options): Promise<Result>
}
