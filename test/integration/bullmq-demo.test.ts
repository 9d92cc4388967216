import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { idem } from '../support/idem-cli.js'

const cli = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url))
const url = 'redis://127.0.0.1:6379'
const redis = new Redis(url)
afterAll(() => redis.disconnect())

describe('idem demo --redis (end to end through BullMQ)', () => {
  it('--json: one effect per unique key across consumer processes, exit 0, and the run leaves no keys behind', async () => {
    const run = idem('demo', '--redis', url, '--messages', '4000', '--consumers', '2', '--json')
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const summary = JSON.parse(run.stdout)
    expect(summary.messages).toBe(4000)
    expect(summary.uniqueKeys).toBe(2800)
    expect(summary.effects).toBe(summary.uniqueKeys)
    expect(summary.lost).toBe(0)
    expect(summary.doubleEffects).toBe(0)
    expect(summary.failed).toBe(0)
    expect(summary.duplicates).toBeGreaterThanOrEqual(4000 - 2800)
    expect(summary.msgsPerSec).toBeGreaterThan(0)
    expect(summary.config.store).toBe('redis')
    expect(summary.transport).toMatchObject({ kind: 'bullmq', consumers: 2, concurrency: 256 })
    const left = [...(await redis.keys(`${summary.transport.prefix}*`)), ...(await redis.keys(`bull:${summary.transport.queue}:*`))]
    expect(left).toEqual([])
  })

  it('the table names the transport and every figure of the embedded demo', () => {
    const run = idem('demo', '--redis', url, '--messages', '1500', '--consumers', '1')
    expect(run.code).toBe(0)
    for (const label of ['BullMQ: 1 consumer process ×', 'messages', 'unique keys', 'handler effects', 'double effects', 'duplicates dropped', 'msgs/s', 'p99', 'in-flight retries']) {
      expect(run.stdout).toContain(label)
    }
  })

  it('Ctrl-C mid-run exits 130 and deletes the queue and the keys of the run', async () => {
    const child = spawn(process.execPath, [cli, 'demo', '--redis', url, '--messages', '200000'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (chunk) => (stderr += chunk))
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    await new Promise((resolve) => setTimeout(resolve, 3000))
    child.kill('SIGINT')
    expect(await exited).toBe(130)
    const match = /interrupted by SIGINT; deleted the run's queue (\S+) and its keys (\S+)\*/.exec(stderr)
    expect(match, stderr).not.toBeNull()
    const [, queue, prefix] = match!
    expect([...(await redis.keys(`${prefix}*`)), ...(await redis.keys(`bull:${queue}:*`))]).toEqual([])
  })

  it.each([
    [['--consumers', '2'], '--consumers: must be left out without --redis (the in-memory demo has no consumer processes), got 2'],
    [['--redis', 'http://127.0.0.1:6379'], '--redis: must be a redis:// or rediss:// URL'],
    [['--redis', url, '--consumers', '0'], '--consumers: must be an integer from 1 to 64'],
  ])('bad flags %j exit 2 with the reason', (args, reason) => {
    const run = idem('demo', ...args)
    expect(run.code).toBe(2)
    expect(run.stderr).toContain(reason)
  })

  it('--help says what --redis does and its smaller default', () => {
    const run = idem('--help')
    expect(run.code).toBe(0)
    expect(run.stdout).toContain('--redis URL')
    expect(run.stdout).toContain('100,000')
  })
})
