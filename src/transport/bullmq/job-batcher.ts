import type { Redis } from 'ioredis'
import type { CommitRide } from '../../actor/shard-cycle.js'
import type { ErrorData } from '../../actor/protocol.js'
import type { Engine } from '../../engine.js'
import type { HandlerContext, Message, Outcome } from '../../message.js'

type RunJob = (context: HandlerContext) => unknown
/** Told when a commit that rode the Worker's connection was refused or failed after the job's outcome was handed out. */
export type OnUnconfirmed = (error: ErrorData) => void

interface Pending {
  message: Message
  run: RunJob
  resolve: (outcome: Outcome) => void
  reject: (error: unknown) => void
  unconfirmed: OnUnconfirmed
}

/**
 * Collects the jobs that reach the processor in one turn of the event loop
 * and hands them to the engine as one batch (engine.submit, processBatch
 * with each outcome handed out as soon as it is final).
 *
 * Why: BullMQ hands a worker its jobs one at a time (each completion fetches
 * the next), so with one engine.process() per job an idle shard lane starts a
 * batch of one for almost every job, and the per-batch work (routing, hashing,
 * decide/settle hops) is paid per job: about 20 µs of CPU per job here, half a
 * raw Worker's own cost. Replies that arrive together (one socket read holds
 * many) are processed in the same turn, so waiting for setImmediate gathers
 * them: batches of about a hundred jobs at concurrency 256, for one tick of
 * latency.
 *
 * Each message's payload is its position in the batch, so the one handler of
 * the call finds the job's own closure; the job's data never crosses into
 * the engine. Bad input is still per message (an invalid key fails its job, not
 * the batch); only a refused call (ENGINE_CLOSED) rejects every job of it.
 */
export class JobBatcher {
  private pending: Pending[] = []
  private scheduled = false
  /** The Worker's connection, once known and when the engine can commit on it (carryCommitsOn). */
  private client: Redis | undefined

  constructor(private readonly engine: Engine) {}

  /**
   * From now on, commits ride `client`, the connection the Worker completes
   * jobs on, when the engine's store is on its server (engine.canCommitOn):
   * Redis then applies a job's commit before its completion, and the job does
   * not wait for the commit's reply. Answers whether they do.
   */
  carryCommitsOn(client: Redis): boolean {
    this.client = this.engine.canCommitOn(client) ? client : undefined
    return this.client !== undefined
  }

  process(message: Message, run: RunJob, unconfirmed: OnUnconfirmed): Promise<Outcome> {
    return new Promise<Outcome>((resolve, reject) => {
      this.pending.push({ message, run, resolve, reject, unconfirmed })
      if (this.scheduled) return
      this.scheduled = true
      setImmediate(this.flush)
    })
  }

  private readonly flush = (): void => {
    this.scheduled = false
    const batch = this.pending
    this.pending = []
    // The messages are the batcher's own (built per job by the processor): marking them costs no copy.
    const messages = batch.map((p, i) => ((p.message.payload = i), p.message))
    const ride: CommitRide | undefined = this.client === undefined ? undefined : { client: this.client, unconfirmed: (i, error) => batch[i].unconfirmed(error) }
    // Each job settles as soon as its outcome is final: a duplicate does not hold its BullMQ slot while the batch's new keys commit.
    this.engine.submit(
      messages,
      (message, context) => batch[message.payload as number].run(context),
      (i, outcome) => batch[i].resolve(outcome),
      ride,
    ).then((outcomes) => this.engine.countSettled('bullmq', outcomes), (error: unknown) => {
      for (const p of batch) p.reject(error)
    })
  }
}
