import { Redis } from 'ioredis'
import { errorText, ErrorCode, IdemError } from '../../errors.js'
import { withRetries } from '../../retry.js'
import { replyKind } from '../../store/redis/redis-errors.js'
import { defineScripts, readLua } from '../../store/redis/script-loader.js'
import { deadLetterFields, entriesOfReclaim, partsOfRead, type DeadLetter, type Reclaimed, type StreamEntry, type StreamPart } from './entry.js'

const scripts = {
  idemStreamReclaim: { lua: readLua(import.meta.url, 'reclaim.lua'), numberOfKeys: 1 },
  idemStreamDeadLetter: { lua: readLua(import.meta.url, 'dead-letter.lua'), numberOfKeys: 2 },
}

type ScriptClient = Redis & {
  idemStreamReclaim(stream: string, group: string, consumer: string, minIdleMs: number, cursor: string, count: number): Promise<unknown>
  idemStreamDeadLetter(stream: string, dead: string, group: string, ...entries: string[]): Promise<string>
}

/** One settlement of a batch's entries of one stream: every settlement of a batch goes out in one pipeline (one round trip). */
export interface Settlement {
  stream: string
  acks: string[]
  deadLetters: DeadLetter[]
  /** In-flight entries: aged so that a reclaim takes them up after inFlightDelayMs, their delivery count kept. */
  waits: StreamEntry[]
  /** Failed entries: aged so that a reclaim takes them up after retryDelayMs, as their next delivery. */
  retries: StreamEntry[]
}

export interface StreamClientConfig {
  group: string
  consumer: string
  deadLetterStream: string
  claimIdleMs: number
  inFlightDelayMs: number
  retryDelayMs: number
}

const SETTLE_RETRIES = 3
const SETTLE_BACKOFF_MS = 50

/**
 * Every Redis call the streams consumer makes, on two connections: `reader`
 * only ever runs the blocking XREADGROUP (a blocked connection answers
 * nothing else), `commands` runs the rest — acks, dead letters, reclaims,
 * touches — in call order, which the consumer relies on (a touch sent before
 * a batch's settlement is applied before it).
 */
export class StreamClient {
  readonly commands: ScriptClient
  private readonly reader: Redis
  private readonly ownsCommands: boolean
  private readerId: number | undefined

  constructor(connection: string | Redis, private readonly config: StreamClientConfig) {
    if (typeof connection === 'string') {
      this.commands = new Redis(connection) as ScriptClient
      this.reader = new Redis(connection)
      this.ownsCommands = true
    } else {
      this.commands = connection as ScriptClient
      this.reader = connection.duplicate()
      this.ownsCommands = false
    }
    // ioredis reports connection errors as events too; the calls that hit them fail, are reported and retried.
    if (this.ownsCommands) this.commands.on('error', () => {})
    this.reader.on('error', () => {})
    // A new connection has a new client id: fetched again before the next read, so close() can unblock it.
    this.reader.on('ready', () => (this.readerId = undefined))
    defineScripts(this.commands, scripts)
  }

  /** Creates the group on `stream` (and the stream, MKSTREAM) unless it exists. */
  async ensureGroup(stream: string, startId: string): Promise<void> {
    const { group } = this.config
    try {
      await this.commands.call('XGROUP', 'CREATE', stream, group, startId, 'MKSTREAM')
    } catch (error) {
      if (replyKind(error) !== 'BUSYGROUP') throw error
    }
  }

