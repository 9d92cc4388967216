import { DelayedError, UnrecoverableError, type Job } from 'bullmq'
import type { Engine } from '../../engine.js'
import { ConfigError, describe, ErrorCode, IdemError } from '../../errors.js'
import { Verdict, type Message, type Outcome } from '../../message.js'
import { JobBatcher } from './job-batcher.js'
import { JobAction, resolveProcessorOptions, type IdemProcessorOptions, type JobHandler, type JobSettlement, type ProcessorConfig } from './options.js'

/** Counts of one processor (or consumer), by what happened to each job. */
export interface ProcessorStats {
  /** Jobs completed: handler ran and committed, duplicates, and done keys whose result was not kept. */
  completed: number
  /** Of the completed jobs: those whose handler ran here. */
  new: number
  /** Of the completed jobs: duplicates, completed without running the handler. */
  duplicates: number
  /** Jobs moved back to the delayed set (each move counts; no attempt is used): in-flight keys, and commits the store did not take. */
  retriedInFlight: number
  /** Jobs failed for good without retries: conflict or invalid (UnrecoverableError). */
  rejected: number
  /** Handler threw: the claim was released and the error thrown to BullMQ (retried while attempts remain). */
  handlerErrors: number
  /** Handler ran but its key was not settled: LEASE_LOST (thrown) or a commit the store or actor did not take (delayed). */
  settleErrors: number
  /** Jobs this processor failed or handed back to BullMQ's attempts: rejected, handler errors and LEASE_LOST. */
  failed: number
}

/** A BullMQ processor made idempotent, with its counts. */
export interface IdemProcessor<D = unknown, R = unknown> {
  (job: Job<D>, token?: string, signal?: AbortSignal): Promise<R | undefined>
  stats(): ProcessorStats
}

export function emptyStats(): ProcessorStats {
  return { completed: 0, new: 0, duplicates: 0, retriedInFlight: 0, rejected: 0, handlerErrors: 0, settleErrors: 0, failed: 0 }
}

/**
 * The one place that decides what becomes of a job, given its outcome
 * (DESIGN.md §3, "what a transport does"):
 *
 * - `new` without error: completed with the handler's result.
 * - `new` with RESULT_TOO_LARGE / RESULT_NOT_SERIALIZABLE: the key IS done, so
 *   completed; retrying would only find a duplicate.
 * - `new` with HANDLER_FAILED (claim released) or LEASE_LOST (commit refused:
 *   the key is not done, another owner may hold it): thrown, so BullMQ's
 *   attempts retry it.
 * - `new` with STORE_FAILED, WORKER_DIED or ACTOR_FAILED: the handler ran but
 *   its commit never reached the store (after STORE_FAILED the engine keeps
 *   it and applies it late once the store is back; after a thread death it is
 *   gone and the lease must lapse). Nothing is wrong with the job, so it must not use up an
 *   attempt and end failed: delayed, and its redelivery finds the key done
 *   (duplicate), still held (in-flight, delayed again), or free after the lease
 *   lapsed (run again: the effect-before-commit window of DESIGN.md §4.2).
 * - `duplicate`: completed without running the handler.
 * - `in-flight`: another owner holds the lease, or the store could not answer.
 *   Never completed (that could lose the message if the owner fails), never
 *   failed (nothing is wrong with the job): delayed, which costs no attempt.
 *   Except WORKER_DIED: a handler module may have killed its thread, so the
 *   job is thrown and uses an attempt; a poison job ends in the failed set
 *   instead of crashing the thread forever (its batch-mates retry too).
 * - `conflict`, `invalid`: retrying cannot help: failed, unrecoverable.
 */
