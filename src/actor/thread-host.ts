/**
 * Entry of each worker thread (piscina). Hosts the actors of the shards mapped
 * to this thread, created on first use, so a thread that piscina restarts after
 * a crash rebuilds its shards by itself (their memory store starts empty).
 */
import { workerData } from 'piscina'
import { systemClock } from '../clock.js'
import type { EngineConfig } from '../config.js'
import { loadHandlerModule } from '../handler-module.js'
import type { Handler } from '../message.js'
import { StoreFactory } from '../store/store-factory.js'
import { runBatch } from './batch-cycle.js'
import type { ThreadOp, ThreadReply, ThreadTask } from './protocol.js'
import { ShardActor } from './shard-actor.js'

export interface ThreadData {
  config: EngineConfig
}

const { config }: ThreadData = workerData
const actors = new Map<number, ShardActor>()
const stores = new StoreFactory(config.store, systemClock)
let handler: Promise<Handler> | undefined

function actorOf(shard: number): ShardActor {
  let actor = actors.get(shard)
  if (actor === undefined) {
    actor = new ShardActor(shard, config, systemClock, stores.forShard(shard))
    actors.set(shard, actor)
  }
  return actor
}

function moduleHandler(): Promise<Handler> {
  if (config.handler === undefined) throw new Error('no handler module configured')
  handler ??= loadHandlerModule(config.handler)
  return handler
}

/** Each op's answer, checked against its reply type in ThreadOps. */
const serve: { [Op in ThreadOp]: (task: ThreadTask<Op>) => Promise<ThreadReply<Op>> } = {
  async ready() {
    if (config.handler !== undefined) await moduleHandler()
    return true
  },
  step: (task) => actorOf(task.shard).step(task.settlement, task.batch),
  renew: (task) => actorOf(task.shard).renew(task.token),
  async run(task) {
    const handle = await moduleHandler()
    const { messages } = task
    return runBatch(actorOf(task.shard), task.batch, (i, context) => handle(messages[i], context), config)
  },
}

export default async function hostTask<Op extends ThreadOp>(task: ThreadTask<Op>): Promise<ThreadReply<Op>> {
  return serve[task.op](task)
}
