/**
 * Options of the HTTP Idempotency-Key layer (`idem/fastify`, `idem/express`):
 * typed and documented once, validated once into a RequestPolicy. A route may
 * override the policy fields; the engine and the record namespace are the
 * layer's own.
 */
import type { Engine } from '../engine.js'
import { MAX_DURATION_MS, MAX_LEASE_MS } from '../config.js'
import { isEngine, OptionReader } from '../validation.js'
import { DEFAULT_POLL_MS, readWaitPolicy, type WaitPolicy } from '../wait-policy.js'

/** The request as the layer reads it, whatever the framework. */
export interface RequestView {
  /** Upper case, as Node gives it. */
  method: string
  /** The URL path, without the query string. */
  path: string
  /** Node's rawHeaders: names and values in the order received, repeats kept (a repeated Idempotency-Key is refused). */
  rawHeaders: readonly string[]
  /** The parsed body, when a body parser ran before the layer (undefined otherwise). */
  body: unknown
}

/** What a route may set for itself (Fastify: `config: { idempotency: {...} }`; Express: `middleware.route({...})`). */
export interface RequestPolicyOptions<Req> {
  /** Methods whose requests the layer handles; any other passes through untouched. @default ['POST', 'PATCH'] */
  methods?: string[]
  /** Whether a request of those methods must carry an Idempotency-Key (400 without one). Without it such a request passes through untouched. @default false */
  required?: boolean
  /** How long a completed request's response is kept and replayed, in ms. @default the engine's ttlMs */
  ttlMs?: number
  /**
   * Lease of a running request's claim, in ms, renewed every leaseMs/3 while
   * the route runs. A process that dies mid-request frees its key after this.
   * @default the engine's leaseMs
   */
  leaseMs?: number
  /**
   * The caller the key belongs to: the authenticated subject or API key id.
   * The same key from two callers is two keys, and neither can be answered
   * with the other's response. Return undefined for a request with no
   * caller: such requests share one key space. @default none (every caller
   * shares one key space: see the README's warning)
   */
  scope?: (request: Req) => string | undefined | Promise<string | undefined>
  /**
   * What makes two requests with one key "the same request": a retry with
   * another fingerprint is refused with 422. @default the SHA-256 of the
   * method, the path and the body (canonical JSON for a parsed body, the
   * bytes for a Buffer or string body)
   */
  fingerprint?: (request: Req) => string | Promise<string>
  /** Response headers stored and replayed, by name (case-insensitive). Set-Cookie is not among the defaults on purpose: a replay would hand a session to whoever retries. @default DEFAULT_REPLAY_HEADERS */
  replayHeaders?: string[]
  /**
   * Largest response body kept for replay, in bytes. A larger response is
   * sent as usual and its key is done, but a retry gets 409
   * RESPONSE_NOT_REPLAYABLE. Bodies are kept as base64 inside the store's
   * result, under the store's own cap too (Redis: maxResultBytes, 64 KiB).
   * @default 32_768
   */
  maxBodyBytes?: number
  /** Whether 4xx answers are stored and replayed (Stripe's practice). false releases the key after a 4xx, so a corrected retry with the same key runs. 5xx answers always release it. @default true */
  storeClientErrors?: boolean
  /**
   * Instead of answering 409 at once while the key's first request runs, poll
   * the store every pollMs for up to maxMs and answer with the first
   * request's response (or run the route, if the first one failed and freed
   * the key). Works across processes: it polls the shared store. Still 409
   * after maxMs. @default none (409 at once)
   */
  wait?: { maxMs: number; pollMs?: number }
}

/** Options of `idempotency()` (Express) and the Fastify plugin. */
export interface IdempotencyOptions<Req> extends RequestPolicyOptions<Req> {
  /** The engine whose store keeps the records (its store settings, leaseMs and ttlMs). The layer opens its own connection to that store and closes it on close. */
  engine: Engine
  /**
   * First part of every record's key: idempotencyKey(namespace, scope, key).
   * Keeps HTTP records apart from the queue's keys in a shared store: a job
   * enqueued with the request's own key is never taken for the request.
   * @default 'http'
   */
  namespace?: string
  /**
   * Completed requests whose responses this process keeps in memory until
   * their records expire, so a replay costs no store call (an LRU, as the
   * engine's settled keys). Each holds up to maxBodyBytes as base64: 1,000
   * at the default cap is at most about 44 MB. 0 keeps none.
   * @default 1000
   */
  replayCacheKeys?: number
}

/** Headers a replay carries by default: what describes the body and where the created resource is. */
export const DEFAULT_REPLAY_HEADERS = ['content-type', 'content-encoding', 'content-language', 'content-location', 'location', 'etag', 'last-modified', 'cache-control', 'link', 'vary']

const policyDefaults = {
  methods: ['POST', 'PATCH'],
  required: false,
  maxBodyBytes: 32_768,
  storeClientErrors: true,
  namespace: 'http',
  replayCacheKeys: 1000,
}

