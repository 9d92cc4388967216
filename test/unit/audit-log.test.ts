/**
 * The audit log: records sealed and chained (AES-256-GCM and SM4), tampering
 * found by verify (an altered byte, a deleted line, two lines swapped) and a
 * truncated tail told apart, the chain across rotated files, drop versus
 * back-pressure, bad config naming the field and never the key, the CLI's
 * exit codes, the engine writing one record per decision ('all') or per
 * enforced decision ('acted'), and one per forget and purge.
 */
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import { createEngine } from '../../dist/src/engine.js'
import { ConfigError } from '../../dist/src/errors.js'
import { AuditLog } from '../../dist/src/audit/audit-log.js'
import { readAuditConfig, type AuditConfig } from '../../dist/src/audit/audit-config.js'
import { AuditKeys } from '../../dist/src/audit/audit-keys.js'
import { verifyFiles } from '../../dist/src/audit/audit-verify.js'
import { filesOf } from '../../dist/src/audit/audit-file-sink.js'
import type { AuditRecord } from '../../dist/src/audit/audit-chunk.js'
import type { AuditSink } from '../../dist/src/audit/audit-sink.js'
import type { DecisionEvent } from '../../dist/src/observe/decision-event.js'
import { OptionReader } from '../../dist/src/validation.js'

const dir = mkdtempSync(join(tmpdir(), 'idem-audit-test-'))
const cli = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

let fileNo = 0
const newFile = (): string => join(dir, `audit-${fileNo++}.log`)
const hexKey = (cipher: 'aes-256-gcm' | 'sm4'): string => randomBytes(cipher === 'sm4' ? 16 : 32).toString('hex')

function configOf(audit: Record<string, unknown>): AuditConfig {
  const o = new OptionReader({ audit })
  const config = readAuditConfig(o)
  o.check()
  return config!
}

function eventsOf(count: number, from = 0, enforced = true): DecisionEvent[] {
  return Array.from({ length: count }, (_, i) => ({ at: 1_700_000_000_000 + from + i, namespace: i % 3 === 0 ? 'orders' : undefined, key: `key-${from + i}`, verdict: i % 2 === 0 ? 'new' : 'duplicate', layer: 'store', enforced, ...(i % 5 === 0 ? { owner: `tok-${from}` } : {}), ...(i % 7 === 0 ? { errorCode: 'HANDLER_FAILED' } : {}) }) as DecisionEvent)
}

async function writeLog(file: string, key: string, cipher: 'aes-256-gcm' | 'sm4', lines: number, perLine: number, extra: Record<string, unknown> = {}): Promise<void> {
  const log = new AuditLog(configOf({ file, key, cipher, ...extra }))
  // A close between writes is the only way to force a line boundary from outside; one log per line keeps the chain going on from the file's tail.
  log.observe(eventsOf(perLine, 0))
  await log.close()
  for (let l = 1; l < lines; l++) {
    const next = new AuditLog(configOf({ file, key, cipher, ...extra }))
    next.observe(eventsOf(perLine, l * perLine))
    await next.close()
  }
}

