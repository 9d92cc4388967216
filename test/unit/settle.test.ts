/** settleOf, the one table that decides what a transport does with an outcome (src/outcome.ts): the store's refusals never ack. */
import { describe, expect, it } from 'vitest'
import { ErrorCode, IdemError } from '../../dist/src/errors.js'
import { Settle, settleOf } from '../../dist/src/outcome.js'

const outcome = (verdict: string, code?: string) => ({ key: 'k', verdict, ...(code === undefined ? {} : { error: new IdemError(code as ErrorCode, code) }) }) as Parameters<typeof settleOf>[0]

describe('settleOf', () => {
  it.each([ErrorCode.STORE_FAILED, ErrorCode.STORE_RESET, ErrorCode.STORE_UNSAFE, ErrorCode.STORE_LAYOUT_MISMATCH, ErrorCode.IN_FLIGHT])('in-flight with %s: WAIT (redelivered, no attempt used, never acked)', (code) => {
    expect(settleOf(outcome('in-flight', code))).toBe(Settle.WAIT)
  })

  it.each([ErrorCode.STORE_FAILED, ErrorCode.STORE_RESET])('new with %s on the commit: WAIT (the handler ran; its commit waits for the store)', (code) => {
    expect(settleOf(outcome('new', code))).toBe(Settle.WAIT)
  })
})
