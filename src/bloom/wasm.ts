/**
 * The only door into build/bloom.wasm (compiled from assembly/bloom.ts). The
 * rest of idem sees typed views over an instance's IO regions, never pointers.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { ErrorCode, IdemError } from '../errors.js'

/**
 * Every export of the module. Pointers and counts are u32 inside the wasm but
 * arrive in JS as signed i32; instantiateBloom() reads the pointers with `>>> 0`.
 */
export interface BloomExports {
  readonly memory: { readonly buffer: ArrayBuffer }
  /** Lays out 2 generations of `wordsPerGeneration` u64 words and the IO regions; the only call that grows memory. */
  init(wordsPerGeneration: number, k: number, maxKeys: number, maxKeyBytes: number): void
  keyBytesPtr(): number
  offsetsPtr(): number
  hashesPtr(): number
  shardsPtr(): number
  resultsPtr(): number
  /** 0 is the current generation, 1 the previous one. */
  generationPtr(i: number): number
  generationBytes(): number
  /**
   * offsets[1..n], written as UTF-16 unit ends of keys packed as one UTF-8
   * string of byteCount bytes, rewritten as byte ends. Returns the longest
   * key's bytes, or -1 when units and bytes disagree (a surrogate pair split
   * across two keys, a short write).
   */
  utf8Offsets(n: number, byteCount: number): number
  /** xxHash64 of keys [0, n) into hashes (lo, hi); jump hash into shards when shardCount > 0. */
  hashKeys(n: number, shardCount: number): void
  /** results[i] = 1 if hash i is maybe seen in either generation, then adds it; returns the maybe-seen count. */
  testAndAdd(n: number): number
  /** testAndAdd without the add. */
  test(n: number): number
  /** Adds hashes [0, n) to the current generation. */
  add(n: number): void
  /** previous := current; current := cleared. */
  rotate(): void
  clear(): void
  /** Set bits in generation i, as a double (a full 2^32-bit generation overflows u32). */
  popcount(i: number): number
}

export interface BloomLayout {
  /** u64 words per generation; 0 for a hasher-only instance. */
  wordsPerGeneration: number
  k: number
  /** Keys per hashKeys/testAndAdd call. */
  maxKeys: number
  /** Room for the packed key bytes of one call. */
  maxKeyBytes: number
}

/**
 * An initialised instance with views over its IO regions. Memory grows only in
 * init(), which has run, so these views stay attached for the instance's life.
 */
export interface BloomInstance {
  readonly exports: BloomExports
  /** A Buffer, so that a key alone is written with Buffer#write; a joined batch goes in by TextEncoder#encodeInto. */
  readonly keyBytes: Buffer
  readonly offsets: Uint32Array
  readonly hashes: Uint32Array
  readonly shards: Uint32Array
  readonly results: Uint8Array
  /** The bytes of generation 0 (current) or 1 (previous). A fresh view per call: rotate() swaps them. */
  generation(i: 0 | 1): Uint8Array
}

// The ES2023 lib without DOM has no WebAssembly types; these are the parts used here.
interface CompiledModule {
  readonly __brand: 'WebAssembly.Module'
}
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => CompiledModule
  Instance: new (module: CompiledModule, imports: object) => { readonly exports: unknown }
}

const wasmUrl = new URL('../../../build/bloom.wasm', import.meta.url)

// Compiled once per thread (module state is per worker), instantiated per filter.
let compiled: CompiledModule | undefined

function bloomModule(): CompiledModule {
  if (compiled === undefined) {
    let bytes: Buffer
    try {
      bytes = readFileSync(wasmUrl)
    } catch (cause) {
      throw new IdemError(
        ErrorCode.WASM_UNAVAILABLE,
        `the bloom filter core ${fileURLToPath(wasmUrl)} could not be read: run \`npm run build:wasm\``,
        { cause },
      )
    }
    compiled = new WebAssembly.Module(bytes)
  }
  return compiled
}

export function instantiateBloom(layout: BloomLayout): BloomInstance {
  const exports = new WebAssembly.Instance(bloomModule(), {}).exports as BloomExports
  try {
    exports.init(layout.wordsPerGeneration, layout.k, layout.maxKeys, layout.maxKeyBytes)
  } catch (cause) {
    throw new IdemError(
      ErrorCode.WASM_UNAVAILABLE,
      `could not allocate WebAssembly memory for a bloom filter of ${layout.wordsPerGeneration * 16} bytes and batches of ${layout.maxKeys} keys`,
      { cause },
    )
  }
  const buffer = exports.memory.buffer
  const u32 = (ptr: number, length: number) => new Uint32Array(buffer, ptr >>> 0, length)
  return {
    exports,
    keyBytes: Buffer.from(buffer, exports.keyBytesPtr() >>> 0, layout.maxKeyBytes),
    offsets: u32(exports.offsetsPtr(), layout.maxKeys + 1),
    hashes: u32(exports.hashesPtr(), 2 * layout.maxKeys),
    shards: u32(exports.shardsPtr(), layout.maxKeys),
    results: new Uint8Array(buffer, exports.resultsPtr() >>> 0, layout.maxKeys),
    generation: (i) => new Uint8Array(buffer, exports.generationPtr(i) >>> 0, exports.generationBytes() >>> 0),
  }
}
