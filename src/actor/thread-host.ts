/**
 * Entry of each worker thread (piscina). Hosts the actors of the shards mapped
 * to this thread, created on first use, so a thread that piscina restarts after
 * a crash rebuilds its shards by itself (their memory store starts empty).
 */
import { workerData } from 'piscina'
import { systemClock } from '../clock.js'
import type { EngineConfig } from '../config.js'
import { loadHandlerModule, type HandlerModule } from '../handler-module.js'
import type { Message } from '../message.js'
import { StoreFactory } from '../store/store-factory.js'
import { countersFor } from '../observe/store-timing.js'
import { type ActorBatch, type BatchResult, type ThreadOp, type ThreadReply, type ThreadTask } from './protocol.js'
import { ShardActor } from './shard-actor.js'
import { CycleEntry, ownerOf, ShardCycle } from './shard-cycle.js'

export interface ThreadData {
  config: EngineConfig
}

const { config }: ThreadData = workerData
const actors = new Map<number, ShardActor>()
/** The cycle of each shard that runs the handler module here. */
const cycles = new Map<number, ShardCycle<ModuleRun>>()
const stores = new StoreFactory(config.store, systemClock)
let handlerModule: Promise<HandlerModule> | undefined

function actorOf(shard: number): ShardActor {
  let actor = actors.get(shard)
  if (actor === undefined) {
    actor = new ShardActor(shard, config, systemClock, stores.forShard(shard))
    actors.set(shard, actor)
  }
  return actor
}

/** One run op: its outcomes, filled as they become final. */
interface ModuleRun {
  out: BatchResult
  remaining: number
  done: () => void
}

function cycleOf(shard: number): ShardCycle<ModuleRun> {
  let cycle = cycles.get(shard)
  if (cycle === undefined) {
    const deliver = (entry: CycleEntry<ModuleRun>): void => {
      const { owner, slot } = entry
      owner.out.verdicts[slot] = entry.verdict
      owner.out.shadows[slot] = entry.shadow
      owner.out.results[slot] = entry.result
      owner.out.errors[slot] = entry.error
      owner.out.layers[slot] = entry.layer
      if (owner.out.owners !== undefined) owner.out.owners[slot] = ownerOf(entry)
      if (--owner.remaining === 0) owner.done()
    }
    cycle = new ShardCycle<ModuleRun>(actorOf(shard), config, deliver)
    cycles.set(shard, cycle)
  }
  return cycle
}

async function runModule(shard: number, batch: ActorBatch, messages: Message[], enforced: Uint8Array, owners: boolean): Promise<BatchResult> {
  const { handle, reconcile } = await moduleHandler()
  const n = batch.keys.length
  const cycle = cycleOf(shard)
  const run: ModuleRun = { out: { verdicts: new Uint8Array(n), results: new Array(n), errors: new Array(n), shadows: new Array(n), layers: new Uint8Array(n), counters: countersFor(config) }, remaining: n, done: noop }
  if (owners) run.out.owners = new Array(n)
  const finished = new Promise<void>((resolve) => (run.done = resolve))
  for (let j = 0; j < n; j++) {
    const entry = new CycleEntry(batch.keys[j], batch.hashes[2 * j], batch.hashes[2 * j + 1], batch.fingerprints[j], messages[j], handle, run, j)
    entry.reconcile = reconcile
    entry.enforced = enforced[j] === 1
    cycle.push(entry)
  }
  cycle.kick()
  await finished
  run.out.counters = cycle.takeCounters()
  return run.out
}

function noop(): void {}

function moduleHandler(): Promise<HandlerModule> {
  if (config.handler === undefined) throw new Error('no handler module configured')
  handlerModule ??= loadHandlerModule(config.handler)
  return handlerModule
}

/** Each op's answer, checked against its reply type in ThreadOps. */
const serve: { [Op in ThreadOp]: (task: ThreadTask<Op>) => Promise<ThreadReply<Op>> } = {
  async ready() {
    if (config.handler !== undefined) await moduleHandler()
    return true
  },
  step: (task) => actorOf(task.shard).step(task.settlements, task.batch),
  renew: (task) => actorOf(task.shard).renew(),
  resolve: (task) => actorOf(task.shard).resolve(task.key, task.done, task.result, task.token),
  admin: (task) => actorOf(task.shard).admin(task.request),
  run: (task) => runModule(task.shard, task.batch, task.messages, task.enforced, task.owners),
}

export default async function hostTask<Op extends ThreadOp>(task: ThreadTask<Op>): Promise<ThreadReply<Op>> {
  return serve[task.op](task)
}