/** How the layer treats the requests of a route; waitMs 0: answer 409 at once. */
export interface RequestPolicy<Req> extends WaitPolicy {
  methods: ReadonlySet<string>
  required: boolean
  ttlMs: number
  leaseMs: number
  scope: ((request: Req) => string | undefined | Promise<string | undefined>) | undefined
  fingerprint: ((request: Req) => string | Promise<string>) | undefined
  /** Lower case. */
  replayHeaders: ReadonlySet<string>
  maxBodyBytes: number
  storeClientErrors: boolean
}

export interface LayerConfig<Req> {
  engine: Engine
  namespace: string
  replayCacheKeys: number
  policy: RequestPolicy<Req>
}

const POLICY_FIELDS = ['methods', 'required', 'ttlMs', 'leaseMs', 'scope', 'fingerprint', 'replayHeaders', 'maxBodyBytes', 'storeClientErrors', 'wait']
/** The longest body kept: a record's result is one value of the store, and no store keeps values this large well. */
const MAX_BODY_BYTES = 64 * 1024 * 1024

/** The layer's options, validated once: every bad field named in one ConfigError. */
export function resolveLayer<Req>(options: unknown, owner: string): LayerConfig<Req> {
  const o = new OptionReader(options)
  o.onlyKnown(['engine', 'namespace', 'replayCacheKeys', ...POLICY_FIELDS], owner)
  const engine = o.value('engine')
  if (!isEngine(engine)) o.mustBe('engine', 'an idem Engine (await createEngine(...))')
  else if (engine.config.strategies !== undefined) o.mustBe('engine', "an engine without strategies (the layer keeps its records in one store: give it one type's engine, engine.strategy(type))")
  const namespace = o.string('namespace', policyDefaults.namespace, 'a non-empty string of at most 128 characters without U+0000', (text) => text.length > 0 && text.length <= 128 && !text.includes('\0'))
  const replayCacheKeys = o.integer('replayCacheKeys', policyDefaults.replayCacheKeys, 0, 2 ** 24)
  const fallback = isEngine(engine) ? { ttlMs: engine.config.ttlMs, leaseMs: engine.config.leaseMs } : { ttlMs: 1, leaseMs: 10 }
  const policy = readPolicy<Req>(o, fallback)
  o.check()
  return { engine: engine as Engine, namespace, replayCacheKeys, policy }
}

/** A route's overrides over the layer's policy, validated the same way. */
export function resolveRoutePolicy<Req>(overrides: unknown, base: RequestPolicy<Req>, owner: string): RequestPolicy<Req> {
  const o = new OptionReader(overrides, [], 'idempotency')
  o.onlyKnown(POLICY_FIELDS, owner)
  const policy = readPolicy(o, base)
  o.check()
  return policy
}

type PolicyFallback<Req> = Partial<RequestPolicy<Req>> & { ttlMs: number; leaseMs: number }

function readPolicy<Req>(o: OptionReader, base: PolicyFallback<Req>): RequestPolicy<Req> {
  const methods = o.has('methods') ? readNames(o, 'methods', 'a non-empty array of HTTP method names', (name) => name.toUpperCase()) : (base.methods ?? new Set(policyDefaults.methods))
  const replayHeaders = o.has('replayHeaders') ? readNames(o, 'replayHeaders', 'an array of header names', (name) => name.toLowerCase(), true) : (base.replayHeaders ?? new Set(DEFAULT_REPLAY_HEADERS))
  const leaseMs = o.integer('leaseMs', base.leaseMs, 10, MAX_LEASE_MS)
  const wait = o.section('wait', 'an object like { maxMs: 5000 }')
  let waitMs = base.waitMs ?? 0
  let pollMs = base.pollMs ?? DEFAULT_POLL_MS
  if (o.has('wait') && wait.valid) ({ waitMs, pollMs } = readWaitPolicy(wait, 'wait'))
  return {
    methods,
    required: o.boolean('required', base.required ?? policyDefaults.required),
    ttlMs: o.integer('ttlMs', base.ttlMs, 1, MAX_DURATION_MS),
    leaseMs,
    scope: o.has('scope') ? o.function('scope', 'a function (request) => string | undefined', false) : base.scope,
    fingerprint: o.has('fingerprint') ? o.function('fingerprint', 'a function (request) => string', false) : base.fingerprint,
    replayHeaders,
    maxBodyBytes: o.integer('maxBodyBytes', base.maxBodyBytes ?? policyDefaults.maxBodyBytes, 0, MAX_BODY_BYTES),
    storeClientErrors: o.boolean('storeClientErrors', base.storeClientErrors ?? policyDefaults.storeClientErrors),
    waitMs,
    pollMs,
  }
}

/** An array of header or method names, normalised by `normal`. */
function readNames(o: OptionReader, field: string, rule: string, normal: (name: string) => string, emptyAllowed = false): Set<string> {
  const value = o.value(field)
  const valid = Array.isArray(value) && (emptyAllowed || value.length > 0) && value.every((name) => typeof name === 'string' && /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name))
  if (!valid) {
    o.mustBe(field, rule)
    return new Set()
  }
  return new Set((value as string[]).map(normal))
}
