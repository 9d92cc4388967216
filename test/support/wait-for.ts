/**
 * Polls `predicate` every 20 ms until it holds; throws naming `what` after
 * `timeoutMs`. For a condition a test expects soon (an ack, a take-over), not
 * for long runs: those are bounded by progress (see the fault tests).
 */
export async function waitFor(what: string, predicate: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
