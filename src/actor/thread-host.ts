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
import type { ThreadTask } from './protocol.js'
import { ShardActor } from './shard-actor.js'

export interface ThreadData {
  config: EngineConfig
}

const { config } = workerData as ThreadData
const actors = new Map<number, ShardActor>()
const stores = new StoreFactory(config.store, systemClock)
let handler: Promise<Handler> | undefined

function actorOf(shard: number): ShardActor {
  let actor = actors.get(shard)
  if (actor === undefined) {
    actor = new ShardActor(shard, config, systemClock, stores.forShard())
    actors.set(shard, actor)
  }
  return actor
}

function moduleHandler(): Promise<Handler> {
  if (config.handler === undefined) throw new Error('no handler module configured')
  handler ??= loadHandlerModule(config.handler)
  return handler
}

export default async function hostTask(task: ThreadTask): Promise<unknown> {
  switch (task.op) {
    case 'ready':
      if (config.handler !== undefined) await moduleHandler()
      return true
    case 'step':
      return actorOf(task.shard).step(task.settlement, task.batch)
    case 'renew':
      return actorOf(task.shard).renew(task.token)
    case 'run': {
      const handle = await moduleHandler()
      const { messages } = task
      return runBatch(actorOf(task.shard), task.batch, (i, context) => handle(messages[i], context), config)
    }
  }
}
