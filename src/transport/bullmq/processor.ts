import { DelayedError, UnrecoverableError, type Job } from 'bullmq'
import type { Redis } from 'ioredis'
import type { ErrorData } from '../../actor/protocol.js'
import type { Engine } from '../../engine.js'
import { ConfigError, ErrorCode, IdemError } from '../../errors.js'
import { messageOf, Verdict, type Message, type Outcome } from '../../message.js'
import { settleOf, Settle } from '../../outcome.js'
import { JobBatcher } from './job-batcher.js'
import { JobAction, resolveProcessorOptions, type IdemProcessorOptions, type JobHandler, type JobSettlement, type ProcessorConfig, type UnconfirmedCommit } from './options.js'

/** Counts of one processor (or consumer), by what happened to each job. */
export interface ProcessorStats {
  /** Jobs completed: handler ran and committed, duplicates, and done keys whose result was not kept. */
  completed: number
  /** Of the completed jobs: those whose handler ran here. */
  new: number
  /** Of the completed jobs: duplicates (and stale versions), completed without running the handler. */
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
  /**
   * Completed jobs whose commit rode the Worker's connection and was then
   * refused (LEASE_LOST: another owner may run the key again) or failed (applied
   * again through the store). Each is also reported to onCommitUnconfirmed.
   */
  commitsUnconfirmed: number
}


/** A BullMQ processor made idempotent, with its counts. */
export interface IdemProcessor<D = unknown, R = unknown> {
  (job: Job<D>, token?: string, signal?: AbortSignal): Promise<R | undefined>
  stats(): ProcessorStats
  /**
   * Lets commits ride `client`, the connection the Worker completes jobs on
   * (`await worker.client`), when the engine's Redis store is on the same
   * server: a job then completes without waiting for its commit's reply, and
   * Redis applies the commit first. createConsumer does this by itself.
   * Answers whether commits ride.
   */
  carryCommitsOn(client: Redis): boolean
}

export function emptyStats(): ProcessorStats {
  return { completed: 0, new: 0, duplicates: 0, retriedInFlight: 0, rejected: 0, handlerErrors: 0, settleErrors: 0, failed: 0, commitsUnconfirmed: 0 }
}

/** What becomes of a job, by settleOf (src/outcome.ts): the one place that decides it for every transport. */
const jobActions = {
  [Settle.DONE]: JobAction.COMPLETED,
  [Settle.RETRY]: JobAction.THROWN,
  [Settle.WAIT]: JobAction.DELAYED,
  [Settle.REJECT]: JobAction.REJECTED,
} as const

export function jobActionOf(outcome: Outcome): JobAction {
  return jobActions[settleOf(outcome)]
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
  const { onSettled, onCommitUnconfirmed } = config
  const batcher = new JobBatcher(engine)

  const settle = (job: Job<D>, started: number, key: unknown, action: JobAction, outcome: Outcome | undefined, code: ErrorCode | undefined): void => {
    switch (action) {
      case JobAction.COMPLETED:
        stats.completed++
        if (outcome?.verdict === Verdict.DUPLICATE || outcome?.verdict === Verdict.STALE) stats.duplicates++
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
      message = messageOf(job, config, jobName)
    } catch (error) {
      settle(job, started, (error as IdemError).key, JobAction.REJECTED, undefined, ErrorCode.INVALID_MESSAGE)
      throw rejection(ErrorCode.INVALID_MESSAGE, (error as IdemError).message)
    }

    // The handler's own error object: rethrown as is, so BullMQ records the
    // user's message and stack, and a user's UnrecoverableError stays unrecoverable.
    let handlerError: { error: unknown } | undefined
    let outcome: Outcome
    const unconfirmed = (error: ErrorData): void => {
      stats.commitsUnconfirmed++
      const report: UnconfirmedCommit = { jobId: job.id, key: message.key, code: error.code, message: error.message }
      if (onCommitUnconfirmed === undefined) warnUnconfirmed(report)
      else {
        try {
          onCommitUnconfirmed(report)
        } catch {
          // A reporting callback cannot change a job that is completed already.
        }
      }
    }
    try {
      outcome = await batcher.process(
        message,
        async (context) => {
          try {
            return await handler(job, token, signal, context)
          } catch (error) {
            handlerError = { error }
            throw error
          }
        },
        unconfirmed,
      )
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
  return Object.assign(processor, { stats: (): ProcessorStats => ({ ...stats }), carryCommitsOn: (client: Redis) => batcher.carryCommitsOn(client) })
}

/** An unconfirmed commit nobody listens for is still reported: a process warning. */
export function warnUnconfirmed(commit: UnconfirmedCommit): void {
  process.emitWarning(`job ${commit.jobId} (key ${JSON.stringify(commit.key)}) completed, but ${commit.code}: ${commit.message}`, { code: 'IDEM_COMMIT_UNCONFIRMED' })
}

/** How a failed job is named in the message of a keyOf (namespaceOf, fingerprintOf) that threw. */
function jobName(job: Job): string {
  return `job ${job.id}`
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
