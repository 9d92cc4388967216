/**
 * Consumer processes for the broker SIGKILL tests: each is a fixture forked
 * with its arguments, that sends { ready } once consuming, { stats } now and
 * then, and { stats, errors, closed } after it was sent 'close'. Only the
 * processes forked here are ever killed, by their handles.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { STALL_MS, untilDone } from './progress.js'

export interface ConsumerProcess {
  name: string
  process: ChildProcess
  /** The last stats it sent. */
  stats: Record<string, number>
}

const live = new Set<ChildProcess>()

export function startConsumerProcess(fixture: string, name: string, args: (string | number)[]): Promise<ConsumerProcess> {
  const child = fork(fixture, args.map(String), { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  live.add(child)
  child.on('exit', () => live.delete(child))
  const handle: ConsumerProcess = { name, process: child, stats: {} }
  child.on('message', (message: { stats?: Record<string, number> }) => {
    if (message.stats !== undefined) handle.stats = message.stats
  })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumer ${name} not ready after ${STALL_MS / 1000} s`)), STALL_MS)
    child.once('message', () => {
      clearTimeout(timer)
      resolve(handle)
    })
    child.once('exit', (code, signal) => reject(new Error(`consumer ${name} exited before it was ready (${code ?? signal})`)))
  })
}

/** SIGKILL, and wait for the exit. */
export async function killConsumerProcess(consumer: ConsumerProcess): Promise<void> {
  const { process: child } = consumer
  const exited = new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())))
  child.kill('SIGKILL')
  await exited
}

/** Asks a consumer to close; resolves with its final stats and errors. */
export function closeConsumerProcess(consumer: ConsumerProcess): Promise<{ stats: Record<string, number>; errors: string[] }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`consumer ${consumer.name} did not close within ${STALL_MS / 1000} s`)), STALL_MS)
    consumer.process.on('message', (message: { closed?: boolean; stats: Record<string, number>; errors: string[] }) => {
      if (message.closed !== true) return
      clearTimeout(timer)
      resolve(message)
    })
    consumer.process.send('close')
  })
}

export interface KilledRun {
  /** The consumers alive after the last kill. */
  consumers: ConsumerProcess[]
  kills: number
  /** What each killed consumer held unsettled, as it last reported before its kill. */
  killedHeld: number[]
}

/**
 * The kill loop of the broker SIGKILL tests: starts three consumers, then
 * each time `doneCount` reaches the next fraction of `unique` SIGKILLs the
 * next consumer in turn and starts its replacement, so every consumer is
 * killed while it holds deliveries.
 */
export async function runWithKills(fixture: string, argsOf: (name: string) => (string | number)[], killAt: readonly number[], unique: number, doneCount: () => Promise<number>): Promise<KilledRun> {
  const consumers = await Promise.all([0, 1, 2].map((i) => startConsumerProcess(fixture, `c${i}`, argsOf(`c${i}`))))
  let kills = 0
  const killedHeld: number[] = []
  for (const fraction of killAt) {
    await untilDone({ what: `${fraction * 100}% of the keys done`, done: async () => (await doneCount()) >= fraction * unique, progress: doneCount, pollMs: 20 })
    const slot = kills % consumers.length
    await killConsumerProcess(consumers[slot])
    killedHeld.push(consumers[slot].stats.holding ?? 0)
    kills++
    consumers[slot] = await startConsumerProcess(fixture, `c${slot}-${kills}`, argsOf(`c${slot}-${kills}`))
  }
  return { consumers, kills, killedHeld }
}

/** SIGKILLs every consumer process still alive: for afterAll. */
export function killAllConsumerProcesses(): void {
  for (const child of live) child.kill('SIGKILL')
}

/** `unique` keys, then copies of some of them up to `total` (30% duplicates for 0.7), the copies shuffled among the second half. */
export function keysWithDuplicates(unique: number, total: number): string[] {
  const keys = Array.from({ length: total }, (_, i) => `order-${i < unique ? i : (i * 7919) % unique}`)
  for (let i = keys.length - 1; i > unique / 2; i--) {
    const j = Math.floor(unique / 2) + Math.floor(Math.random() * (i - unique / 2))
    ;[keys[i], keys[j]] = [keys[j], keys[i]]
  }
  return keys
}
