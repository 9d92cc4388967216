/**
 * Everything that crosses between the main thread and an actor's thread, in one
 * file so the two sides cannot drift. Per-message data travels as parallel
 * arrays (one structured clone per batch), never as one object per message.
 */
import type { ErrorCode } from '../errors.js'
import type { Message } from '../message.js'
import type { CommitCode, KeyView } from '../store/store.js'

/** Per-message decision of an actor. */
/** STALE is counted by the version lane (version-aware keys), never sent by an actor. */
export const VerdictCode = { NEW: 0, DUPLICATE: 1, IN_FLIGHT: 2, CONFLICT: 3, INVALID: 4, STALE: 5 } as const
export type VerdictCode = (typeof VerdictCode)[keyof typeof VerdictCode]
/** Length of an array indexed by VerdictCode: the codes run from 0 without gaps (a unit test in engine.test.ts holds them to it). */
export const VERDICT_COUNT = Object.keys(VerdictCode).length

/** Which layer answered a message (DecisionEvent.layer): 0, the store, unless another one did, so a zeroed array reads "store". */
export const LayerCode = { STORE: 0, LRU: 1, BLOOM: 2, INPUT: 3 } as const
export type LayerCode = (typeof LayerCode)[keyof typeof LayerCode]

/** Indexes into the counters array every reply carries (deltas since the last reply). */
export const Counter = {
  LRU_HITS: 0,
  BLOOM_NEGATIVES: 1,
  BLOOM_POSITIVES: 2,
  /** Maybe-seen keys the store found absent (includes redeliveries of released keys). */
  BLOOM_FALSE_POSITIVES: 3,
  /** Claims, commits, releases and renewals sent to the store (a Redis store may send several in one script call). */
  STORE_OPERATIONS: 4,
  /** Commits, releases and renewals the store refused: the lease was no longer ours. */
  FENCED_WRITES: 5,
  BLOOM_ROTATIONS: 6,
  /** Store calls that failed and were tried again. */
  STORE_RETRIES: 7,
  /** Store calls that failed after every retry (their batch failed closed). */
  STORE_FAILURES: 8,
  /** Settlements the store could not take at first, applied once it was back. */
  LATE_SETTLEMENTS: 9,
  /** Kept settlements given up (over the bound, or still unapplied at close): their keys wait for their leases. */
  DROPPED_SETTLEMENTS: 10,
  /** Handlers run in shadow rollout that enforce would have skipped (counted by the cycle, not the actor). */
  SHADOW_RUNS: 11,
  /** Handlers that ran past handlerTimeoutMs (their keys were then marked UNKNOWN, unless their lease had lapsed). */
  HANDLER_TIMEOUTS: 12,
  /** Keys marked UNKNOWN in the store: timed out, or the handler threw outcomeUnknown(). */
  OUTCOMES_UNKNOWN: 13,
  /** UNKNOWN keys the reconcile hook answered done (now DONE). */
  RECONCILED_DONE: 14,
  /** UNKNOWN keys the reconcile hook answered not done (now absent: the delivery runs the handler). */
  RECONCILED_NOT_DONE: 15,
  /** Reconcile calls that gave no answer ('unknown', a throw, a timeout, a bad value): asked again after a backoff. */
  RECONCILE_UNANSWERED: 16,
  /** Times the store found it had lost its data (restarted empty, flushed): it fails closed with STORE_RESET until acknowledged. */
  STORE_RESETS: 17,
  /** Keys the store's server evicted (a Redis with allowEviction): settled keys among them may run again. */
  EVICTED_KEYS: 18,
  /** Owned mode: group commits sent (one store call each, for every partition of the shard with settled keys). */
  GROUP_COMMITS: 19,
  /** Owned mode: messages answered in-flight with NOT_OWNER (their partition is not held here, or is being handed over or restored). */
  NOT_OWNED: 20,
  /** Keys whose lease a renewal extended (strict mode: one per open claim per renewal). */
  LEASE_RENEWALS: 21,
} as const
/** Length of the counters array: the indexes run from 0 without gaps (a unit test in engine.test.ts holds them to it). */
export const COUNTER_COUNT = Object.keys(Counter).length

/** A shard batch as the actor receives it. */
export interface ActorBatch {
  keys: string[]
  /** Two u32 per key (xxHash64 lo, hi) as the router computed them: the bloom reuses them. */
  hashes: Uint32Array
  fingerprints: (string | undefined)[]
  /** Owned mode: each key's partition. */
  partitions?: Uint32Array
}

export interface Decision {
  verdicts: Uint8Array
  /** Owner token of this batch's claims. */
  token: string
  /** For DUPLICATE: the stored result (undefined when none was kept). */
  results: unknown[]
  /** For CONFLICT and IN_FLIGHT: the fingerprint the store holds for the key. */
  storedFingerprints: (string | undefined)[]
  counters: Float64Array
  /** Per position, the LayerCode that answered it. */
  layers: Uint8Array
  /** Owned mode: per claimed position, its partition's epoch (the owner a decision event names). */
  epochs?: Float64Array
  /** Set when the store claim failed after its retries: every key it held is IN_FLIGHT with this error (fail closed). */
  storeError?: ErrorData
  /** 1 at the positions answered IN_FLIGHT because their key is UNKNOWN (present only when there is one). */
  unknownAt?: Uint8Array
  /** At those positions: the token the key was marked under (its episode). */
  unknownTokens?: (string | undefined)[]
  /** Per position, for IN_FLIGHT verdicts with a reason of their own (owned mode: NOT_OWNER, a failed read); wins over storeError. */
  errors?: (ErrorData | undefined)[]
}

