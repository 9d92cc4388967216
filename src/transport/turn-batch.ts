/**
 * The broker consumers (amqp, nats) hand the engine what arrived in one turn
 * of the event loop as one batch: deliveries that arrive together share one
 * store round trip, and none waits longer than that turn for a batch to
 * fill. `add` schedules the hand-over (setImmediate) on the first arrival of
 * a turn; `flush` hands over what is pending now, as close() does.
 */
export class TurnBatch<T> {
  private pending: T[] = []
  private scheduled = false

  constructor(private readonly onBatch: (batch: T[]) => void) {}

  add(item: T): void {
    this.pending.push(item)
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(() => this.flush())
  }

  flush(): void {
    this.scheduled = false
    if (this.pending.length === 0) return
    const batch = this.pending
    this.pending = []
    this.onBatch(batch)
  }
}
