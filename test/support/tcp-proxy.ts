/**
 * A TCP proxy between clients and a Redis port that makes network faults on
 * purpose: slow replies, a blackholed network, connections reset under a client.
 */
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'

export interface FaultProxy {
  readonly port: number
  /** Hold every chunk coming back from the server for ms before forwarding it, in order. 0 turns it off. */
  delayReplies(ms: number): void
  /**
   * Blackhole: open and new connections stay up (new ones are accepted) but nothing
   * is forwarded either way. Data sent meanwhile is held, not lost, and delivered
   * in order on heal(), the way TCP retransmits once a partition ends.
   */
  drop(): void
  /** Back to pass-through with no delay; releases what drop() held. */
  heal(): void
  /** Destroy every open client connection with a TCP RST, and its upstream connection. */
  resetAll(): void
  /** Client connections currently open. */
  connections(): number
  close(): Promise<void>
}

interface Faults {
  replyDelayMs: number
  dropped: boolean
}

/**
 * One direction of one connection. Chunks queue with a due time that never goes
 * backwards, so a shorter delay set later cannot overtake data already held.
 */
class Lane {
  private readonly queue: { due: number; chunk: Buffer }[] = []
  private lastDue = 0
  private timer: NodeJS.Timeout | undefined
  private closing: 'end' | 'destroy' | undefined

  constructor(
    private readonly dest: Socket,
    private readonly faults: Faults,
  ) {}

  push(chunk: Buffer, delayMs: number): void {
    this.lastDue = Math.max(Date.now() + delayMs, this.lastDue)
    this.queue.push({ due: this.lastDue, chunk })
    this.pump()
  }

  /** The source sent FIN: pass it on once everything before it is delivered. */
  end(): void {
    this.closing ??= 'end'
    this.pump()
  }

  /** The source died without FIN: like a reset, what is in flight is lost. */
  abort(): void {
    this.queue.length = 0
    this.closing = 'destroy'
    this.pump()
  }

  pump(): void {
    if (this.timer || this.faults.dropped || this.dest.destroyed) return
    while (this.queue.length > 0 && this.queue[0].due <= Date.now()) this.dest.write(this.queue.shift()!.chunk)
    if (this.queue.length > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined
        this.pump()
      }, this.queue[0].due - Date.now())
    } else if (this.closing === 'end') this.dest.end()
    else if (this.closing === 'destroy') this.dest.destroy()
  }

  dispose(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    this.queue.length = 0
  }
}

interface Link {
  client: Socket
  upstream: Socket
  lanes: Lane[]
}

function wire(from: Socket, lane: Lane, delayMs: () => number): void {
  from.on('data', (chunk: Buffer) => lane.push(chunk, delayMs()))
  from.on('end', () => lane.end())
  from.on('close', (hadError) => {
    if (hadError || !from.readableEnded) lane.abort()
  })
}

export async function startProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<FaultProxy> {
  const faults: Faults = { replyDelayMs: 0, dropped: false }
  const links = new Set<Link>()

  const server = createServer((client) => {
    const upstream = connect(targetPort, targetHost)
    // Without this, Nagle's algorithm adds its own latency on top of the faults we set.
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    const toServer = new Lane(upstream, faults)
    const toClient = new Lane(client, faults)
    const link: Link = { client, upstream, lanes: [toServer, toClient] }
    links.add(link)
    wire(client, toServer, () => 0)
    wire(upstream, toClient, () => faults.replyDelayMs)
    // Resets and refused upstreams surface as 'close' on the other side; the errors themselves are expected.
    client.on('error', () => {})
    upstream.on('error', () => {})
    client.on('close', () => {
      links.delete(link)
      toClient.dispose()
    })
    upstream.on('close', () => toServer.dispose())
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })

  return {
    port: (server.address() as AddressInfo).port,
    delayReplies(ms) {
      faults.replyDelayMs = ms
    },
    drop() {
      faults.dropped = true
    },
    heal() {
      faults.dropped = false
      faults.replyDelayMs = 0
      for (const link of links) for (const lane of link.lanes) lane.pump()
    },
    resetAll() {
      for (const { client, upstream } of links) {
        client.resetAndDestroy()
        upstream.destroy()
      }
    },
    connections: () => links.size,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      for (const { client, upstream } of links) {
        client.destroy()
        upstream.destroy()
      }
      await closed
    },
  }
}
