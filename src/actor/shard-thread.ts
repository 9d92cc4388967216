import { Piscina } from 'piscina'
import type { EngineConfig } from '../config.js'
import { errorText, ErrorCode, IdemError } from '../errors.js'
import type { Message } from '../message.js'
import type { ActorPort } from './shard-cycle.js'
import type { ActorBatch, AdminReply, AdminRequest, BatchResult, Resolved, Settlement, StepReply, ThreadOp, ThreadReply, ThreadTask } from './protocol.js'
import type { ThreadData } from './thread-host.js'
import { CommitCode } from '../store/store.js'
import { MAX_RUNS_IN_FLIGHT } from './shard-lane.js'

const hostFile = new URL('./thread-host.js', import.meta.url).href

/**
 * One worker thread hosting a fixed set of shards, seen from the main thread
 * (inside, thread-host.ts serves it). Each has a piscina of its own held to a
 * single thread, so a shard's state always lives in the same thread; when that
 * thread dies piscina starts a new one and the shards rebuild there.
 */
export class ShardThread {
  private readonly piscina: Piscina
  private deaths = 0
  private closing = false

  constructor(config: EngineConfig, shardsHere: number) {
    // The reconcile hook stays here: a function does not cross (the worker's is the handler module's).
    // So do the metrics registry (the worker only times its store calls, by timeStoreCalls) and the audit log.
    const { reconcile: _, audit: __, metrics: ___, ...crossing } = config
    const workerData: ThreadData = { config: crossing }
    this.piscina = new Piscina({
      filename: hostFile,
      minThreads: 1,
      maxThreads: 1,
      idleTimeout: Number.POSITIVE_INFINITY,
      // Per shard: one step and one renewal from the main thread's cycle, and the module runs a lane keeps in flight.
      concurrentTasksPerWorker: Math.max(1, shardsHere) * (2 + MAX_RUNS_IN_FLIGHT),
      workerData,
    })
    // piscina replaces a thread that dies (minThreads: 1); each loss outside close() is a restart.
    this.piscina.on('workerDestroy', () => {
      if (!this.closing) this.deaths++
    })
  }

  /** Threads that died and were replaced. */
  get restarts(): number {
    return this.deaths
  }

  async ready(): Promise<void> {
    try {
      await this.piscina.run({ op: 'ready' } satisfies ThreadTask)
    } catch (error) {
      throw new IdemError(ErrorCode.HANDLER_LOAD_FAILED, errorText(error), { cause: error })
    }
  }

  portOf(shard: number): RemoteActorPort {
    return new RemoteActorPort(this, shard)
  }

  /** piscina's run() answers `any`: ThreadOps is what ties the reply to the op, and the host is checked against it. */
  async call<Op extends ThreadOp>(task: ThreadTask<Op>): Promise<ThreadReply<Op>> {
    const deathsBefore = this.deaths
    try {
      return await this.piscina.run(task)
    } catch (error) {
      // piscina rejects the tasks of a dead thread with a plain Error whose only mark is its text ("worker
      // exited with code: N", or the thread's uncaught error); what it reports by structure is the
      // workerDestroy event, emitted before it rejects them. So a call that fails after a death counted
      // while it was out lost its thread.
      const died = this.deaths !== deathsBefore
      const message = errorText(error)
      throw new IdemError(
        died ? ErrorCode.WORKER_DIED : ErrorCode.ACTOR_FAILED,
        died ? `the worker thread hosting shard ${'shard' in task ? task.shard : '?'} died (${message}); its batch was not settled and will be retried` : `actor task failed: ${message}`,
        { cause: error },
      )
    }
  }

  async close(): Promise<void> {
    this.closing = true
    await this.piscina.destroy()
  }
}

function isCloneError(error: unknown): boolean {
  const cause = error instanceof IdemError ? error.cause : error
  return cause instanceof Error && cause.name === 'DataCloneError'
}

/** The actor of one shard, seen from the main thread. */
export class RemoteActorPort implements ActorPort {
  constructor(
    private readonly thread: ShardThread,
    private readonly shard: number,
  ) {}

  /**
   * A handler result that cannot cross into the worker (a function, a socket,
   * a class instance with methods inside) would fail the whole step, leave
   * the batch unsettled and its handlers to run again after the lease. Such
   * results are dropped instead, and their keys committed as
   * RESULT_NOT_SERIALIZABLE; postMessage refuses before sending, so nothing
   * reached the worker the first time.
   */
  async step(settlements: Settlement[], batch: ActorBatch | undefined): Promise<StepReply> {
    try {
      return await this.thread.call({ op: 'step', shard: this.shard, settlements, batch })
    } catch (error) {
      if (!isCloneError(error)) throw error
      const dropped = settlements.map(() => [] as number[])
      const cloneable = settlements.map((settlement, s) => ({ ...settlement, commitResults: settlement.commitResults?.map((result, k) => {
        try {
          structuredClone(result)
          return result
        } catch {
          dropped[s].push(k)
          return undefined
        }
      }) }))
      const reply = await this.thread.call({ op: 'step', shard: this.shard, settlements: cloneable, batch })
      reply.settled.forEach(({ committed }, s) => {
        for (const k of dropped[s]) if (committed[k] !== CommitCode.REFUSED) committed[k] = CommitCode.RESULT_NOT_SERIALIZABLE
      })
      return reply
    }
  }

  renew(): Promise<Float64Array> {
    return this.thread.call({ op: 'renew', shard: this.shard })
  }

  /** A hook's result that cannot cross into the worker is not kept (RESULT_NOT_SERIALIZABLE), as a handler's is not: the key is resolved all the same. */
  async resolve(key: string, done: boolean, result: unknown, token: string | undefined): Promise<Resolved> {
    try {
      return await this.thread.call({ op: 'resolve', shard: this.shard, key, done, result, token })
    } catch (error) {
      if (!isCloneError(error)) throw error
      const resolved = await this.thread.call({ op: 'resolve', shard: this.shard, key, done, result: undefined, token })
      return resolved.code === CommitCode.COMMITTED ? { ...resolved, code: CommitCode.RESULT_NOT_SERIALIZABLE } : resolved
    }
  }

  admin(request: AdminRequest): Promise<AdminReply> {
    return this.thread.call({ op: 'admin', shard: this.shard, request })
  }

  /** Messages for the handler module, run by the shard's cycle inside the worker: one crossing per run. */
  run(batch: ActorBatch, messages: Message[], enforced: Uint8Array, owners: boolean): Promise<BatchResult> {
    return this.thread.call({ op: 'run', shard: this.shard, batch, messages, enforced, owners })
  }
}
