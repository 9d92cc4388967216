import { parseArgs } from 'node:util'
import { readKeyFile } from '../audit/audit-config.js'
import { AUDIT_CIPHERS, AUDIT_KEY_ENV, AuditKeys, keyProblem, type AuditCipher } from '../audit/audit-keys.js'
import { verifyFiles } from '../audit/audit-verify.js'

export const auditUsage = `idem audit verify|read FILE… [--key-file K] [--cipher aes-256-gcm|sm4]`

/** verify's exit codes: whole, tampered, bad usage or key, truncated tail. */
export const AuditExit = { OK: 0, TAMPERED: 1, USAGE: 2, TRUNCATED: 3 } as const

/**
 * `idem audit verify FILE…` checks the chain of a log's files (given in order)
 * and prints one line; `idem audit read FILE…` prints every record as a JSON
 * line, then checks as verify does (its exit code, its message on stderr).
 * The key comes from --key-file or IDEM_AUDIT_KEY and is never printed.
 */
export async function runAudit(args: string[]): Promise<number> {
  const [action, ...rest] = args
  if (action !== 'verify' && action !== 'read') return fail(`the first word must be verify or read, got ${action === undefined ? 'nothing' : JSON.stringify(action)}`)
  const { values, positionals } = parseArgs({ args: rest, options: { 'key-file': { type: 'string' }, cipher: { type: 'string', default: 'aes-256-gcm' } }, allowPositionals: true, strict: true })
  if (positionals.length === 0) return fail('give at least one FILE')
  const cipher = values.cipher as AuditCipher
  if (!AUDIT_CIPHERS.includes(cipher)) return fail(`--cipher must be aes-256-gcm or sm4, got ${JSON.stringify(values.cipher)}`)
  let keyText: string | undefined
  if (values['key-file'] !== undefined) {
    const read = readKeyFile(values['key-file'])
    if ('problem' in read) return fail(`--key-file ${read.problem}`)
    keyText = read.text
  } else {
    keyText = process.env[AUDIT_KEY_ENV]
    if (keyText === undefined) return fail(`give --key-file K or set ${AUDIT_KEY_ENV}`)
  }
  const problem = keyProblem(keyText, cipher)
  if (problem !== undefined) return fail(`the key ${problem}`)
  const keys = AuditKeys.fromHex(keyText, cipher)

  // `idem audit read … | head`: a closed pipe ends the read, not with a stack trace.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(AuditExit.OK)
  })
  let result
  try {
    result = verifyFiles(positionals, keys, action === 'read' ? (record) => process.stdout.write(`${JSON.stringify(record)}\n`) : undefined)
  } catch (error) {
    return fail(`cannot read ${(error as NodeJS.ErrnoException).path ?? 'a file'} (${(error as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  const say = action === 'read' ? (line: string) => console.error(line) : (line: string) => console.log(line)
  switch (result.status) {
    case 'ok':
      say(`ok: ${result.files} file${result.files === 1 ? '' : 's'}, ${result.lines} lines, ${result.records} records${result.startsAt > 0 ? `, from line seq ${result.startsAt} (earlier files not given)` : ''}`)
      return AuditExit.OK
    case 'tampered':
      say(`TAMPERED: ${result.file} line ${result.line}${result.seq === undefined ? '' : ` (seq ${result.seq})`}: ${result.reason}; ${result.records} records in ${result.lines} lines before it check`)
      return AuditExit.TAMPERED
    case 'truncated':
      say(`truncated: ${result.file} line ${result.line} is cut short (a write interrupted); ${result.records} records in ${result.lines} lines before it check`)
      return AuditExit.TRUNCATED
    case 'wrong-key':
      return fail(`${result.file} line ${result.line}: ${result.reason} (check --key-file and --cipher)`)
  }
}

function fail(message: string): number {
  console.error(`idem audit: ${message}\nusage: ${auditUsage}`)
  return AuditExit.USAGE
}
