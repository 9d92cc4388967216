import type { ConnectionOptions, Job, WorkerOptions } from 'bullmq'
import type { Engine } from '../../engine.js'
import type { ErrorCode } from '../../errors.js'
import type { HandlerContext, Verdict } from '../../message.js'
import { fieldsOf, isEngine, mustBe, OptionReader, type Filled } from '../../validation.js'

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
  /** The key keyOf gave (as a string, for reports); undefined when keyOf threw, or gave no string before namespaceOf or fingerprintOf threw. */
  key: string | undefined
  /** The engine's verdict; undefined when keyOf, namespaceOf or fingerprintOf threw. */
  verdict: Verdict | undefined
  action: JobAction
  /** The idem code of the outcome's error, when there was one. */
  code?: ErrorCode
  /** Time in the processor, engine round trip and handler included, in ms. */
  ms: number
}

/** A job completed before its commit's reply, whose commit was then refused or failed (README, BullMQ). */
export interface UnconfirmedCommit {
  jobId: string | undefined
  key: string
  code: ErrorCode
  message: string
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
  /**
   * Called for a job completed before its commit's reply (the commit rode the
   * Worker's connection, see README "BullMQ") whose commit was then refused
   * (LEASE_LOST) or failed (STORE_FAILED: applied again through the store).
   * Without it, each is a process warning (code IDEM_COMMIT_UNCONFIRMED).
   */
  onCommitUnconfirmed?: (commit: UnconfirmedCommit) => void
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
   *
   * In owned mode this is per Worker, and the consumer runs one Worker per
   * partition its engine owns: a member's jobs in flight are concurrency ×
   * its partitions, so they grow as it takes partitions over, as its share of
   * the traffic does (a total split among Workers would change every Worker's
   * concurrency at each move, and the jobs of one busy partition could not use
   * the slots idle partitions leave). Each Worker also holds two Redis
   * connections of its own (BullMQ's client and its blocking one). With many
   * partitions per member, give a lower figure: 16 Workers × 16 matches one
   * strict Worker's 256 (bench/bullmq.bench.ts, owned table).
   * @default 256
   */
  concurrency?: number
  /**
   * BullMQ's job lock, in ms; at least the engine's leaseMs, so that when BullMQ
   * hands a stalled job to another consumer, the dead owner's claim has lapsed
   * too and the redelivery can claim it at once. In owned mode, at least
   * ownership.leaseMs: a dead member's jobs come back as its partitions move.
   * @default max(30000, engine.config.leaseMs); owned mode: engine.config.ownership.leaseMs
   */
  lockDuration?: number
  /** How often the `progress` event fires while jobs are being settled, in ms. @default 1000 */
  progressIntervalMs?: number
  /**
   * The engine's mode, said again where the consumer is made, so a consumer
   * written for owned mode fails loudly on a strict engine (and the other way
   * round). Left out, the consumer follows the engine: with an owned engine
   * it runs one Worker per owned partition queue (`${queue}-p${i}`), each with
   * this `concurrency`.
   */
  mode?: 'strict' | 'owned'
}

/** Processor options after defaults and validation. */
export type ProcessorConfig<D> = Filled<Omit<IdemProcessorOptions<D>, 'inFlightDelay'>, 'fingerprintOf' | 'namespaceOf' | 'onSettled' | 'onCommitUnconfirmed'> & {
  inFlightDelay: Required<NonNullable<IdemProcessorOptions<D>['inFlightDelay']>>
}

export const defaults = {
  inFlightDelay: { initialMs: 100, maxMs: 5000 },
  concurrency: 256,
  lockDurationMs: 30_000,
  progressIntervalMs: 1000,
} as const

/** Validates the idem part of the options, pushing one line per bad field. */
export function resolveProcessorOptions<D>(engine: unknown, handler: unknown, options: unknown, problems: string[]): ProcessorConfig<D> {
  if (!isEngine(engine)) problems.push(mustBe('engine', 'an idem Engine (from createEngine)', engine))
  if (typeof handler !== 'function') problems.push(mustBe('handler', 'a function (job, token) => result', handler))
  const o = new OptionReader(options, problems, undefined, 'an object with at least keyOf')
  const ofJob = 'a function of the job'
  const keyOf = o.function<ProcessorConfig<D>['keyOf']>('keyOf', ofJob, o.valid)
  const fingerprintOf = o.function<ProcessorConfig<D>['fingerprintOf']>('fingerprintOf', ofJob, false)
  const namespaceOf = o.function<ProcessorConfig<D>['namespaceOf']>('namespaceOf', ofJob, false)
  const onSettled = o.function<ProcessorConfig<D>['onSettled']>('onSettled', 'a function of the settlement', false)
  const onCommitUnconfirmed = o.function<ProcessorConfig<D>['onCommitUnconfirmed']>('onCommitUnconfirmed', 'a function of the unconfirmed commit', false)

  const delay = o.section('inFlightDelay', 'an object { initialMs?, maxMs? }')
  const initialMs = delay.integer('initialMs', defaults.inFlightDelay.initialMs, 1, 3_600_000)
  const maxMs = delay.integer('maxMs', Math.max(defaults.inFlightDelay.maxMs, initialMs), 1, 3_600_000)
  if (maxMs < initialMs) delay.mustBe('maxMs', `at least inFlightDelay.initialMs (${initialMs})`)
  return {
    keyOf: keyOf ?? (() => undefined),
    ...(fingerprintOf === undefined ? {} : { fingerprintOf }),
    ...(namespaceOf === undefined ? {} : { namespaceOf }),
    inFlightDelay: { initialMs, maxMs },
    ...(onSettled === undefined ? {} : { onSettled }),
    ...(onCommitUnconfirmed === undefined ? {} : { onCommitUnconfirmed }),
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

/** The options createConsumer takes for itself; every other one is BullMQ's and goes to its Worker. */
const idemFields = fieldsOf<IdemProcessorOptions & Pick<ConsumerOptions, 'queue' | 'engine' | 'handler' | 'progressIntervalMs' | 'mode'>>({
  queue: true,
  engine: true,
  handler: true,
  keyOf: true,
  fingerprintOf: true,
  namespaceOf: true,
  inFlightDelay: true,
  onSettled: true,
  onCommitUnconfirmed: true,
  progressIntervalMs: true,
  mode: true,
})

/** Validates createConsumer's options once; throws one ConfigError naming every bad field. */
export function resolveConsumerOptions<D, R>(options: ConsumerOptions<D, R>): ConsumerConfig<D, R> {
  const o = new OptionReader(options)
  o.check()
  const processor = resolveProcessorOptions<D>(o.value('engine'), o.value('handler'), options, o.problems)
  const queue = o.string('queue', undefined, 'a non-empty queue name')
  const connection = o.value('connection')
  if (connection === null || typeof connection !== 'object') o.mustBe('connection', 'BullMQ connection options or an ioredis client')
  const concurrency = o.integer('concurrency', defaults.concurrency, 1, 65_536)
  const engine = o.value('engine')
  const owned = isEngine(engine) && engine.config.mode === 'owned'
  // Owned mode has no key leases: a dead member's jobs come back once their lock lapses, as its partitions move after ownership.leaseMs.
  const leaseMs = !isEngine(engine) ? 0 : owned ? engine.config.ownership.leaseMs : engine.config.leaseMs
  const lockDuration = o.integer('lockDuration', owned ? leaseMs : Math.max(defaults.lockDurationMs, leaseMs), 1, 2 ** 31 - 1)
  if (lockDuration < leaseMs) o.mustBe('lockDuration', owned ? `at least the engine's ownership.leaseMs (${leaseMs}), so that a stalled job comes back only once its partition could have moved` : `at least the engine's leaseMs (${leaseMs}), so that a stalled job is redelivered only after its claim lapsed`)
  const progressIntervalMs = o.integer('progressIntervalMs', defaults.progressIntervalMs, 10, 3_600_000)
  if (o.has('mode')) {
    const mode = o.oneOf('mode', ['strict', 'owned'], 'strict')
    if (isEngine(engine) && engine.config.mode !== mode) o.mustBe('mode', `the engine's mode ('${engine.config.mode}'), as the consumer runs the engine's partitions in owned mode and one queue in strict mode`)
  }
  // Owned Workers are made and closed by the consumer as partitions move; one made with autorun false would never run, and its partition's jobs would wait for good.
  if (owned && o.has('autorun') && o.value('autorun') !== true) o.mustBe('autorun', 'left out (or true) in owned mode, where the consumer starts and closes one Worker per owned partition itself')
  if (o.has('queue') && isEngine(engine) && engine.config.mode === 'owned' && queue.includes(':')) o.mustBe('queue', 'a name without ":" in owned mode (partition queues are `${queue}-p${i}`; BullMQ refuses ":")')
  o.check()

  const worker: Record<string, unknown> = {}
  for (const [field, value] of Object.entries(options)) if (!idemFields.includes(field)) worker[field] = value
  worker.concurrency = concurrency
  worker.lockDuration = lockDuration
  return {
    queue,
    engine: engine as Engine,
    handler: o.value('handler') as JobHandler<D, R>,
    processor,
    progressIntervalMs,
    worker: worker as unknown as WorkerOptions,
  }
}
