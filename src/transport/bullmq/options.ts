import type { ConnectionOptions, Job, WorkerOptions } from 'bullmq'
import type { Engine } from '../../engine.js'
import { ConfigError, type ErrorCode } from '../../errors.js'
import type { HandlerContext, Verdict } from '../../message.js'

/**
 * The user's BullMQ processor: the business effect of one job. BullMQ's three
 * arguments, plus the engine's handler context (the claim this run holds, for
 * stores that write DONE inside the handler's own transaction). As with BullMQ,
 * `signal` is only given to a handler that declares it (three or more
 * parameters): BullMQ builds an AbortController per job only for those.
 */
export type JobHandler<D = unknown, R = unknown> = (job: Job<D>, token?: string, signal?: AbortSignal, context?: HandlerContext) => R | Promise<R>

/** What the processor did with one job. */
export const JobAction = {
  /** Returned to BullMQ: the job completes (handler ran and committed, or a duplicate, or a done key whose result was not kept). */
  COMPLETED: 'completed',
  /** Moved to BullMQ's delayed set: another owner holds the key (or the store could not answer). Costs no attempt. */
  DELAYED: 'delayed',
  /** Failed without retries (UnrecoverableError): conflict or bad input. */
  REJECTED: 'rejected',
  /** Thrown to BullMQ, which retries while the job has attempts left: the handler threw, or the commit was refused. */
  THROWN: 'thrown',
} as const
export type JobAction = (typeof JobAction)[keyof typeof JobAction]

/** One settled job, as `onSettled` and the consumer's `settled` event report it. */
export interface JobSettlement {
  jobId: string | undefined
  /** The key keyOf gave (as a string, for reports); undefined when keyOf threw. */
  key: string | undefined
  /** The engine's verdict; undefined when keyOf, namespaceOf or fingerprintOf threw. */
  verdict: Verdict | undefined
  action: JobAction
  /** The idem code of the outcome's error, when there was one. */
  code?: ErrorCode
  /** Time in the processor, engine round trip and handler included, in ms. */
  ms: number
}

/** Options of `idemProcessor`, and the idem part of `createConsumer`'s options. */
export interface IdemProcessorOptions<D = unknown> {
  /**
   * The idempotency key of a job, e.g. `(job) => job.data.orderId`. Required.
   * Not BullMQ's job id: every copy a producer adds gets its own id, so ids never
   * repeat where duplicates do. A key that is not a non-empty string of at most
   * 1024 UTF-8 bytes fails the job (INVALID_KEY, no retry); a keyOf that throws
   * fails it with INVALID_MESSAGE.
   */
  keyOf: (job: Job<D>) => unknown
  /**
   * A digest of the payload. A job whose key is already settled with another
   * fingerprint fails with CONFLICT instead of completing as a duplicate.
   * Returning undefined sends no fingerprint. @default none
   */
  fingerprintOf?: (job: Job<D>) => unknown
  /** A tenant or namespace: the same key under two namespaces is two keys. Returning undefined means none. @default none */
  namespaceOf?: (job: Job<D>) => unknown
  /**
   * Backoff of in-flight jobs (another owner holds the key's lease). The job goes
   * back to BullMQ's delayed set, which costs no attempt, after initialMs·2^(n-1)
   * (n: starts of the job without a recorded attempt, so it grows across
   * consumers), capped at maxMs, with jitter in [delay/2, delay]. The cap bounds
   * how long a job waits after the owner finished; a crashed owner's claim frees
   * itself after the engine's leaseMs.
   * @default { initialMs: 100, maxMs: 5000 }
   */
  inFlightDelay?: { initialMs?: number; maxMs?: number }
  /** Called once per settled job (counting, metrics, logs). Keep it cheap: it runs on every job. What it throws is ignored: it never changes what becomes of the job. */
  onSettled?: (settlement: JobSettlement) => void
}

/** Options of `createConsumer`: the idem options, plus any BullMQ WorkerOptions (passed through). */
export interface ConsumerOptions<D = unknown, R = unknown> extends IdemProcessorOptions<D>, Omit<WorkerOptions, 'connection' | 'concurrency'> {
  /** Name of the BullMQ queue to consume. */
  queue: string
  /** BullMQ connection: `{ host, port }`, `{ url }`, or an ioredis client (with maxRetriesPerRequest: null). */
  connection: ConnectionOptions
  /** The idem engine deciding verdicts. Consumers in several processes share one store (e.g. Redis with one prefix). The consumer never closes it. */
  engine: Engine
  /** The business effect of one job. */
  handler: JobHandler<D, R>
  /**
   * Jobs in the processor at once. High by default: the engine batches
   * concurrent jobs per shard, so store round trips are shared by many jobs
   * (with BullMQ's default of 1, every job would cost its own round trip), and
   * a new job holds its slot for three Redis round trips (claim, commit,
   * BullMQ's completion) where a raw Worker's job holds it for one. Measured
   * here, 256 and 1024 give idem about the same rate, and 1024 doubles the
   * time a job waits in the processor.
   * @default 256
   */
  concurrency?: number
  /**
   * BullMQ's job lock, in ms; at least the engine's leaseMs, so that when BullMQ
   * hands a stalled job to another consumer, the dead owner's claim has lapsed
   * too and the redelivery can claim it at once.
   * @default max(30000, engine.config.leaseMs)
   */
  lockDuration?: number
  /** How often the `progress` event fires while jobs are being settled, in ms. @default 1000 */
  progressIntervalMs?: number
}

/** Processor options after defaults and validation. */
export interface ProcessorConfig<D> {
  keyOf: (job: Job<D>) => unknown
  fingerprintOf?: (job: Job<D>) => unknown
  namespaceOf?: (job: Job<D>) => unknown
  inFlightDelay: { initialMs: number; maxMs: number }
  onSettled?: (settlement: JobSettlement) => void
}

