import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import type { ShadowReport, WouldDropReason } from '../observe/shadow-report.js'
import { formatTable } from './table.js'

export const shadowUsage = 'idem shadow report FILE [--json] [--samples N]'

const REASONS: readonly WouldDropReason[] = ['duplicate', 'conflict', 'in_flight', 'invalid', 'stale']

/**
 * `idem shadow report FILE`: reads the report a shadow (or gray) engine
 * writes with `shadowReport: { file }` and prints what enforce would have done:
 * the counts by reason and namespace, and the latest samples. Exit 0, 1 for a
 * missing or unreadable report, 2 for bad usage.
 */
export async function runShadow(args: string[]): Promise<number> {
  const [action, ...rest] = args
  if (action !== 'report') return fail(2, `the first word must be report, got ${action === undefined ? 'nothing' : JSON.stringify(action)}`)
  const { values, positionals } = parseArgs({ args: rest, options: { json: { type: 'boolean' }, samples: { type: 'string', default: '5' } }, allowPositionals: true, strict: true })
  if (positionals.length !== 1) return fail(2, `give one FILE, got ${positionals.length}`)
  const samples = Number(values.samples)
  if (!Number.isInteger(samples) || samples < 0) return fail(2, `--samples must be an integer of at least 0, got ${JSON.stringify(values.samples)}`)
  const [file] = positionals
  let report: ShadowReport
  try {
    report = JSON.parse(readFileSync(file, 'utf8')) as ShadowReport
    if (typeof report !== 'object' || report === null || typeof report.wouldDrop !== 'number' || typeof report.byReason !== 'object') throw new Error('not a shadow report (no wouldDrop and byReason)')
  } catch (error) {
    return fail(1, `cannot read the shadow report ${file}: ${(error as Error).message}`)
  }
  if (values.json === true) {
    console.log(JSON.stringify(report, null, 2))
    return 0
  }
  console.log(formatShadowReport(report, samples))
  return 0
}

/** The report as an operator reads it: the window, the counts by reason and by namespace, the latest samples. */
export function formatShadowReport(report: ShadowReport, samplesPerReason = 5): string {
  const lines: string[] = []
  if (report.since === undefined) return 'shadow report: no decision that enforce would have acted on yet'
  lines.push(`shadow report: ${report.since} .. ${report.until}`)
  lines.push(`enforce would have acted on ${report.wouldDrop.toLocaleString('en-US')} decisions (the handler ran for each in shadow)`)
  lines.push('')
  lines.push(formatTable(['reason', 'decisions'], REASONS.map((reason) => [reason, report.byReason[reason] ?? 0])))
  const namespaces = Object.entries(report.byNamespace)
  if (namespaces.length > 0) {
    lines.push('')
    lines.push(formatTable(['namespace', ...REASONS], namespaces.map(([namespace, counts]) => [namespace, ...REASONS.map((reason) => counts[reason] ?? 0)])))
  }
  const rows = REASONS.flatMap((reason) => (report.samples?.[reason] ?? []).slice(-samplesPerReason).map((s) => [s.at, s.reason, s.namespace ?? '', s.keyDigest, s.layer, s.errorCode ?? '']))
  if (rows.length > 0) {
    lines.push('')
    lines.push(`latest samples (at most ${samplesPerReason} per reason; keys as sha256 digests):`)
    lines.push(formatTable(['at', 'reason', 'namespace', 'key digest', 'layer', 'code'], rows))
  }
  return lines.join('\n')
}

function fail(code: number, message: string): number {
  console.error(`idem shadow: ${message}${code === 2 ? `\nusage: ${shadowUsage}` : ''}`)
  return code
}
