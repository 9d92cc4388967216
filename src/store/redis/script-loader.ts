import { readFileSync } from 'node:fs'
import type { Cluster, Redis } from 'ioredis'

/**
 * The one way idem's Lua reaches Redis, for the store and the streams
 * transport alike: each script is a `.lua` file beside the module that uses
 * it (a header lists KEYS, ARGV and the reply), read once per process and
 * defined as an ioredis command, which sends EVALSHA and loads the script
 * again after NOSCRIPT (a restarted or failed-over server).
 */
export function readLua(moduleUrl: string, file: string): string {
  return readFileSync(new URL(file, moduleUrl), 'utf8')
}

export interface ScriptDefinition {
  lua: string
  /** Keys the command declares before its arguments; omit for a script that takes the count as its first argument. */
  numberOfKeys?: number
}

/** Defines each script on the client unless it has it already (a client the user shares between consumers). */
export function defineScripts(client: Redis | Cluster, scripts: Record<string, ScriptDefinition>): void {
  for (const [name, definition] of Object.entries(scripts)) {
    if (typeof (client as unknown as Record<string, unknown>)[name] !== 'function') client.defineCommand(name, definition)
  }
}