export const defaults = {
  inFlightDelay: { initialMs: 100, maxMs: 5000 },
  concurrency: 256,
  lockDurationMs: 30_000,
  progressIntervalMs: 1000,
} as const

/** Validates the idem part of the options, pushing one line per bad field. */
export function resolveProcessorOptions<D>(engine: unknown, handler: unknown, options: unknown, problems: string[]): ProcessorConfig<D> {
  if (!isEngine(engine)) problems.push(`engine: must be an idem Engine (from createEngine), got ${show(engine)}`)
  if (typeof handler !== 'function') problems.push(`handler: must be a function (job, token) => result, got ${show(handler)}`)
  if (options === null || typeof options !== 'object') {
    problems.push(`options: must be an object with at least keyOf, got ${show(options)}`)
    return { keyOf: () => undefined, inFlightDelay: { ...defaults.inFlightDelay } }
  }
  const o = options as Record<string, unknown>
  const fn = (field: string, required: boolean): void => {
    const value = o[field]
    if (value === undefined && !required) return
    if (typeof value !== 'function') problems.push(`${field}: must be a function of the job, got ${show(value)}`)
  }
  fn('keyOf', true)
  fn('fingerprintOf', false)
  fn('namespaceOf', false)
  fn('onSettled', false)

  let initialMs: number = defaults.inFlightDelay.initialMs
  let maxMs: number = defaults.inFlightDelay.maxMs
  if (o.inFlightDelay !== undefined) {
    const d = o.inFlightDelay as Record<string, unknown> | null
    if (d === null || typeof d !== 'object') problems.push(`inFlightDelay: must be an object { initialMs?, maxMs? }, got ${show(d)}`)
    else {
      initialMs = integer(problems, 'inFlightDelay.initialMs', d.initialMs, initialMs, 1, 3_600_000)
      maxMs = integer(problems, 'inFlightDelay.maxMs', d.maxMs, Math.max(maxMs, initialMs), 1, 3_600_000)
      if (maxMs < initialMs) problems.push(`inFlightDelay.maxMs: must be at least inFlightDelay.initialMs (${initialMs}), got ${maxMs}`)
    }
  }
  return {
    keyOf: o.keyOf as ProcessorConfig<D>['keyOf'],
    ...(o.fingerprintOf === undefined ? {} : { fingerprintOf: o.fingerprintOf as ProcessorConfig<D>['fingerprintOf'] }),
    ...(o.namespaceOf === undefined ? {} : { namespaceOf: o.namespaceOf as ProcessorConfig<D>['namespaceOf'] }),
    inFlightDelay: { initialMs, maxMs },
    ...(o.onSettled === undefined ? {} : { onSettled: o.onSettled as ProcessorConfig<D>['onSettled'] }),
  }
}

/** Consumer options after defaults and validation, split into what idem uses and what BullMQ's Worker gets. */
export interface ConsumerConfig<D, R> {
  queue: string
  engine: Engine
  handler: JobHandler<D, R>
  processor: ProcessorConfig<D>
  progressIntervalMs: number
  worker: WorkerOptions
}

const idemFields = ['queue', 'engine', 'handler', 'keyOf', 'fingerprintOf', 'namespaceOf', 'inFlightDelay', 'onSettled', 'progressIntervalMs']

/** Validates createConsumer's options once; throws one ConfigError naming every bad field. */
export function resolveConsumerOptions<D, R>(options: ConsumerOptions<D, R>): ConsumerConfig<D, R> {
  const problems: string[] = []
  if (options === null || typeof options !== 'object') throw new ConfigError([`options: must be an object, got ${show(options)}`])
  const o = options as unknown as Record<string, unknown>
  const processor = resolveProcessorOptions<D>(o.engine, o.handler, o, problems)
  if (typeof o.queue !== 'string' || o.queue.length === 0) problems.push(`queue: must be a non-empty queue name, got ${show(o.queue)}`)
  if (o.connection === null || typeof o.connection !== 'object') problems.push(`connection: must be BullMQ connection options or an ioredis client, got ${show(o.connection)}`)
  const concurrency = integer(problems, 'concurrency', o.concurrency, defaults.concurrency, 1, 65_536)
  const leaseMs = isEngine(o.engine) ? o.engine.config.leaseMs : 0
  const lockDuration = integer(problems, 'lockDuration', o.lockDuration, Math.max(defaults.lockDurationMs, leaseMs), 1, 2 ** 31 - 1)
  if (lockDuration < leaseMs) {
    problems.push(`lockDuration: must be at least the engine's leaseMs (${leaseMs}) so a stalled job is redelivered only after its claim lapsed, got ${lockDuration}`)
  }
  const progressIntervalMs = integer(problems, 'progressIntervalMs', o.progressIntervalMs, defaults.progressIntervalMs, 10, 3_600_000)
  if (problems.length > 0) throw new ConfigError(problems)

  const worker: Record<string, unknown> = {}
  for (const [field, value] of Object.entries(o)) if (!idemFields.includes(field)) worker[field] = value
  worker.concurrency = concurrency
  worker.lockDuration = lockDuration
  return {
    queue: o.queue as string,
    engine: o.engine as Engine,
    handler: o.handler as JobHandler<D, R>,
    processor,
    progressIntervalMs,
    worker: worker as unknown as WorkerOptions,
  }
}

function isEngine(value: unknown): value is Engine {
  const e = value as Engine | null | undefined
  return typeof e?.process === 'function' && typeof e.config?.leaseMs === 'number'
}

function integer(problems: string[], field: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    problems.push(`${field}: must be an integer from ${min} to ${max}, got ${show(value)}`)
    return fallback
  }
  return value
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`
}
