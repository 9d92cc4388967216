import { readFileSync } from 'node:fs'
import { OptionReader } from '../validation.js'
import { AuditFileSink } from './audit-file-sink.js'
import { AUDIT_CIPHERS, AUDIT_KEY_ENV, AuditKeys, keyProblem, type AuditCipher } from './audit-keys.js'
import type { AuditSink } from './audit-sink.js'

/** createEngine({ audit }): where decisions are logged, and how. */
export interface AuditOptions {
  /** The log file (rotated to `<file>.000001`…); or give `sink`. */
  file?: string
  /** A sink of your own for the sealed lines, instead of `file`. */
  sink?: AuditSink
  /** A file holding the key as hex (64 characters for aes-256-gcm, 32 for sm4). */
  keyFile?: string
  /** The key as hex; with neither key nor keyFile, the IDEM_AUDIT_KEY environment variable. */
  key?: string
  /** Default 'aes-256-gcm'. */
  cipher?: AuditCipher
  /** 'all' (default) logs every decision; 'acted' only those enforce acted on (not the shadowed ones). */
  decisions?: 'all' | 'acted'
  /** Log keys as given instead of their keyed digest (keys can be personal data). Default false. */
  rawKeys?: boolean
  /** A file past this many bytes is rotated. Default 64 MiB. */
  maxFileBytes?: number
  /** Records taken and not yet stored, at most. Default 262,144. */
  bufferRecords?: number
  /** A full buffer: 'drop' the record (counted in stats().audit.dropped, the default), or 'backpressure': the engine takes no new batch until the buffer drains. */
  whenFull?: 'drop' | 'backpressure'
}

export interface AuditConfig {
  file: string | undefined
  sink: AuditSink | undefined
  keys: AuditKeys
  cipher: AuditCipher
  decisions: 'all' | 'acted'
  rawKeys: boolean
  maxFileBytes: number
  bufferRecords: number
  whenFull: 'drop' | 'backpressure'
}

export const auditDefaults = { cipher: 'aes-256-gcm', decisions: 'all', rawKeys: false, maxFileBytes: 64 * 1024 * 1024, bufferRecords: 262_144, whenFull: 'drop' } as const

const fields = ['file', 'sink', 'keyFile', 'key', 'cipher', 'decisions', 'rawKeys', 'maxFileBytes', 'bufferRecords', 'whenFull']

/** Reads the key's hex text from the file, or says why not (the fs reason, never the content). */
export function readKeyFile(path: string): { text: string } | { problem: string } {
  try {
    return { text: readFileSync(path, 'utf8') }
  } catch (error) {
    return { problem: `must be a readable file, got ${JSON.stringify(path)} (${(error as NodeJS.ErrnoException).code ?? 'unreadable'})` }
  }
}

/**
 * The `audit` section, or undefined when it is absent. The key is read and
 * checked here (problems name the field, never the key), and the file opened
 * for appending once, so a bad path fails createEngine and not the first write.
 */
export function readAuditConfig(o: OptionReader): AuditConfig | undefined {
  if (!o.has('audit')) return undefined
  const a = o.section('audit')
  if (!a.valid) return undefined
  a.onlyKnown(fields, 'audit')
  const cipher = a.oneOf('cipher', AUDIT_CIPHERS, auditDefaults.cipher)
  if (a.has('cipher') && !AUDIT_CIPHERS.includes(a.value('cipher') as AuditCipher)) return undefined
  const decisions = a.oneOf('decisions', ['all', 'acted'] as const, auditDefaults.decisions)
  const rawKeys = a.boolean('rawKeys', auditDefaults.rawKeys)
  const maxFileBytes = a.integer('maxFileBytes', auditDefaults.maxFileBytes, 1024, 2 ** 40)
  const bufferRecords = a.integer('bufferRecords', auditDefaults.bufferRecords, 1, 2 ** 26)
  const whenFull = a.oneOf('whenFull', ['drop', 'backpressure'] as const, auditDefaults.whenFull)
  a.exactlyOne(['file', 'sink'], 'audit')
  const file = a.has('file') ? a.string('file', undefined, 'a file path') : undefined
  const sink = a.value('sink') as AuditSink | undefined
  if (sink !== undefined && (typeof sink.append !== 'function' || typeof sink.tail !== 'function' || typeof sink.close !== 'function')) {
    a.mustBe('sink', 'an AuditSink (tail, append, close)', typeof sink)
  }
  if (file !== undefined && file !== '' && sink === undefined) {
    try {
      AuditFileSink.checkWritable(file)
    } catch (error) {
      a.problems.push(`${a.nameOf('file')}: must be a file idem can read and append to, got ${JSON.stringify(file)} (${(error as NodeJS.ErrnoException).code ?? 'not writable'})`)
    }
  }

  let keyText: string | undefined
  let keyField = 'key'
  if (a.has('key') && a.has('keyFile')) a.problems.push(`${a.nameOf('key')}: must be given alone, got both key and keyFile`)
  else if (a.has('keyFile')) {
    keyField = 'keyFile'
    const path = a.value('keyFile')
    if (typeof path !== 'string' || path === '') a.mustBe('keyFile', 'a file path')
    else {
      const read = readKeyFile(path)
      if ('problem' in read) a.problems.push(`${a.nameOf('keyFile')}: ${read.problem}`)
      else keyText = read.text
    }
  } else if (a.has('key')) {
    const key = a.value('key')
    if (typeof key === 'string') keyText = key
    else a.problems.push(`${a.nameOf('key')}: must be a hex string, got ${typeof key}`)
  } else {
    keyField = `key (from ${AUDIT_KEY_ENV})`
    keyText = process.env[AUDIT_KEY_ENV]
    if (keyText === undefined) a.problems.push(`${a.nameOf('key')}: must be given (key, keyFile, or the ${AUDIT_KEY_ENV} environment variable), got none`)
  }
  let keys: AuditKeys | undefined
  if (keyText !== undefined) {
    const problem = keyProblem(keyText, cipher)
    if (problem !== undefined) a.problems.push(`${a.nameOf(keyField)}: ${problem}`)
    else keys = AuditKeys.fromHex(keyText, cipher)
  }
  if (keys === undefined) return undefined
  return { file, sink, keys, cipher, decisions, rawKeys, maxFileBytes, bufferRecords, whenFull }
}
