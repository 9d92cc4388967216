import { setTimeout as sleep } from 'node:timers/promises'
import type { Channel, ConfirmChannel, ConsumeMessage } from 'amqplib'
import type { Engine } from '../../engine.js'
import type { PartitionChange } from '../../owned/membership.js'

/**
 * Owned mode: the queue of one partition, `${queue}.p${partition}`. A
 * producer puts each message on the queue of its key's partition:
 * `publisher.publish('', partitionQueueOf('orders', partitionOf(key, 64)), body, { key })`.
 */
export function partitionQueueOf(queue: string, partition: number): string {
  return `${queue}.p${partition}`
}

/**
 * Declares every partition queue, durable, with `x-single-active-consumer`:
 * however many consumers subscribe to one, the broker delivers to one at a
 * time, so two members that both believe they own a partition (a hand-over
 * in progress) never both receive its messages; the other waits as standby
 * until the active one cancels or its channel closes. (The partition count
 * is checked by the owned engines, which record it in their store; RabbitMQ
 * does not compare arguments it does not know, so a queue argument could not
 * hold it.)
 */
export async function declarePartitionQueues(channel: Channel, queue: string, partitions: number): Promise<void> {
  for (let p = 0; p < partitions; p++) {
    await channel.assertQueue(partitionQueueOf(queue, p), { durable: true, arguments: { 'x-single-active-consumer': true } })
  }
}

/** The partition of a partition queue's name, or undefined for another queue. */
export function partitionOfQueue(queue: string, name: string): number | undefined {
  const prefix = `${queue}.p`
  if (!name.startsWith(prefix)) return undefined
  const partition = Number(name.slice(prefix.length))
  return Number.isInteger(partition) ? partition : undefined
}

/** How often a new owner looks whether the previous owner's consumer of a partition queue is gone. */
const CONSUMER_GONE_POLL_MS = 50

type Receive = (channel: ConfirmChannel, queue: string, message: ConsumeMessage | null) => void
type Report = (error: unknown) => void

/**
 * Owned mode: consumes the queues of the partitions the engine owns, on the
 * consumer's channel, following the engine's `partitions` events: a lost
 * partition's queue is cancelled at once (its deliveries already in the
 * engine finish and are settled as their outcomes say; the broker hands the
 * queue to the next owner once we cancel), an acquired one is consumed.
 */
export class OwnedQueues {
  private channel: ConfirmChannel | undefined
  /** Consumer tags of the partition queues consumed on the current channel. */
  private readonly tags = new Map<number, string>()
  /** Partitions whose subscription is being made: not made twice. */
  private readonly subscribing = new Set<number>()
  private readonly listener = (change: PartitionChange): void => this.apply(change)

  constructor(
    private readonly queue: string,
    private readonly engine: Engine,
    private readonly receive: Receive,
    private readonly report: Report,
  ) {
    engine.on('partitions', this.listener)
  }

  /** A new channel is set up: consume every partition owned now on it (the old channel's subscriptions went with it). */
  async consumeOn(channel: ConfirmChannel): Promise<void> {
    this.channel = channel
    this.tags.clear()
    // At once, not one by one: one queue whose previous consumer is still there must not hold up the others.
    await Promise.all(this.engine.ownedPartitions().map((p) => this.consume(p)))
  }

  /** Stops consuming every partition queue (before close: no new deliveries). */
  async cancelAll(): Promise<void> {
    this.engine.off('partitions', this.listener)
    const channel = this.channel
    const tags = [...this.tags.values()]
    this.tags.clear()
    if (channel !== undefined) await Promise.all(tags.map((tag) => channel.cancel(tag).catch(() => {})))
  }

  private apply({ acquired, lost }: PartitionChange): void {
    const channel = this.channel
    for (const p of lost) {
      const tag = this.tags.get(p)
      this.tags.delete(p)
      if (tag !== undefined && channel !== undefined) channel.cancel(tag).catch(this.report)
    }
    for (const p of acquired) void this.consume(p).catch(this.report)
  }

  private async consume(partition: number): Promise<void> {
    const channel = this.channel
    if (channel === undefined || this.tags.has(partition) || this.subscribing.has(partition)) return
    const name = partitionQueueOf(this.queue, partition)
    this.subscribing.add(partition)
    let consumerTag: string
    try {
      await this.untilNoOtherConsumer(channel, name, partition)
      ;({ consumerTag } = await channel.consume(name, (message) => this.receive(channel, name, message), { noAck: false }))
    } finally {
      this.subscribing.delete(partition)
    }
    // Lost again, or the channel replaced, while the subscription was being made.
    if (this.channel !== channel || !this.engine.ownedPartitions().includes(partition)) {
      await channel.cancel(consumerTag).catch(() => {})
      return
    }
    this.tags.set(partition, consumerTag)
  }

  /**
   * Waits, up to two ownership leases, until the previous owner's consumer is
   * gone. The previous owner cancels as soon as it learns of the move (at
   * once in a hand-over, at its next heartbeat after a lapse); subscribing
   * before that would make this member the queue's standby consumer, and
   * RabbitMQ (3.10 here, 3.11 too by its report) can crash a classic
   * single-active-consumer queue when its active consumer dies with a standby
   * subscribed (rabbitmq-server#5460). Past the bound (an owner that is stuck but still
   * connected), subscribing anyway is safe: the broker keeps delivering to one.
   */
  private async untilNoOtherConsumer(channel: ConfirmChannel, name: string, partition: number): Promise<void> {
    const until = performance.now() + 2 * this.engine.config.ownership.leaseMs
    while ((await channel.checkQueue(name)).consumerCount > 0 && performance.now() < until) {
      if (this.channel !== channel || !this.engine.ownedPartitions().includes(partition)) return
      await sleep(CONSUMER_GONE_POLL_MS)
    }
  }
}
