import { setTimeout as sleep } from 'node:timers/promises'

/** How often a failed call is tried again, and how long to wait first (doubled each time). */
export interface RetryPolicy {
  retries: number
  backoffMs: number
}

export interface RetryHooks {
  /** An error no retry can fix (a closed pool, a refused schema): returned as the error to throw now. */
  permanent?(error: unknown): Error | undefined
  /** Called on every failed attempt, the last one too, e.g. to forget what the failure made stale (a schema check). */
  onFailure?(error: unknown): void
  /** Called before each wait, e.g. to count retries. */
  onRetry?(error: unknown, attempt: number): void
  /** The error to throw once every attempt failed. */
  exhausted(error: unknown, attempts: number): Error
}

/**
 * The one retry loop of idem: the stores and the transports call it, so every
 * bounded retry waits the same way. The call must be safe to repeat (every
 * store operation is, under the same owner token): a failure may be ambiguous,
 * applied by the server with its reply lost.
 */
export async function withRetries<T>(run: () => Promise<T>, policy: RetryPolicy, hooks: RetryHooks): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await run()
    } catch (error) {
      hooks.onFailure?.(error)
      const permanent = hooks.permanent?.(error)
      if (permanent !== undefined) throw permanent
      if (attempt >= policy.retries) throw hooks.exhausted(error, attempt + 1)
      hooks.onRetry?.(error, attempt)
      await sleep(policy.backoffMs * 2 ** attempt)
    }
  }
}
