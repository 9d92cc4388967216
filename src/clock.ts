/**
 * Time source for leases, TTLs and bloom rotation. Injected so tests move time
 * exactly instead of sleeping. Stores with their own clock (Redis PX) ignore it.
 */
export interface Clock {
  now(): number
}

export const systemClock: Clock = { now: () => Date.now() }

/** A clock tests advance by hand. */
export class ManualClock implements Clock {
  constructor(private time = 0) {}
  now(): number {
    return this.time
  }
  advance(ms: number): void {
    this.time += ms
  }
}
