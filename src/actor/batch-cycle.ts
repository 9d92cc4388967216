import { describe, ErrorCode, IdemError } from '../errors.js'
import { COUNTER_COUNT, VerdictCode, type ActorBatch, type BatchResult, type Decision, type ErrorData, type SettleReply, type Settlement } from './protocol.js'

/** The actor's three steps, whether it lives on this thread or behind a worker boundary. */
export interface ActorPort {
  decide(batch: ActorBatch): Promise<Decision>
  settle(settlement: Settlement): Promise<SettleReply>
  renew(token: string, keys: string[]): Promise<Float64Array>
}

export interface CycleOptions {
  leaseMs: number
  rollout: 'enforce' | 'shadow'
  keepResults: boolean
}

/** Calls the handler for message i of the batch; may return a promise. */
export type Invoke = (i: number) => unknown

/**
 * One shard batch from verdicts to settled outcomes: decide, run the handlers of
 * NEW messages, commit what succeeded and release what threw, in one store call
 * each. Copies of a key repeated inside the batch wait for the first copy to
 * settle and are then decided again, so one key never has two handlers at once.
 */
export async function runBatch(port: ActorPort, batch: ActorBatch, invoke: Invoke, options: CycleOptions): Promise<BatchResult> {
  const n = batch.keys.length
  const out: BatchResult = {
    verdicts: new Uint8Array(n),
    results: new Array(n),
    errors: new Array(n),
    counters: new Float64Array(COUNTER_COUNT),
    shadowRuns: 0,
  }
  let pending: number[] | undefined // undefined: the whole batch (the common first round)
  while (pending === undefined || pending.length > 0) {
    const round = pending === undefined ? batch : subBatch(batch, pending)
    const indexOf = pending === undefined ? identity : (j: number) => pending![j]
    const repeats = await runRound(port, round, indexOf, invoke, options, out)
    pending = repeats
  }
  return out
}

async function runRound(
  port: ActorPort,
  round: ActorBatch,
  indexOf: (j: number) => number,
  invoke: Invoke,
  options: CycleOptions,
  out: BatchResult,
): Promise<number[]> {
  const m = round.keys.length
  let decision: Decision
  try {
    decision = await port.decide(round)
  } catch (error) {
    // Fail closed: without a claim no handler runs; the transport retries later.
    const data = failureData(error, 'store claim failed')
    for (let j = 0; j < m; j++) {
      const i = indexOf(j)
      out.verdicts[i] = VerdictCode.IN_FLIGHT
      out.errors[i] = data
    }
    return []
  }
  addCounters(out.counters, decision.counters)

  const repeats: number[] = []
  const claimed: number[] = [] // round positions j of NEW messages
  const shadowRuns: number[] = []
  for (let j = 0; j < m; j++) {
    const i = indexOf(j)
    const verdict = decision.verdicts[j]
    out.verdicts[i] = verdict
    switch (verdict) {
      case VerdictCode.NEW:
        claimed.push(j)
        continue
      case VerdictCode.REPEAT:
        repeats.push(i)
        continue
      case VerdictCode.DUPLICATE:
        out.results[i] = decision.results[j]
        break
      case VerdictCode.CONFLICT:
        out.errors[i] = {
          code: ErrorCode.CONFLICT,
          message: `key ${JSON.stringify(round.keys[j])} was processed with fingerprint ${JSON.stringify(decision.storedFingerprints[j])}; this message has ${JSON.stringify(round.fingerprints[j])}`,
        }
        break
      case VerdictCode.IN_FLIGHT:
        out.errors[i] = { code: ErrorCode.IN_FLIGHT, message: `key ${JSON.stringify(round.keys[j])} is being processed by another owner; retry later` }
        break
    }
    if (options.rollout === 'shadow') shadowRuns.push(i)
  }

  const handled = await runHandlers(port, round, decision.token, claimed, indexOf, shadowRuns, invoke, options, out)

  const commitKeys: string[] = []
  const commitFingerprints: (string | undefined)[] = []
  const commitResults: unknown[] | undefined = options.keepResults ? [] : undefined
  const commitIndexes: number[] = []
  const releaseKeys: string[] = []
  const releaseIndexes: number[] = []
  for (const j of claimed) {
    const i = indexOf(j)
    if (handled.failed[j] === 1) {
      releaseKeys.push(round.keys[j])
      releaseIndexes.push(i)
    } else {
      commitKeys.push(round.keys[j])
      commitFingerprints.push(round.fingerprints[j])
      commitResults?.push(out.results[i])
      commitIndexes.push(i)
    }
  }
  if (commitKeys.length + releaseKeys.length === 0) return repeats
  try {
    const reply = await port.settle({ token: decision.token, commitKeys, commitFingerprints, commitResults, releaseKeys })
    addCounters(out.counters, reply.counters)
    for (let k = 0; k < commitIndexes.length; k++) {
      if (reply.committed[k] === 1) continue
      out.errors[commitIndexes[k]] = {
        code: ErrorCode.LEASE_LOST,
        message: `handler finished for key ${JSON.stringify(commitKeys[k])} but its lease had lapsed and the commit was refused; another owner may run it`,
      }
    }
  } catch (error) {
    const data = failureData(error, 'store commit/release failed')
    for (const i of commitIndexes) out.errors[i] = data
    for (const i of releaseIndexes) out.errors[i] ??= data
  }
  return repeats
}