function run(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', env: { ...process.env, IDEM_AUDIT_KEY: '' } })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

describe('sealed records', () => {
  for (const cipher of ['aes-256-gcm', 'sm4'] as const) {
    it(`round trip with ${cipher}: every field back, keys as digests unless rawKeys`, async () => {
      const file = newFile()
      const key = hexKey(cipher)
      await writeLog(file, key, cipher, 3, 50)
      const records: AuditRecord[] = []
      const result = verifyFiles([file], AuditKeys.fromHex(key, cipher), (r) => records.push(r))
      expect(result).toMatchObject({ status: 'ok', lines: 3, records: 150 })
      expect(records[0]).toEqual({ time: new Date(1_700_000_000_000).toISOString(), namespace: 'orders', keyDigest: expect.any(String), verdict: 'new', rollout: 'enforced', layer: 'store', owner: 'tok-0', errorCode: 'HANDLER_FAILED' })
      expect(records[1]).toEqual({ time: new Date(1_700_000_000_001).toISOString(), keyDigest: expect.any(String), verdict: 'duplicate', rollout: 'enforced', layer: 'store' })
      expect(readFileSync(file, 'utf8')).not.toContain('key-1')
      expect(new Set(records.map((r) => r.keyDigest)).size).toBe(150)

      const raw = newFile()
      await writeLog(raw, key, cipher, 1, 4, { rawKeys: true })
      const rawRecords: AuditRecord[] = []
      verifyFiles([raw], AuditKeys.fromHex(key, cipher), (r) => rawRecords.push(r))
      expect(rawRecords.map((r) => r.key)).toEqual(['key-0', 'key-1', 'key-2', 'key-3'])
    })
  }
})

describe('tampering', () => {
  const key = hexKey('aes-256-gcm')
  const keys = AuditKeys.fromHex(key, 'aes-256-gcm')
  let original: string
  const tampered = (text: string): ReturnType<typeof verifyFiles> => {
    const file = newFile()
    writeFileSync(file, text)
    return verifyFiles([file], keys)
  }
  it('an altered byte, a deleted line, two lines swapped: verify names the first bad line; a cut tail is truncated', async () => {
    const file = newFile()
    await writeLog(file, key, 'aes-256-gcm', 4, 10)
    original = readFileSync(file, 'utf8')
    expect(tampered(original).status).toBe('ok')
    const lines = original.split('\n').slice(0, -1)
    expect(lines).toHaveLength(4)

    const altered = [...lines]
    const at = Math.floor(altered[1].length / 2)
    altered[1] = altered[1].slice(0, at) + (altered[1][at] === 'A' ? 'B' : 'A') + altered[1].slice(at + 1)
    expect(tampered(altered.join('\n') + '\n')).toMatchObject({ status: 'tampered', line: 2 })

    expect(tampered([lines[0], lines[2], lines[3]].join('\n') + '\n')).toMatchObject({ status: 'tampered', line: 2, seq: 2 })
    expect(tampered([lines[1], lines[2], lines[3]].join('\n') + '\n')).toMatchObject({ status: 'ok', startsAt: 1 })
    expect(tampered([lines[0], lines[2], lines[1], lines[3]].join('\n') + '\n')).toMatchObject({ status: 'tampered', line: 2 })
    expect(tampered(original.slice(0, original.length - 40))).toMatchObject({ status: 'truncated', line: 4, lines: 3, records: 30 })
  })

  it('the CLI: exit 0 whole, 1 naming the line, 3 truncated, 2 for usage and a key that does not fit', async () => {
    const keyFile = join(dir, 'cli.key')
    writeFileSync(keyFile, `${key}\n`)
    const file = newFile()
    writeFileSync(file, original)
    expect(run('audit', 'verify', file, '--key-file', keyFile)).toMatchObject({ status: 0, stdout: expect.stringContaining('ok: 1 file, 4 lines, 40 records') })
    const lines = original.split('\n').slice(0, -1)
    const bad = newFile()
    writeFileSync(bad, [lines[0], lines[2], lines[1], lines[3]].join('\n') + '\n')
    const tamperedRun = run('audit', 'verify', bad, '--key-file', keyFile)
    expect(tamperedRun.status).toBe(1)
    expect(tamperedRun.stdout).toContain(`TAMPERED: ${bad} line 2`)
    const cut = newFile()
    writeFileSync(cut, original.slice(0, -10))
    expect(run('audit', 'verify', cut, '--key-file', keyFile)).toMatchObject({ status: 3, stdout: expect.stringContaining('truncated') })
    const read = run('audit', 'read', file, '--key-file', keyFile)
    expect(read.status).toBe(0)
    expect(read.stdout.trim().split('\n').map((l) => JSON.parse(l) as AuditRecord)).toHaveLength(40)

    const otherKey = join(dir, 'other.key')
    writeFileSync(otherKey, hexKey('aes-256-gcm'))
    const wrong = run('audit', 'verify', file, '--key-file', otherKey)
    expect(wrong.status).toBe(2)
    expect(wrong.stderr).toContain('another key')
    expect(run('audit', 'verify', file, '--key-file', keyFile, '--cipher', 'sm4').status).toBe(2)
    expect(run('audit', 'verify', file, '--key-file', join(dir, 'missing.key')).status).toBe(2)
    expect(run('audit', 'verify', '--key-file', keyFile).status).toBe(2)
    expect(run('audit', 'check', file).status).toBe(2)
    const short = join(dir, 'short.key')
    writeFileSync(short, key.slice(0, 40))
    const shortRun = run('audit', 'verify', file, '--key-file', short)
    expect(shortRun.status).toBe(2)
    expect(shortRun.stderr).not.toContain(key.slice(0, 40))
  })
})

describe('rotation', () => {
  it('files rotate by size and the chain runs on across them; a file left out is found', async () => {
    const file = newFile()
    const key = hexKey('sm4')
    await writeLog(file, key, 'sm4', 5, 40, { maxFileBytes: 1024 })
    const files = filesOf(file)
    expect(files.length).toBe(5)
    expect(files[1]).toBe(`${file}.000001`)
    const keys = AuditKeys.fromHex(key, 'sm4')
    expect(verifyFiles(files, keys)).toMatchObject({ status: 'ok', files: 5, lines: 5, records: 200 })
    expect(verifyFiles([files[0], files[2], files[3], files[4]], keys)).toMatchObject({ status: 'tampered', file: files[2], line: 1 })
  })
})

describe('a full buffer', () => {
  /** A sink that holds every append until released. */
  function heldSink(): AuditSink & { lines: Uint8Array[]; release(): void } {
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const lines: Uint8Array[] = []
    return { lines, release: () => release(), tail: () => undefined, append: async (line) => { await gate; lines.push(line) }, close: async () => {} }
  }

  it("'drop' drops and counts what does not fit; 'backpressure' keeps every record and reports full until it drains", async () => {
    const key = hexKey('aes-256-gcm')
    const dropSink = heldSink()
    const dropping = new AuditLog(configOf({ sink: dropSink, key, bufferRecords: 100, whenFull: 'drop' }))
    dropping.observe(eventsOf(150))
    expect(dropping.stats).toMatchObject({ records: 100, dropped: 50, full: 50 })
    expect(dropping.full).toBe(true)
    dropSink.release()
    await dropping.close()
    expect(dropping.stats).toMatchObject({ records: 100, written: 100, dropped: 50, pending: 0 })

    const holdSink = heldSink()
    const holding = new AuditLog(configOf({ sink: holdSink, key, bufferRecords: 100, whenFull: 'backpressure' }))
    holding.observe(eventsOf(150))
    expect(holding.stats).toMatchObject({ records: 150, dropped: 0, full: 50 })
    expect(holding.full).toBe(true)
    const writable = holding.writable()
    holdSink.release()
    await holding.close()
    await writable
    expect(holding.full).toBe(false)
    expect(holding.stats).toMatchObject({ records: 150, written: 150, pending: 0 })
  })

  it.each([
    ['a plain engine', {}],
    ['an engine of strategies', { strategies: { a: {}, b: {} }, typeOf: (m: { key: string }) => (m.key.endsWith('0') ? 'a' : 'b') }],
  ])("'backpressure' holds %s's next batch until the buffer drains", async (_, options) => {
    const sink = heldSink()
    const engine = await createEngine({ ...options, audit: { sink, key: hexKey('aes-256-gcm'), bufferRecords: 100, whenFull: 'backpressure' } })
    const batch = (from: number) => Array.from({ length: 150 }, (_, i) => ({ key: `k${from + i}` }))
    await engine.processBatch(batch(0), async () => 1)
    let settled = false
    const next = engine.processBatch(batch(150), async () => 1).then(() => (settled = true))
    // Nothing can move it on while the sink holds the lines: however loaded the machine, it is still waiting.
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(settled).toBe(false)
    expect(engine.stats().audit).toMatchObject({ records: 150, written: 0 })
    sink.release()
    await next
    await engine.close()
    expect(engine.stats().audit).toMatchObject({ records: 300, written: 300, dropped: 0 })
  })
})

describe('bad config', () => {
  const key = hexKey('aes-256-gcm')
  const problemOf = (audit: Record<string, unknown>): string => {
    try {
      configOf(audit)
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError)
      return (error as ConfigError).message
    }
    throw new Error('no ConfigError')
  }
  it('each names the field and never shows the key', () => {
    const wrongLength = problemOf({ file: newFile(), key: key.slice(0, 62) })
    expect(wrongLength).toContain('audit.key: must be 64 hex characters for aes-256-gcm, got 62 characters')
    expect(wrongLength).not.toContain(key.slice(0, 62))
    expect(problemOf({ file: newFile(), key, cipher: 'sm4' })).toContain('audit.key: must be 32 hex characters for sm4')
    expect(problemOf({ file: newFile(), keyFile: join(dir, 'nope.key') })).toContain('audit.keyFile: must be a readable file')
    expect(problemOf({ file: join(dir, 'no-such-dir', 'a.log'), key })).toContain('audit.file: must be a file idem can read and append to')
    expect(problemOf({ file: newFile(), key, cipher: 'aes-128-cbc' })).toContain("audit.cipher: must be 'aes-256-gcm' or 'sm4'")
    const keyFile = join(dir, 'bad.key')
    writeFileSync(keyFile, 'zz'.repeat(32))
    const notHex = problemOf({ file: newFile(), keyFile })
    expect(notHex).toContain('audit.keyFile: must be 64 hex characters')
    expect(notHex).not.toContain('zz'.repeat(32))
    const readOnly = newFile()
    writeFileSync(readOnly, '')
    chmodSync(readOnly, 0o444)
    if (process.getuid?.() !== 0) expect(problemOf({ file: readOnly, key })).toContain('audit.file')
  })
})

