import type { Engine } from '../src/engine.js'

/**
 * Opens every shard's store connection and loads its scripts before the clock
 * starts, as each peer's client is connected before its run: 256 keys of a
 * namespace of their own reach every shard.
 */
export async function warmEngine(engine: Engine): Promise<void> {
  await engine.processBatch(Array.from({ length: 256 }, (_, i) => ({ key: `warm-${i}`, namespace: 'bench-warmup' })), () => {})
}
