import type { Cluster, Redis } from 'ioredis'

/**
 * One ioredis client per server (or cluster) and per thread, shared by the
 * thread's shard stores. The lanes of a thread step in the same turn of the
 * event loop, so with ioredis auto-pipelining their script calls leave in one
 * socket write and come back in one read. On loopback a write costs tens of
 * microseconds of CPU, so eight shards on eight connections paid eight.
 */
interface Shared {
  client: Redis | Cluster
  users: number
}

const clients = new Map<string, Shared>()

/** The shared client for `id` (the server and the client options), opened by `open` on first use. */
export function acquireClient(id: string, open: () => Redis | Cluster): Redis | Cluster {
  let shared = clients.get(id)
  if (shared === undefined) clients.set(id, (shared = { client: open(), users: 0 }))
  shared.users++
  return shared.client
}

/** Closes the client once its last user lets go. */
export async function releaseClient(id: string): Promise<void> {
  const shared = clients.get(id)
  if (shared === undefined || --shared.users > 0) return
  clients.delete(id)
  try {
    await shared.client.quit()
  } catch {
    shared.client.disconnect()
  }
}
