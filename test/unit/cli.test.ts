import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const cli = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url))
function idem(...args: string[]) {
  const run = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 60_000 })
  return { code: run.status, stdout: run.stdout, stderr: run.stderr }
}

describe('idem demo', () => {
  it.each(['0', '2'])('threads %s: --json prints one summary with one effect per unique key, exit 0', (threads) => {
    const run = idem('demo', '--messages', '20000', '--threads', threads, '--json')
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const summary = JSON.parse(run.stdout)
    expect(summary.messages).toBe(20_000)
    expect(summary.uniqueKeys).toBeGreaterThan(10_000)
    expect(summary.effects).toBe(summary.uniqueKeys)
    expect(summary.duplicates).toBe(20_000 - summary.uniqueKeys)
    expect(summary.lost).toBe(0)
    expect(summary.msgsPerSec).toBeGreaterThan(0)
    expect(Object.keys(summary.layers)).toEqual(expect.arrayContaining(['lruHits', 'bloomNegatives', 'bloomFalsePositives', 'storeOperations']))
  })

  it('the table names every figure', () => {
    const run = idem('demo', '--messages', '5000', '--threads', '0')
    expect(run.code).toBe(0)
    for (const label of ['messages', 'unique keys', 'handler effects', 'msgs/s', 'p99']) expect(run.stdout).toContain(label)
  })

  it.each([
    [['--messages', '0'], '--messages: must be an integer'],
    [['--dup-rate', '1.5'], '--dup-rate: must be a number in [0, 1)'],
    [['--threads', 'two'], '--threads: must be an integer'],
    [['--bogus'], "Unknown option '--bogus'"],
  ])('bad flags %j exit 2 with the reason', (args, reason) => {
    const run = idem('demo', ...args)
    expect(run.code).toBe(2)
    expect(run.stderr).toContain(reason)
  })

  it('an unknown command exits 2 with the usage', () => {
    const run = idem('frobnicate')
    expect(run.code).toBe(2)
    expect(run.stderr).toContain('usage:')
  })
})
