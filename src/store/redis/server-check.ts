import type { Cluster, Redis } from 'ioredis'
import { ErrorCode, IdemError, errorText } from '../../errors.js'

/** SET … NX … GET, which a claim (and owned mode's partition count) is built on, came with Redis 7.0. */
export const MIN_REDIS_MAJOR = 7

/**
 * The server's INFO, or undefined when it will not say (an ACL user without
 * INFO, a renamed command): such a server is let through, and one too old
 * then fails on its own syntax. Any other failure is thrown (and retried).
 */
export async function readServerInfo(client: Redis | Cluster): Promise<string | undefined> {
  try {
    return String(await client.info())
  } catch (error) {
    if (!/^(NOPERM|ERR unknown command)/.test(errorText(error))) throw error
    return undefined
  }
}

/**
 * Refuses, before the first write, a server idem cannot trust (DESIGN.md §2):
 * Redis older than 7 (STORE_UNSUPPORTED), and one whose maxmemory-policy
 * evicts keys unless `allowEviction` says so (STORE_UNSAFE): an evicted DONE
 * record lets a settled key run again, an evicted lease (or partition epoch)
 * lets a second owner in. Shared by the strict store and owned mode.
 */
export function refuseUntrustedServer(info: string, allowEviction: boolean): void {
  const version = /redis_version:([\d.]+)/.exec(info)?.[1] ?? 'unknown'
  if (Number.parseInt(version, 10) < MIN_REDIS_MAJOR) {
    throw new IdemError(ErrorCode.STORE_UNSUPPORTED, `the redis store needs Redis ${MIN_REDIS_MAJOR}.0 or later (claims use SET … NX … GET); this server is Redis ${version}`)
  }
  const policy = /maxmemory_policy:(\S+)/.exec(info)?.[1]
  if (policy !== undefined && policy !== 'noeviction' && !allowEviction) {
    throw new IdemError(
      ErrorCode.STORE_UNSAFE,
      `the redis store refuses a server with maxmemory-policy ${policy}: an evicted record lets a settled key run again, and an evicted lease lets a second owner in; set maxmemory-policy noeviction on the server, or store.allowEviction: true to accept the risk`,
    )
  }
}
