import type { Engine } from '../../engine.js'
import type { HandlerContext, Message, Outcome } from '../../message.js'

type RunJob = (context: HandlerContext) => unknown

interface Pending {
  message: Message
  run: RunJob
  resolve: (outcome: Outcome) => void
  reject: (error: unknown) => void
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

  constructor(private readonly engine: Engine) {}

  process(message: Message, run: RunJob): Promise<Outcome> {
    return new Promise<Outcome>((resolve, reject) => {
      this.pending.push({ message, run, resolve, reject })
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
    // Each job settles as soon as its outcome is final: a duplicate does not hold its BullMQ slot while the batch's new keys commit.
    this.engine.submit(
      messages,
      (message, context) => batch[message.payload as number].run(context),
      (i, outcome) => batch[i].resolve(outcome),
    ).catch((error: unknown) => {
      for (const p of batch) p.reject(error)
    })
  }
}
