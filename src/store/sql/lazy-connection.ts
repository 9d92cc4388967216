import { ErrorCode, IdemError } from '../../errors.js'

/**
 * A pool or database opened on first use, once, for the three SQL backends:
 * callers that arrive while it opens share the attempt, a failed attempt
 * leaves nothing behind (the next call tries again), and close waits for an
 * attempt under way so nothing it opens is left open.
 */
export class LazyConnection<T> {
  private opened: T | undefined
  private opening: Promise<void> | undefined

  constructor(private readonly open: () => Promise<T>) {}

  connect(): Promise<void> {
    if (this.opened !== undefined) return Promise.resolve()
    this.opening ??= this.open()
      .then((value) => {
        this.opened = value
      })
      .finally(() => (this.opening = undefined))
    return this.opening
  }

  /** The open connection: only after connect() resolved (the store base prepares every call). */
  get value(): T {
    if (this.opened === undefined) throw new IdemError(ErrorCode.STORE_FAILED, 'the SQL store is not connected (closed, or used before connect())')
    return this.opened
  }

  /** Hands the open connection to `end` once (it decides whether the store owns it); a later connect() opens a new one. */
  async close(end: (value: T) => void | Promise<void>): Promise<void> {
    await this.opening?.catch(() => {})
    const value = this.opened
    this.opened = undefined
    if (value !== undefined) await end(value)
  }
}
