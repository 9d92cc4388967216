/**
 * The framework-neutral core of the HTTP Idempotency-Key layer (DESIGN.md §9).
 * The adapters (fastify.ts, express.ts) only read the request, capture the
 * route's response and write replies; every decision is made here.
 *
 * It talks to the engine's store directly, one key per request, through the
 * store contract (claim with a lease, commit DONE with a result, release):
 * a request is not a queue message, and the engine's shard lanes would hold
 * a second request of a running key until the first one ends, where HTTP
 * wants a 409 at once or a wait bounded by the caller.
 *
 *   claim(record key, fingerprint) ─ CLAIMED ────► run the route, renew the lease every leaseMs/3
 *                                  │                  2xx/3xx (and 4xx, storeClientErrors) → commit DONE{response}
 *                                  │                  5xx, or a route that throws         → release
 *                                  ├ other fingerprint (DONE or running) → 422
 *                                  ├ DONE ──────────► replay the kept response (or 409 not replayable)
 *                                  └ IN_PROGRESS ───► 409 + Retry-After, or poll the claim until wait.maxMs
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { systemClock } from '../clock.js'
import { ErrorCode, errorText, IdemError } from '../errors.js'
import { SettledKeys } from '../actor/settled-keys.js'
import { StoreFactory } from '../store/store-factory.js'
import { ClaimCode, CommitCode } from '../store/store.js'
import { StoreBatches } from './store-batches.js'
import { resolveLayer, resolveRoutePolicy, type RequestPolicy, type RequestView } from './options.js'
import { IN_FLIGHT_RETRY_AFTER_SECONDS, problemReply, type LayerReply } from './problem.js'
import { defaultFingerprint, headerKeyOf, recordKeyOf } from './request-key.js'
import { replayOf, storedResponseOf, type RouteCompletion } from './stored-response.js'
import { nextPollMs } from '../wait-policy.js'

/** What the layer does with a request. */
export type Decision =
  /** Not the layer's: a method it does not handle, or no key where none is required. */
  | { kind: 'pass' }
  /** Answered by the layer: a replay or a problem. The route does not run. */
  | { kind: 'reply'; reply: LayerReply }
  /** The key is claimed: run the route, then hand its response to `run.finish`. */
  | { kind: 'run'; run: RouteRun }

export class IdempotencyCore<Req> {
  /** The layer's policy, for routes without overrides. */
  readonly policy: RequestPolicy<Req>
  private readonly namespace: string
  private readonly batches: StoreBatches
  private readonly storeFactory: StoreFactory
  private readonly running = new Set<RouteRun>()
  /** Responses this process committed or was answered, until their records expire: a replay with no store call. */
  private readonly settledKeys: SettledKeys
  private closed = false

  /** @throws ConfigError naming every bad option. */
  constructor(options: unknown, owner: string) {
    const config = resolveLayer<Req>(options, owner)
    this.policy = config.policy
    this.namespace = config.namespace
    // The engine's store settings, but a store of the layer's own: its records
    // live under their own keys, and its lifetime is the server's.
    this.storeFactory = new StoreFactory(config.engine.config.store, systemClock)
    this.batches = new StoreBatches(this.storeFactory.forShard(0))
    this.settledKeys = new SettledKeys(config.replayCacheKeys)
  }

  /** A route's policy: the layer's, with the route's overrides. @throws ConfigError */
  policyWith(overrides: unknown, owner: string): RequestPolicy<Req> {
    return resolveRoutePolicy(overrides, this.policy, owner)
  }

  /**
   * Decides a request. Throws what the user's scope or fingerprint function
   * threw, INVALID_CONFIG when one returns a bad value, and INVALID_MESSAGE
   * for a parsed body the default fingerprint cannot digest (the adapter
   * hands each to the framework's error handling); a store that cannot
   * answer is a 503 problem.
   */
  async decide(view: RequestView, request: Req, policy: RequestPolicy<Req>): Promise<Decision> {
    if (!policy.methods.has(view.method)) return { kind: 'pass' }
    const header = headerKeyOf(view.rawHeaders)
    if ('missing' in header) {
      return policy.required ? reply(problemReply(ErrorCode.INVALID_KEY, `${view.method} ${view.path} requires an Idempotency-Key header`)) : { kind: 'pass' }
    }
    if ('malformed' in header) return reply(problemReply(ErrorCode.INVALID_KEY, header.malformed))
    const scope = policy.scope === undefined ? undefined : await policy.scope(request)
    if (scope !== undefined && (typeof scope !== 'string' || scope.length === 0)) {
      throw new IdemError(ErrorCode.INVALID_CONFIG, `idempotency scope must return a non-empty string or undefined, it returned ${typeof scope === 'string' ? 'an empty string' : typeof scope}`)
    }
    const fingerprint = policy.fingerprint === undefined ? defaultFingerprint(view) : await policy.fingerprint(request)
    if (typeof fingerprint !== 'string' || fingerprint.length === 0) throw new IdemError(ErrorCode.INVALID_CONFIG, `idempotency fingerprint must return a non-empty string, it returned ${typeof fingerprint}`)
    if (this.closed) return reply(problemReply(ErrorCode.STORE_FAILED, 'the idempotency layer is closed'))
    const recordKey = recordKeyOf(this.namespace, scope, header.key)
    return this.claim(recordKey, fingerprint, policy)
  }

  /** Closes the layer's store once the routes still running have finished (their commits need it). */
  async close(): Promise<void> {
    this.closed = true
    await Promise.all([...this.running].map((run) => run.finished))
    await this.storeFactory.close()
  }

