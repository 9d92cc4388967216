import { readFileSync } from 'node:fs'
import type { AuditRecord, SealedRecord } from './audit-chunk.js'
import type { AuditKeys } from './audit-keys.js'
import { GENESIS_MAC, openLine } from './audit-line.js'

/** What verify found: the whole chain, a break (tampering, or the wrong key/cipher), or a tail cut short by a crash. */
export type VerifyResult =
  | { status: 'ok'; files: number; lines: number; records: number; startsAt: number }
  | { status: 'tampered'; file: string; line: number; seq?: number; reason: string; lines: number; records: number }
  | { status: 'wrong-key'; file: string; line: number; reason: string }
  | { status: 'truncated'; file: string; line: number; lines: number; records: number }

/**
 * Reads the files as one chain, in the order given (`<file>`, `<file>.000001`…),
 * calling `each` with every record of every line that checks. Stops at the
 * first line that does not: a line whose MAC fails, whose chain link is not
 * the MAC before it, or whose sequence number skips. A last line with no
 * newline, in the last file, is a write cut short (truncated), not tampering.
 */
export function verifyFiles(files: readonly string[], keys: AuditKeys, each?: (record: AuditRecord) => void): VerifyResult {
  let prevMac: string | undefined
  let nextSeq: number | undefined
  let startsAt = 0
  let lines = 0
  let records = 0
  for (let f = 0; f < files.length; f++) {
    const file = files[f]
    const text = readFileSync(file, 'utf8')
    const parts = text.split('\n')
    const tail = parts.pop()!
    if (tail !== '') {
      // A partial line at the end of a file: a crash mid-write. Later files (a restarted log) go on from the last whole line.
      if (f === files.length - 1) {
        const found = walk(parts)
        if (found !== undefined) return found
        return { status: 'truncated', file, line: parts.length + 1, lines, records }
      }
    }
    const found = walk(parts)
    if (found !== undefined) return found

    function walk(whole: string[]): VerifyResult | undefined {
      for (let i = 0; i < whole.length; i++) {
        const opened = openLine(keys, whole[i])
        const at = { file, line: i + 1 }
        if (!opened.ok) {
          if (opened.reason === 'wrong-key' || opened.reason === 'wrong-cipher') return { status: 'wrong-key', ...at, reason: opened.detail }
          return { status: 'tampered', ...at, ...(opened.seq === undefined ? {} : { seq: opened.seq }), reason: opened.detail, lines, records }
        }
        if (prevMac === undefined) {
          // The first line given: the genesis of the log, or (older files not given) a later line, trusted as the start and reported.
          startsAt = opened.seq
          if (opened.seq === 0 && opened.prevMac !== GENESIS_MAC) return { status: 'tampered', ...at, seq: opened.seq, reason: 'the first line does not start the chain', lines, records }
        } else if (opened.prevMac !== prevMac || opened.seq !== nextSeq) {
          const reason = opened.seq !== nextSeq ? `sequence ${opened.seq} where ${nextSeq} was due (a line deleted or moved)` : 'does not chain to the line before (a line deleted, moved or altered)'
          return { status: 'tampered', ...at, seq: opened.seq, reason, lines, records }
        }
        let parsed: SealedRecord[]
        try {
          parsed = JSON.parse(opened.payload) as SealedRecord[]
        } catch {
          return { status: 'tampered', ...at, seq: opened.seq, reason: 'the payload is not records', lines, records }
        }
        if (each !== undefined) {
          for (const record of parsed) each({ ...record, time: new Date(record.time).toISOString() })
        }
        prevMac = opened.mac
        nextSeq = opened.seq + 1
        lines++
        records += parsed.length
      }
      return undefined
    }
  }
  return { status: 'ok', files: files.length, lines, records, startsAt }
}