/**
 * Runs every claimed handler (and, in shadow mode, the handlers enforce would
 * skip). Synchronous handlers cost no promise; async ones run concurrently,
 * and their leases are renewed every leaseMs/3 until the last one ends.
 */
async function runHandlers(
  port: ActorPort,
  round: ActorBatch,
  token: string,
  claimed: number[],
  indexOf: (j: number) => number,
  shadowRuns: number[],
  invoke: Invoke,
  options: CycleOptions,
  out: BatchResult,
): Promise<{ failed: Uint8Array }> {
  const failed = new Uint8Array(round.keys.length)
  const waits: Promise<void>[] = []
  const fail = (j: number, i: number, error: unknown): void => {
    failed[j] = 1
    out.errors[i] = { code: ErrorCode.HANDLER_FAILED, message: `handler failed for key ${JSON.stringify(round.keys[j])}: ${describe(error)}` }
  }
  for (const j of claimed) {
    const i = indexOf(j)
    try {
      const value = invoke(i)
      if (isPromiseLike(value)) {
        waits.push(
          Promise.resolve(value).then(
            (result) => void (out.results[i] = result),
            (error) => fail(j, i, error),
          ),
        )
      } else out.results[i] = value
    } catch (error) {
      fail(j, i, error)
    }
  }
  for (const i of shadowRuns) {
    out.shadowRuns++
    try {
      const value = invoke(i)
      if (isPromiseLike(value)) waits.push(Promise.resolve(value).then(() => undefined, () => undefined))
    } catch {
      // Shadow runs change nothing in the store; their failures are the handler's own business.
    }
  }
  if (waits.length === 0) return { failed }

  const claimedKeys = claimed.map((j) => round.keys[j])
  const renewal = setInterval(() => {
    port.renew(token, claimedKeys).then(
      (counters) => addCounters(out.counters, counters),
      () => undefined, // a failed renewal shows up as a fenced commit later
    )
  }, Math.max(1, Math.floor(options.leaseMs / 3)))
  try {
    await Promise.all(waits)
  } finally {
    clearInterval(renewal)
  }
  return { failed }
}

function subBatch(batch: ActorBatch, indexes: number[]): ActorBatch {
  const hashes = new Uint32Array(indexes.length * 2)
  for (let j = 0; j < indexes.length; j++) {
    hashes[2 * j] = batch.hashes[2 * indexes[j]]
    hashes[2 * j + 1] = batch.hashes[2 * indexes[j] + 1]
  }
  return { keys: indexes.map((i) => batch.keys[i]), hashes, fingerprints: indexes.map((i) => batch.fingerprints[i]) }
}

/** An actor that could not answer: its own code when it gave one (a dead worker), else a store failure. */
function failureData(error: unknown, what: string): ErrorData {
  if (error instanceof IdemError) return { code: error.code, message: error.message }
  return { code: ErrorCode.STORE_FAILED, message: `${what}: ${describe(error)}` }
}

export function addCounters(into: Float64Array, delta: Float64Array): void {
  for (let k = 0; k < into.length; k++) into[k] += delta[k]
}

function identity(j: number): number {
  return j
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function'
}