describe('engine wiring', () => {
  it("'all' logs every decision and 'acted' only the enforced ones, as engine.stats() counts them", async () => {
    const key = hexKey('aes-256-gcm')
    const messages = Array.from({ length: 300 }, (_, i) => ({ key: `k${i % 200}`, payload: i }))
    for (const [decisions, rollout] of [['all', { enforce: 0.5 }], ['acted', { enforce: 0.5 }]] as const) {
      const file = newFile()
      const engine = await createEngine({ rollout, audit: { file, key, decisions } })
      await engine.processBatch(messages.slice(0, 150), async () => 1)
      await engine.processBatch(messages.slice(150), async () => 1)
      const totals = engine.stats().totals.verdicts
      await engine.close()
      const records: AuditRecord[] = []
      expect(verifyFiles([file], AuditKeys.fromHex(key, 'aes-256-gcm'), (r) => records.push(r)).status).toBe('ok')
      const all = Object.values(totals).reduce((a, b) => a + b, 0)
      expect(all).toBe(300)
      const enforced = records.filter((r) => r.rollout === 'enforced').length
      if (decisions === 'all') {
        expect(records).toHaveLength(300)
        expect(records.filter((r) => r.verdict === 'new')).toHaveLength(totals.new)
        expect(records.filter((r) => r.verdict === 'duplicate')).toHaveLength(totals.duplicate)
        expect(enforced).toBeGreaterThan(0)
        expect(enforced).toBeLessThan(300)
      } else {
        expect(records.length).toBe(enforced)
        expect(records.length).toBeGreaterThan(0)
        expect(records.length).toBeLessThan(300)
      }
      expect(engine.stats().audit).toMatchObject({ records: records.length, written: records.length, dropped: 0, pending: 0 })
    }
  })

  it('forget and purge are records too (layer admin, what went), with the digest the key has in the decisions', async () => {
    const key = hexKey('sm4')
    const file = newFile()
    const engine = await createEngine({ audit: { file, key, cipher: 'sm4', decisions: 'acted' } })
    const messages = Array.from({ length: 10 }, (_, i) => ({ key: `k${i}`, namespace: 'orders' }))
    await engine.processBatch(messages, async () => 1)
    await engine.processBatch(messages.slice(0, 2), async () => 1)
    expect(await engine.forget('k1', { namespace: 'orders' })).toBe(true)
    expect(await engine.forget('never-seen', { namespace: 'orders' })).toBe(false)
    expect(await engine.forget('k2', { namespace: 'orders', force: true })).toBe(true)
    expect(await engine.purge({ namespace: 'orders' })).toBe(8)
    // A refused forget changes nothing and is not recorded.
    await expect(engine.forget('', { namespace: 'orders' })).rejects.toMatchObject({ code: 'INVALID_KEY' })
    await engine.close()

    const records: AuditRecord[] = []
    expect(verifyFiles([file], AuditKeys.fromHex(key, 'sm4'), (r) => records.push(r)).status).toBe('ok')
    // Every decision was enforced ('acted' keeps them all): ten new, two duplicates, then the four admin actions.
    const admin = records.filter((r) => r.layer === 'admin')
    expect(records.slice(0, 12).map((r) => r.verdict)).toEqual([...Array(10).fill('new'), 'duplicate', 'duplicate'])
    expect(admin.map(({ verdict, namespace, removed, rollout }) => ({ verdict, namespace, removed, rollout }))).toEqual([
      { verdict: 'forget', namespace: 'orders', removed: 1, rollout: 'enforced' },
      { verdict: 'forget', namespace: 'orders', removed: 0, rollout: 'enforced' },
      { verdict: 'forget-forced', namespace: 'orders', removed: 1, rollout: 'enforced' },
      { verdict: 'purge', namespace: 'orders', removed: 8, rollout: 'enforced' },
    ])
    const duplicateOfK1 = records.filter((r) => r.verdict === 'duplicate')[1]
    expect(admin[0].keyDigest).toBe(duplicateOfK1.keyDigest)
    expect(admin[1].keyDigest).not.toBe(admin[0].keyDigest)
    expect(admin[3]).not.toHaveProperty('keyDigest')
    expect(engine.stats().audit).toMatchObject({ records: 16, written: 16 })
  })

  it("with strategies, a type's forget goes to the one audit log", async () => {
    const key = hexKey('aes-256-gcm')
    const file = newFile()
    const engine = await createEngine({ strategies: { payments: {}, analytics: {} }, audit: { file, key } })
    await engine.processBatch([{ key: 'p1', type: 'payments' }], async () => 1)
    expect(await engine.strategy('payments')!.forget('p1')).toBe(true)
    expect(await engine.strategy('analytics')!.purge({ namespace: 'analytics' })).toBe(0)
    await engine.close()
    const records: AuditRecord[] = []
    expect(verifyFiles([file], AuditKeys.fromHex(key, 'aes-256-gcm'), (r) => records.push(r)).status).toBe('ok')
    expect(records.map((r) => `${r.layer} ${r.verdict} ${r.removed ?? ''}`)).toEqual(['store new ', 'admin forget 1', 'admin purge 0'])
  })
})