export function jobActionOf(outcome: Outcome): JobAction {
  switch (outcome.verdict) {
    case Verdict.NEW:
      switch (outcome.error?.code) {
        case undefined:
        case ErrorCode.RESULT_TOO_LARGE:
        case ErrorCode.RESULT_NOT_SERIALIZABLE:
          return JobAction.COMPLETED
        case ErrorCode.STORE_FAILED:
        case ErrorCode.WORKER_DIED:
        case ErrorCode.ACTOR_FAILED:
          return JobAction.DELAYED
        default:
          return JobAction.THROWN
      }
    case Verdict.DUPLICATE:
      return JobAction.COMPLETED
    case Verdict.IN_FLIGHT:
      return outcome.error?.code === ErrorCode.WORKER_DIED ? JobAction.THROWN : JobAction.DELAYED
    case Verdict.CONFLICT:
    case Verdict.INVALID:
      return JobAction.REJECTED
  }
}

/**
 * Wraps a BullMQ processor so its effect happens once per idempotency key,
 * however often BullMQ delivers the key (producer resends, stalled-job
 * redelivery, retries). Give the result to a BullMQ Worker:
 *
 * ```ts
 * new Worker('orders', idemProcessor(engine, chargeCard, { keyOf: (job) => job.data.orderId }), { connection, concurrency: 256 })
 * ```
 *
 * Run it with a high concurrency: the jobs that arrive in one turn of the event
 * loop go to the engine as one batch (job-batcher.ts) and share store round
 * trips. Throws ConfigError naming every bad option.
 */
export function idemProcessor<D = unknown, R = unknown>(engine: Engine, handler: JobHandler<D, R>, options: IdemProcessorOptions<D>): IdemProcessor<D, R> {
  const problems: string[] = []
  const config = resolveProcessorOptions<D>(engine, handler, options, problems)
  if (problems.length > 0) throw new ConfigError(problems)
  const stats = emptyStats()
  const { onSettled } = config
  const batcher = new JobBatcher(engine)

  const settle = (job: Job<D>, started: number, key: unknown, action: JobAction, outcome: Outcome | undefined, code: ErrorCode | undefined): void => {
    switch (action) {
      case JobAction.COMPLETED:
        stats.completed++
        if (outcome?.verdict === Verdict.DUPLICATE) stats.duplicates++
        else stats.new++
        break
      case JobAction.DELAYED:
        stats.retriedInFlight++
        if (outcome?.verdict === Verdict.NEW) stats.settleErrors++
        break
      case JobAction.REJECTED:
        stats.rejected++
        stats.failed++
        break
      case JobAction.THROWN:
        if (code === ErrorCode.HANDLER_FAILED) stats.handlerErrors++
        else if (outcome !== undefined) stats.settleErrors++
        stats.failed++
    }
    if (onSettled === undefined) return
    const settlement: JobSettlement = {
      jobId: job.id,
      key: key === undefined ? undefined : String(key),
      verdict: outcome?.verdict,
      action,
      ms: performance.now() - started,
    }
    if (code !== undefined) settlement.code = code
    try {
      onSettled(settlement)
    } catch {
      // A reporting callback must not change what becomes of the job (a done key failed by a metrics bug).
    }
  }

  const run = async (job: Job<D>, token: string | undefined, signal: AbortSignal | undefined): Promise<R | undefined> => {
    const started = performance.now()
    let message: Message
    try {
      message = messageOf(job, config)
    } catch (error) {
      settle(job, started, (error as KeyOfError).key, JobAction.REJECTED, undefined, ErrorCode.INVALID_MESSAGE)
      throw rejection(ErrorCode.INVALID_MESSAGE, describe(error))
    }

    // The handler's own error object: rethrown as is, so BullMQ records the
    // user's message and stack, and a user's UnrecoverableError stays unrecoverable.
    let handlerError: { error: unknown } | undefined
    let outcome: Outcome
    try {
      outcome = await batcher.process(message, async (context) => {
        try {
          return await handler(job, token, signal, context)
        } catch (error) {
          handlerError = { error }
          throw error
        }
      })
    } catch (error) {
      // The engine refused the call itself (ENGINE_CLOSED: a consumer outliving its engine); no claim was made.
      settle(job, started, message.key, JobAction.THROWN, undefined, error instanceof IdemError ? error.code : undefined)
      throw error
    }
    const code = outcome.error?.code
    const action = jobActionOf(outcome)
    settle(job, started, message.key, action, outcome, code)
    switch (action) {
      case JobAction.COMPLETED:
        // A result JSON cannot hold would fail BullMQ's own completion too.
        return code === ErrorCode.RESULT_NOT_SERIALIZABLE ? undefined : (outcome.result as R | undefined)
      case JobAction.DELAYED:
        await job.moveToDelayed(Date.now() + inFlightDelayOf(job, config), token)
        throw new DelayedError(`${code ?? ErrorCode.IN_FLIGHT}: ${outcome.error?.message ?? 'in flight'}`)
      case JobAction.REJECTED:
        throw rejection(code ?? ErrorCode.INVALID_MESSAGE, outcome.error?.message ?? outcome.verdict)
      case JobAction.THROWN:
        if (code === ErrorCode.HANDLER_FAILED && handlerError !== undefined) throw handlerError.error
        throw new IdemError(code!, `${code}: ${outcome.error!.message}`, { key: outcome.key, cause: outcome.error })
    }
  }
  // BullMQ gives a processor an AbortSignal (one AbortController per job, and
  // its cancellation bookkeeping) only when the processor declares a third
  // parameter: declare it exactly when the user's handler does.
  const processor =
    handler.length >= 3 ? (job: Job<D>, token?: string, signal?: AbortSignal) => run(job, token, signal) : (job: Job<D>, token?: string) => run(job, token, undefined)
  return Object.assign(processor, { stats: (): ProcessorStats => ({ ...stats }) })
}