/**
 * The handlers of one decided batch that ended since the last step, by
 * positions in that batch: the actor kept its claimed keys under the token, so
 * keys do not cross the thread boundary twice. A batch is settled piece by
 * piece, each message as soon as its own handler ends.
 */
export interface Settlement {
  token: string
  /** Positions whose handler returned: commit them (DONE). */
  commit: number[]
  /** Handler results, parallel to commit; undefined when results are not kept. */
  commitResults: unknown[] | undefined
  /** Positions whose handler threw: release them (absent). */
  release: number[]
  /** Positions whose handler timed out or threw outcomeUnknown(): mark them UNKNOWN. */
  unknown: number[]
}

/** The answer to one step: each settlement applied (same order), the next batch decided. */
export interface StepReply {
  settled: SettleReply[]
  decision?: Decision
  /**
   * Owned mode, on the main thread: the settlements' replies once their group
   * commit is durable, in place of `settled`, so the decision does not wait
   * for the flush.
   */
  settledLater?: Promise<SettleReply[]>
}

export interface SettleReply {
  /** A CommitCode per commit position: REFUSED when fenced. */
  committed: Uint8Array
  /** Per unknown position: 1 = marked UNKNOWN, 0 = fenced (the lease had lapsed). */
  marked: Uint8Array
  counters: Float64Array
  /** Set when the commit or release call failed after its retries: nothing is known settled. */
  storeError?: ErrorData
  /** Per commit position, why a REFUSED commit was refused when it is not a lapsed lease (owned mode: EPOCH_REGRESSED, NOT_OWNER). */
  commitErrors?: (ErrorData | undefined)[]
}

/** How a commit sent on a transport's connection ended (ShardActor.commitOn), with the counts since the last reply. */
export interface RiddenCommit {
  code: CommitCode
  counters: Float64Array
}

/** How a resolve of an UNKNOWN key ended (ShardActor.resolve), with the counts since the last reply. */
export interface Resolved {
  /**
   * The store's CommitCode: REFUSED when the key was not UNKNOWN under that
   * token any more (someone resolved or forgot it): nothing was written;
   * COMMITTED when resolved; RESULT_* when resolved done without its result.
   */
  code: CommitCode
  counters: Float64Array
}

/**
 * An operator's request to one shard (ShardActor.admin): read a key, forget
 * it, or purge a namespace. Forget and purge drop the keys from the shard's
 * LRU too, or a forgotten key would still be answered duplicate without I/O.
 * `store` false: drop them from the LRU only (a shard whose store another
 * shard purges, one call for a shared store).
 */
export type AdminRequest = { op: 'inspect'; key: string } | { op: 'forget'; key: string } | { op: 'purge'; namespace: string; store: boolean }

/** What the shard found (inspect), how many records went (forget: 1 or 0, purge: a count), or the error as data. */
export interface AdminReply {
  view?: KeyView
  removed: number
  error?: ErrorData
}

/** An error as data: IdemErrors do not survive structured clone as their class. */
export interface ErrorData {
  code: ErrorCode
  message: string
}

/** Shadow rollout: what enforce would have done with a message that ran anyway, when that differs from running it. */
export interface ShadowData {
  verdict: VerdictCode
  /** The error code enforce would have given (CONFLICT, IN_FLIGHT, STORE_FAILED, LEASE_LOST, …). */
  code?: ErrorCode
}

/** The outcomes of a run inside a worker, per message, with the shard's counts since its last reply. */
export interface BatchResult {
  verdicts: Uint8Array
  results: unknown[]
  errors: (ErrorData | undefined)[]
  /** Shadow rollout: per message, what enforce would have done instead (undefined: the same). */
  shadows: (ShadowData | undefined)[]
  /** Per message, the LayerCode that answered it. */
  layers: Uint8Array
  /** Per message, its claim's owner token (when it had a claim); filled only when the run asked for it (decision observers). */
  owners?: (string | undefined)[]
  counters: Float64Array
}

/**
 * Every op a worker thread serves: what its request carries besides the op,
 * and what the thread answers. Requests and replies are keyed by the same op,
 * so the caller gets the reply of the op it sent and the host (thread-host.ts)
 * must answer each op with its own reply.
 */
export interface ThreadOps {
  /** Loads the handler module, if one is configured, so a bad module fails createEngine. */
  ready: { request: {}; reply: true }
  /** Settles the handlers that ended and decides the next batch (ShardActor.step). */
  step: { request: { shard: number; settlements: Settlement[]; batch: ActorBatch | undefined }; reply: StepReply }
  /** Extends the lease of every claim of the shard not settled yet; answers with the counters since the last reply. */
  renew: { request: { shard: number }; reply: Float64Array }
  /** Resolves an UNKNOWN key of the shard: a reconcile hook's answer (ShardActor.resolve). */
  resolve: { request: { shard: number; key: string; done: boolean; result: unknown; token: string | undefined }; reply: Resolved }
  /** An operator's inspect, forget or purge on the shard (ShardActor.admin). */
  admin: { request: { shard: number; request: AdminRequest }; reply: AdminReply }
  /** Messages for the handler module, into the shard's cycle inside the worker; answers when each has its outcome. */
  run: { request: { shard: number; batch: ActorBatch; messages: Message[]; /** 1 where the rollout enforces for the message's key. */ enforced: Uint8Array; /** Fill BatchResult.owners. */ owners: boolean }; reply: BatchResult }
}
export type ThreadOp = keyof ThreadOps

/** One request as it crosses the thread: its op and that op's fields. */
export type ThreadTask<Op extends ThreadOp = ThreadOp> = { [O in Op]: { op: O } & ThreadOps[O]['request'] }[Op]

export type ThreadReply<Op extends ThreadOp> = ThreadOps[Op]['reply']