  private async claim(recordKey: string, fingerprint: string, policy: RequestPolicy<Req>): Promise<Decision> {
    const settled = this.settledKeys.get(recordKey, Date.now())
    if (settled !== undefined) return answerDone(settled.fingerprint, settled.result, fingerprint)
    const since = performance.now()
    for (;;) {
      let claim
      // Taken before the call: the record's remaining time, counted from here, ends no later than in the store.
      const sentAt = Date.now()
      try {
        claim = await this.batches.claim(recordKey, fingerprint, policy.leaseMs, policy.ttlMs)
      } catch (error) {
        return reply(problemReply(ErrorCode.STORE_FAILED, `the idempotency store could not be reached, the request did not run: ${errorCodeText(error)}`, IN_FLIGHT_RETRY_AFTER_SECONDS))
      }
      const { code } = claim
      if (code === ClaimCode.CLAIMED) {
        const run = new RouteRun(this.batches, recordKey, claim.token, fingerprint, policy, this.settledKeys, () => this.running.delete(run))
        this.running.add(run)
        return { kind: 'run', run }
      }
      // No stored fingerprint is no evidence of another request: PostgreSQL's claim answers IN_PROGRESS
      // without one when a concurrent statement inserted the row after its snapshot was taken.
      const stored = claim.fingerprint
      if (stored !== undefined && stored !== fingerprint) {
        return reply(conflictProblem())
      }
      if (code === ClaimCode.DONE) {
        // A store that cannot say when the record expires is not cached from: the cache must never outlive the record.
        if (claim.expiresInMs !== undefined) this.settledKeys.remember(recordKey, stored, claim.result, sentAt, claim.expiresInMs)
        return answerDone(stored, claim.result, fingerprint)
      }
      if (code === ClaimCode.UNKNOWN) return reply(problemReply(ErrorCode.OUTCOME_UNKNOWN, 'the outcome of the request with this Idempotency-Key is unknown until an operator resolves it (idem keys resolve)'))
      const pollMs = nextPollMs(policy, since, performance.now())
      if (pollMs === undefined) {
        return reply(problemReply(ErrorCode.IN_FLIGHT, 'a request with this Idempotency-Key is still running; retry after it ends', IN_FLIGHT_RETRY_AFTER_SECONDS))
      }
      await sleep(pollMs)
    }
  }
}

/**
 * One claimed request while its route runs: the lease is renewed (with its
 * batch's, store-batches.ts) until finish() commits or releases the key. finish() never throws: the response
 * goes out whatever the store answers (the effect has happened).
 */
export class RouteRun {
  /** Resolves once the key is committed or released (or the store failed to do either). */
  readonly finished: Promise<void>
  private settle!: () => void
  private done = false

  constructor(
    private readonly batches: StoreBatches,
    private readonly recordKey: string,
    private readonly token: string,
    private readonly fingerprint: string,
    private readonly policy: Pick<RequestPolicy<unknown>, 'leaseMs' | 'ttlMs' | 'replayHeaders' | 'maxBodyBytes' | 'storeClientErrors'>,
    private readonly settledKeys: SettledKeys,
    private readonly onFinished: () => void,
  ) {
    this.finished = new Promise((resolve) => (this.settle = resolve))
  }

  /** Commits the route's response (or releases the key after a 5xx) before the response is sent, so a retry that follows it finds the key done. */
  async finish(completion: RouteCompletion): Promise<void> {
    if (this.done) return
    this.done = true
    const { status } = completion
    const release = status >= 500 || (status >= 400 && !this.policy.storeClientErrors)
    try {
      if (release) await this.batches.release(this.recordKey, this.token)
      else {
        const stored = storedResponseOf(completion, this.policy.replayHeaders, this.policy.maxBodyBytes)
        const sentAt = Date.now()
        const code = await this.batches.commit(this.recordKey, stored, this.token, this.policy.ttlMs)
        // What the store kept, as a claim would answer it (a result over the store's cap is not kept).
        if (code === CommitCode.COMMITTED) this.settledKeys.remember(this.recordKey, this.fingerprint, stored, sentAt, this.policy.ttlMs)
        else if (code !== CommitCode.REFUSED) this.settledKeys.remember(this.recordKey, this.fingerprint, undefined, sentAt, this.policy.ttlMs)
        if (code === CommitCode.REFUSED) warn(`the lease of an Idempotency-Key ran out before its request ended (leaseMs ${this.policy.leaseMs}): its response was not kept, and a retry may run the route again`)
      }
    } catch (error) {
      warn(`the idempotency store failed to ${release ? 'release' : 'commit'} a request's key (${errorCodeText(error)}): it stays claimed until its lease ends`)
    } finally {
      this.settle()
      this.onFinished()
    }
  }
}

/** A done key's answer: its kept response, or why there is none, or a conflict of fingerprints (a cached record's; the store's are checked before). */
function answerDone(storedFingerprint: string | undefined, result: unknown, fingerprint: string): Decision {
  if (storedFingerprint !== undefined && storedFingerprint !== fingerprint) return reply(conflictProblem())
  const replay = replayOf(result)
  return 'notReplayable' in replay
    ? reply(problemReply(ErrorCode.RESPONSE_NOT_REPLAYABLE, `the request with this Idempotency-Key completed, but its response was not kept: ${replay.notReplayable}`))
    : reply(replay)
}

function conflictProblem(): LayerReply {
  return problemReply(ErrorCode.CONFLICT, 'this Idempotency-Key was used with another request (method, path or body); use a new key for a new request')
}

function reply(layerReply: LayerReply): Decision {
  return { kind: 'reply', reply: layerReply }
}

function errorCodeText(error: unknown): string {
  return error instanceof IdemError ? `${error.code}: ${error.message}` : errorText(error)
}

function warn(message: string): void {
  process.emitWarning(message, { code: 'IDEM_HTTP_SETTLE' })
}