/** keyOf, namespaceOf or fingerprintOf threw: the message names which; `key` is set when keyOf had answered. */
class KeyOfError extends Error {
  constructor(
    message: string,
    readonly key: unknown,
    cause: unknown,
  ) {
    super(message, { cause })
  }
}

function messageOf<D>(job: Job<D>, config: ProcessorConfig<D>): Message {
  let key: unknown
  const call = (name: string, fn: (job: Job<D>) => unknown): unknown => {
    try {
      return fn(job)
    } catch (error) {
      throw new KeyOfError(`${name} threw for job ${job.id}: ${describe(error)}`, key, error)
    }
  }
  key = call('keyOf', config.keyOf)
  const message = { key } as Message
  if (config.namespaceOf !== undefined) {
    const namespace = call('namespaceOf', config.namespaceOf)
    if (namespace !== undefined) message.namespace = namespace as string
  }
  if (config.fingerprintOf !== undefined) {
    const fingerprint = call('fingerprintOf', config.fingerprintOf)
    if (fingerprint !== undefined) message.fingerprint = fingerprint as string
  }
  return message
}

/**
 * initialMs·2^(n-1), capped, jittered into [d/2, d]. n counts the job's starts
 * without a recorded attempt (attemptsStarted − attemptsMade): BullMQ keeps both
 * in the job's hash, so the backoff grows across consumers and restarts, and a
 * delayed move (skipAttempt) never uses one of the job's attempts.
 */
export function inFlightDelayOf(job: Pick<Job, 'attemptsStarted' | 'attemptsMade'>, config: Pick<ProcessorConfig<unknown>, 'inFlightDelay'>): number {
  const { initialMs, maxMs } = config.inFlightDelay
  const n = Math.max(1, (job.attemptsStarted ?? 1) - (job.attemptsMade ?? 0))
  const delay = Math.min(maxMs, initialMs * 2 ** Math.min(n - 1, 30))
  return Math.ceil(delay / 2 + (Math.random() * delay) / 2)
}

/** A failure BullMQ will not retry; the reason starts with the idem code ("CONFLICT: …") and `code` holds it. */
function rejection(code: ErrorCode, message: string): UnrecoverableError & { code: ErrorCode } {
  return Object.assign(new UnrecoverableError(`${code}: ${message}`), { code })
}
