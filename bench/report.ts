/**
 * What every suite hands back to bench/run.ts, and the few helpers they share:
 * tables with a ratio column against a named baseline row, correctness checks
 * (a failed one makes the run exit 1), targets (printed met / not met, never
 * adjusted), progress lines on stderr, medians and an optional real gc().
 */
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

export interface Column {
  /** Field name in each row's `values` (and in the JSON output). */
  key: string
  title: string
  /** How to print the value; numbers default to grouped integers or 3 significant digits. */
  format?: (value: number | string) => string
}

export interface Row {
  label: string
  values: Record<string, number | string>
  /** Extra data for the JSON output only (per-round rates, say); not printed. */
  raw?: Record<string, unknown>
}

/**
 * One printed table. With a baseline, withRatios adds `ratio` to every row as
 * row[ratioOf] divided by the baseline row's, so "ratio 4.2" always reads "4.2×
 * the baseline" in the unit of that column (ops/s, bytes, rate) as the title says.
 */
export interface BenchTable {
  title: string
  /** Label of the row every ratio is relative to (none when each row holds its own ratio). */
  baseline?: string
  /** Key of the column the ratio is computed on. */
  ratioOf?: string
  columns: Column[]
  rows: Row[]
  /** Lines printed under the table: what was measured and how. */
  notes?: string[]
}

/** A correctness condition; any failure makes the whole run fail loudly. */
export interface Check {
  name: string
  ok: boolean
  detail: string
}

/** A performance goal from the issue; reported as measured, met or not. */
export interface Target {
  name: string
  goal: string
  measured: string
  met: boolean
}

export interface SuiteResult {
  suite: string
  tables: BenchTable[]
  checks: Check[]
  targets: Target[]
}

export interface SuiteOptions {
  quick: boolean
}

let lastProgress = ''

/** A progress line on stderr, so stdout stays one table set or one JSON object. */
export function progress(suite: string, line: string): void {
  lastProgress = `[${suite}] ${line.trim()}`
  process.stderr.write(`[${suite}] ${line}\n`)
}

/** The last progress line: what was running when something went wrong. */
export function lastProgressLine(): string {
  return lastProgress
}

let unclean = false

/** Something (an engine that would not close) may keep the process alive after the report. */
export function markUnclean(): void {
  unclean = true
}

export function isUnclean(): boolean {
  return unclean
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const middle = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

export function formatNumber(value: number | string): string {
  if (typeof value === 'string') return value
  if (!Number.isFinite(value)) return String(value)
  if (Number.isInteger(value) || Math.abs(value) >= 100) return Math.round(value).toLocaleString('en-US')
  return value.toPrecision(3)
}

/** 12.3M, 456k: for progress lines. */
export function shortRate(perSecond: number): string {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(perSecond >= 1e7 ? 1 : 2)}M`
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(perSecond >= 1e4 ? 0 : 1)}k`
  return perSecond.toFixed(0)
}

export const formatPercent = (digits: number) => (value: number | string): string =>
  typeof value === 'number' ? `${(value * 100).toFixed(digits)}%` : value

export const formatRatio = (value: number | string): string => (typeof value === 'number' ? `${value.toFixed(2)}x` : value)

/** Adds `ratio` (row[ratioOf] / baseline row[ratioOf]) to every row. */
export function withRatios(table: BenchTable & { baseline: string; ratioOf: string }): BenchTable {
  const base = table.rows.find((row) => row.label === table.baseline)
  if (base === undefined) throw new Error(`table "${table.title}": no baseline row "${table.baseline}"`)
  const baseValue = base.values[table.ratioOf]
  const rows = table.rows.map((row) => {
    const value = row.values[table.ratioOf]
    const ratio = typeof value === 'number' && typeof baseValue === 'number' && baseValue !== 0 ? value / baseValue : 'n/a'
    return { ...row, values: { ...row.values, ratio } }
  })
  return { ...table, rows, columns: [...table.columns, { key: 'ratio', title: `ratio vs ${table.baseline}`, format: formatRatio }] }
}

/** First column left-aligned, the rest right-aligned. */
export function formatTable(table: BenchTable): string {
  const header = ['', ...table.columns.map((c) => c.title)]
  const body = table.rows.map((row) => [
    row.label,
    ...table.columns.map((c) => {
      const value = row.values[c.key]
      if (value === undefined) return ''
      return (c.format ?? formatNumber)(value)
    }),
  ])
  const cells = [header, ...body]
  const widths = header.map((_, i) => Math.max(...cells.map((line) => line[i].length)))
  const line = (cellsOfLine: string[]) =>
    cellsOfLine.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ').trimEnd()
  const out = [table.title, line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)]
  for (const note of table.notes ?? []) out.push(`  · ${note}`)
  return out.join('\n')
}

/** How fullGc() got its function: --expose-gc, the flag set at run time, or not at all. */
export type GcSource = 'exposed' | 'flag set at run time' | 'unavailable'

let gcFunction: (() => void) | undefined | null = null
let source: GcSource = 'unavailable'

/**
 * A real full gc() when one can be had: global.gc under --expose-gc, otherwise
 * the flag set at run time and the function taken from a fresh context (V8
 * installs `gc` on contexts created after the flag is set). undefined when
 * neither works; memory figures then say so.
 */
export function fullGc(): (() => void) | undefined {
  if (gcFunction !== null) return gcFunction
  const exposed = (globalThis as { gc?: () => void }).gc
  if (typeof exposed === 'function') {
    source = 'exposed'
    return (gcFunction = exposed)
  }
  try {
    setFlagsFromString('--expose-gc')
    const fromContext = runInNewContext('gc') as unknown
    gcFunction = typeof fromContext === 'function' ? (fromContext as () => void) : undefined
  } catch {
    gcFunction = undefined
  }
  if (gcFunction !== undefined) source = 'flag set at run time'
  return gcFunction
}

export function gcSource(): GcSource {
  fullGc()
  return source
}

/** A note for memory tables: how the heap was settled before measuring. */
export function gcNote(): string {
  const how = gcSource()
  return how === 'unavailable'
    ? 'gc() was NOT available: memory deltas include uncollected garbage and are noisy'
    : `measured after a full gc() (${how === 'exposed' ? 'node --expose-gc' : 'gc() from a fresh context after v8.setFlagsFromString("--expose-gc")'})`
}

/** Collects twice (weak references and finalizers need a second pass) when gc is available. */
export function settleHeap(): void {
  const gc = fullGc()
  if (gc === undefined) return
  gc()
  gc()
}