  /**
   * Up to `count` entries of each stream never delivered to the group, in one
   * XREADGROUP over all the streams, waiting up to blockMs for the first.
   */
  async read(streams: readonly string[], count: number, blockMs: number): Promise<StreamPart[]> {
    const { group, consumer } = this.config
    if (this.readerId === undefined) this.readerId = Number(await this.reader.call('CLIENT', 'ID'))
    return partsOfRead(await this.reader.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'BLOCK', blockMs, 'STREAMS', ...streams, ...streams.map(() => '>')))
  }

  /**
   * Ends a blocked read now (it returns no entries, as on a timeout). False
   * when no read was blocked at that moment (not sent yet, or still on its
   * way to the server) or when it could not be asked: the caller tries again.
   */
  async unblockReader(): Promise<boolean> {
    if (this.readerId === undefined) return false
    try {
      return Number(await this.commands.call('CLIENT', 'UNBLOCK', this.readerId)) === 1
    } catch {
      return false
    }
  }

  /** Takes over up to `count` entries of `stream` pending for at least claimIdleMs, from `cursor`, with their delivery counts. */
  async reclaim(stream: string, cursor: string, count: number): Promise<Reclaimed> {
    const { group, consumer, claimIdleMs } = this.config
    return entriesOfReclaim(await this.commands.idemStreamReclaim(stream, group, consumer, claimIdleMs, cursor, count))
  }

  /** Resets the idle time of entries this consumer is still working on, so no one takes them over (delivery count unchanged). */
  async touch(parts: readonly { stream: string; ids: readonly string[] }[]): Promise<void> {
    const { group, consumer } = this.config
    const pipeline = this.commands.pipeline()
    for (const { stream, ids } of parts) if (ids.length > 0) pipeline.call('XCLAIM', stream, group, consumer, 0, ...ids, 'JUSTID')
    if (pipeline.length === 0) return
    const replies = (await pipeline.exec()) ?? []
    const failed = replies.find(([error]) => error !== null)
    if (failed !== undefined) throw failed[0]
  }

  /**
   * Acks, dead-letters and ages one batch's entries (of every stream it read)
   * in one pipeline, retried as a whole on failure: XACK and XCLAIM are safe
   * to repeat, and the dead-letter script writes a letter only for an entry
   * its own ack removed. Returns, per settlement and per dead letter, whether
   * this call moved it.
   */
  async settle(settlements: readonly Settlement[]): Promise<boolean[][]> {
    const { group, consumer, deadLetterStream, claimIdleMs, inFlightDelayMs, retryDelayMs } = this.config
    return withRetries(
      async () => {
        const pipeline = this.commands.pipeline()
        /** Per settlement, the index of its dead-letter reply in the pipeline (-1: none). */
        const letterReplies: number[] = []
        for (const { stream, acks, deadLetters, waits, retries } of settlements) {
          if (acks.length > 0) pipeline.call('XACK', stream, group, ...acks)
          letterReplies.push(deadLetters.length > 0 ? pipeline.length : -1)
          if (deadLetters.length > 0) (pipeline as unknown as ScriptClient).idemStreamDeadLetter(stream, deadLetterStream, group, ...letterArgsOf(deadLetters, group, consumer))
          // Aged, not re-run here: the entry stays in the pending list (a crash loses nothing) and its
          // idle time is set so that XAUTOCLAIM — this consumer's or another's — takes it up after the delay.
          if (retries.length > 0) pipeline.call('XCLAIM', stream, group, consumer, 0, ...retries.map((e) => e.id), 'IDLE', claimIdleMs - retryDelayMs, 'JUSTID')
          // An in-flight retry is not a delivery: XAUTOCLAIM will add one, so the count is set one lower first.
          for (const [deliveries, ids] of byDeliveries(waits)) {
            pipeline.call('XCLAIM', stream, group, consumer, 0, ...ids, 'IDLE', claimIdleMs - inFlightDelayMs, 'RETRYCOUNT', Math.max(0, deliveries - 1), 'JUSTID')
          }
        }
        if (pipeline.length === 0) return settlements.map(() => [])
        const replies = (await pipeline.exec()) ?? []
        const failed = replies.find(([error]) => error !== null)
        if (failed !== undefined) throw failed[0]
        return settlements.map(({ deadLetters }, k) => {
          if (letterReplies[k] < 0) return []
          const moved = replies[letterReplies[k]][1] as string
          return deadLetters.map((_, i) => moved.charCodeAt(i) === 0x31)
        })
      },
      { retries: SETTLE_RETRIES, backoffMs: SETTLE_BACKOFF_MS },
      { exhausted: (error) => transportError('settle (XACK, dead letters, XCLAIM)', error) },
    )
  }

  /** Closes the reader, and the command connection when the consumer opened it. */
  async close(): Promise<void> {
    const quit = async (client: Redis): Promise<void> => {
      try {
        await client.quit()
      } catch {
        client.disconnect()
      }
    }
    await Promise.all([quit(this.reader), this.ownsCommands ? quit(this.commands) : undefined])
  }

  /** Drops the reader's connection at once (a read that would not end). */
  disconnectReader(): void {
    this.reader.disconnect()
  }
}

/** The dead-letter script's arguments: per letter, its id, the count of its field/value words, then the words. */
function letterArgsOf(deadLetters: readonly DeadLetter[], group: string, consumer: string): string[] {
  const args: string[] = []
  for (const letter of deadLetters) {
    const pairs = deadLetterFields(letter, group, consumer)
    args.push(letter.id, String(pairs.length), ...pairs)
  }
  return args
}

function byDeliveries(entries: readonly StreamEntry[]): Map<number, string[]> {
  const groups = new Map<number, string[]>()
  for (const entry of entries) {
    let ids = groups.get(entry.deliveries)
    if (ids === undefined) groups.set(entry.deliveries, (ids = []))
    ids.push(entry.id)
  }
  return groups
}

export function transportError(operation: string, error: unknown): IdemError {
  if (error instanceof IdemError) return error
  return new IdemError(ErrorCode.TRANSPORT_FAILED, `redis streams ${operation} failed: ${errorText(error)}`, { cause: error })
}
