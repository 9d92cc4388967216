import { describe, expect, it } from 'vitest'
import { idem } from '../support/idem-cli.js'

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

  it('--mode owned runs the embedded demo in owned mode: partitions and group commits in the table, lost 0, double 0', () => {
    const run = idem('demo', '--messages', '5000', '--mode', 'owned')
    expect(run.code).toBe(0)
    expect(run.stdout).toMatch(/owned: 64 partitions, 1 member/)
    expect(run.stdout).toMatch(/group commits\s+\d/)
    expect(run.stdout).toMatch(/double effects\s+0/)
  })

  it('--versions runs status pushes through version-aware keys: every parcel at its newest status, none went back, none ran twice', () => {
    const run = idem('demo', '--versions', '--messages', '20000', '--json')
    expect(run.code).toBe(0)
    const summary = JSON.parse(run.stdout)
    expect(summary.atNewest).toBe(summary.parcels)
    expect([summary.wentBack, summary.ranTwice]).toEqual([0, 0])
    expect(summary.outOfOrder).toBeGreaterThan(0)
    expect(summary.stale).toBeGreaterThan(0)
    expect(summary.applied + summary.stale + summary.duplicate).toBe(summary.messages)
  })

  it.each([
    [['--versions', '--threads', '2'], '--threads: must be left out with --versions'],
    [['--versions', '--mode', 'owned'], '--mode: must be left out with --versions'],
    [['--versions', '--redis', 'http://x'], '--redis: must be a redis:// or rediss:// URL'],
    [['--messages', '0'], '--messages: must be an integer from 1 to 100000000, got 0'],
    [['--dup-rate', '1.5'], '--dup-rate: must be a number in [0, 1), got 1.5'],
    [['--threads', 'two'], '--threads: must be an integer from 0 to 64, got "two"'],
    [['--bogus'], "Unknown option '--bogus'"],
    [['--mode', 'fast'], `--mode: must be 'strict' or 'owned', got "fast"`],
    [['--mode', 'owned', '--threads', '2'], '--threads: must be 0 with --mode owned'],
    [['--mode', 'owned', '--store', 'sqlite:/tmp/idem-cli-test.db'], '--store: memory with --mode owned'],
    [['--kill-every', '5'], '--kill-every: must be given with --redis URL --mode owned only'],
    [['--redis', 'redis://127.0.0.1:6379', '--mode', 'owned', '--kill-every', '0'], '--kill-every: must be an integer from 1 to 3600, got 0'],
  ])('bad flags %j exit 2 with the reason', (args, reason) => {
    const run = idem('demo', ...args)
    expect(run.code).toBe(2)
    expect(run.stderr).toContain(reason)
  })

  it('demo http: retries, concurrent copies and payload changes over real HTTP, every key run once, exit 0', () => {
    const run = idem('demo', 'http', '--keys', '200', '--burst', '5', '--json')
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const summary = JSON.parse(run.stdout)
    expect(summary).toMatchObject({ keys: 200, executions: 200, lost: 0, doubleExecutions: 0, unexpected: 0, conflicts422: 20, payloadChanges: 20 })
    // Each key: 5 copies answered with a run or a replay, plus the retry after completion.
    expect(summary.replays).toBe(200 * 5)
    expect(summary.requests).toBe(200 * 6 + 20 + summary.inFlight409)
  })

  it('demo http prints its table, and refuses a bad flag with exit 2', () => {
    const run = idem('demo', 'http', '--keys', '20')
    expect(run.code).toBe(0)
    for (const label of ['requests', 'route executions', 'replays', '409 in flight', '422 payload changed', 'lost', 'double']) expect(run.stdout).toContain(label)
    const bad = idem('demo', 'http', '--burst', '0')
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain('--burst: must be an integer from 1 to 1000, got 0')
  })

  it('an unknown command exits 2 with the usage', () => {
    const run = idem('frobnicate')
    expect(run.code).toBe(2)
    expect(run.stderr).toContain('idem: unknown command "frobnicate"')
    expect(run.stderr).toContain('usage:')
  })
})

describe('idem usage', () => {
  it.each([
    ['demo', 'usage: idem demo  [--messages N]'],
    ['bench', 'usage: idem bench [--json] [--quick] [--only bloom,lru,engine,redis,streams,sql,bullmq,owned,versions,http,amqp,nats,platform]'],
    ['migrate', 'usage: idem migrate --store postgres://…|mysql://…|sqlite:PATH [--tables N] [--table-prefix P]'],
    ['store', 'usage: idem store show|ack-reset --store redis://HOST:PORT[/DB] [--prefix P]'],
    ['consume', 'usage: idem consume --redis URL --queue NAME'],
  ])('idem %s --help prints its usage on stdout, exit 0', (command, usage) => {
    for (const flag of ['--help', '-h']) {
      const run = idem(command, flag)
      expect(run.stderr).toBe('')
      expect(run.code).toBe(0)
      expect(run.stdout.startsWith(usage)).toBe(true)
    }
  })

  it('--help after other flags still prints the usage instead of running', () => {
    const run = idem('demo', '--messages', '5', '--help')
    expect(run.code).toBe(0)
    expect(run.stdout).toContain('usage: idem demo')
  })

  it('idem --help lists every public command, bench with --only; exit 0', () => {
    const run = idem('--help')
    expect(run.code).toBe(0)
    for (const line of ['  idem demo  [', '  idem bench [--json] [--quick] [--only ', '  idem migrate --store', '  idem store show|ack-reset --store', '  idem --version | idem --help | idem <command> --help']) {
      expect(run.stdout).toContain(line)
    }
    expect(run.stdout).not.toContain('idem consume')
  })

  it('idem --version prints the package version, exit 0', async () => {
    const { readFile } = await import('node:fs/promises')
    const { version } = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
    const run = idem('--version')
    expect(run).toEqual({ code: 0, stdout: `${version}\n`, stderr: '' })
  })

  it.each([
    [[], 'idem: no command given'],
    [['migrate', '--bogus'], "idem migrate: Unknown option '--bogus'"],
    [['bench', '--only', 'nope'], 'idem bench: unknown suite "nope"'],
    [['bench', '--fast'], "idem bench: Unknown option '--fast'"],
  ])('bad input %j exits 2 with the reason on stderr', (args, reason) => {
    const run = idem(...args)
    expect(run.code).toBe(2)
    expect(run.stderr).toContain(reason)
    expect(run.stdout).toBe('')
  })
})
