import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { AuditKeys } from './audit-keys.js'

/**
 * One sealed line of the audit file: many records, encrypted together, and
 * chained to the line before by that line's MAC.
 *
 *   idem1 <cipher a|s> <key id> <seq> <prev MAC> <iv> <ciphertext> <MAC>\n
 *
 * (base64url fields, one space between). The MAC covers every field before
 * it, the previous line's MAC included, so a line altered, deleted or moved
 * breaks the chain at the first line after the change. AES-256-GCM: the MAC
 * is the GCM tag over the header as associated data. SM4: CTR encryption and
 * HMAC-SM3 over header, iv and ciphertext (encrypt-then-MAC).
 */
export const LINE_MAGIC = 'idem1'
/** The MAC the first line of a log chains to. */
export const GENESIS_MAC = 'genesis'

export interface ChainTail {
  /** The sequence number of the last line written (the next is seq + 1). */
  seq: number
  mac: string
}

const cipherLetter = { 'aes-256-gcm': 'a', sm4: 's' } as const

function headerOf(keys: AuditKeys, seq: number, prevMac: string): string {
  return `${LINE_MAGIC} ${cipherLetter[keys.cipher]} ${keys.id} ${seq} ${prevMac}`
}

/** Seals `payload` as line `seq` after the line whose MAC is `prevMac`; returns the line (with its newline) and its MAC. */
export function sealLine(keys: AuditKeys, seq: number, prevMac: string, payload: string): { line: string; mac: string } {
  const header = headerOf(keys, seq, prevMac)
  const iv = randomBytes(keys.cipher === 'sm4' ? 16 : 12)
  let ciphertext: Buffer
  let mac: Buffer
  if (keys.cipher === 'sm4') {
    const cipher = createCipheriv('sm4-ctr', keys.enc, iv)
    ciphertext = Buffer.concat([cipher.update(payload, 'utf8'), cipher.final()])
    mac = createHmac('sm3', keys.mac).update(header).update(iv).update(ciphertext).digest()
  } else {
    const cipher = createCipheriv('aes-256-gcm', keys.enc, iv)
    cipher.setAAD(Buffer.from(header))
    ciphertext = Buffer.concat([cipher.update(payload, 'utf8'), cipher.final()])
    mac = cipher.getAuthTag()
  }
  const macText = mac.toString('base64url')
  return { line: `${header} ${iv.toString('base64url')} ${ciphertext.toString('base64url')} ${macText}\n`, mac: macText }
}

export type OpenResult =
  | { ok: true; seq: number; mac: string; prevMac: string; payload: string }
  | { ok: false; reason: 'malformed' | 'wrong-key' | 'wrong-cipher' | 'bad-mac'; seq?: number; prevMac?: string; detail: string }

/** Checks and decrypts one line (without its newline). The chain (prevMac, seq) is the caller's to check. */
export function openLine(keys: AuditKeys, line: string): OpenResult {
  const fields = line.split(' ')
  if (fields.length !== 8 || fields[0] !== LINE_MAGIC || !/^\d+$/.test(fields[3])) return { ok: false, reason: 'malformed', detail: 'not an idem audit line' }
  const [, letter, id, seqText, prevMac, ivText, ctText, macText] = fields
  const seq = Number(seqText)
  if (letter !== cipherLetter[keys.cipher]) return { ok: false, reason: 'wrong-cipher', seq, detail: `sealed with ${letter === 's' ? 'sm4' : letter === 'a' ? 'aes-256-gcm' : `cipher '${letter}'`}, not ${keys.cipher}` }
  if (id !== keys.id) return { ok: false, reason: 'wrong-key', seq, detail: 'sealed with another key' }
  const header = headerOf(keys, seq, prevMac)
  const iv = Buffer.from(ivText, 'base64url')
  const ciphertext = Buffer.from(ctText, 'base64url')
  const mac = Buffer.from(macText, 'base64url')
  try {
    if (keys.cipher === 'sm4') {
      const want = createHmac('sm3', keys.mac).update(header).update(iv).update(ciphertext).digest()
      if (mac.length !== want.length || !timingSafeEqual(mac, want)) return { ok: false, reason: 'bad-mac', seq, prevMac, detail: 'MAC does not match' }
      const decipher = createDecipheriv('sm4-ctr', keys.enc, iv)
      return { ok: true, seq, mac: macText, prevMac, payload: Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8') }
    }
    const decipher = createDecipheriv('aes-256-gcm', keys.enc, iv)
    decipher.setAAD(Buffer.from(header))
    decipher.setAuthTag(mac)
    return { ok: true, seq, mac: macText, prevMac, payload: Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8') }
  } catch {
    return { ok: false, reason: 'bad-mac', seq, prevMac, detail: 'MAC does not match' }
  }
}

/** The chain position a sealed line ends at, read from its clear header (no key needed): where a restarted log goes on. */
export function tailOf(line: string): ChainTail | undefined {
  const fields = line.split(' ')
  if (fields.length !== 8 || fields[0] !== LINE_MAGIC || !/^\d+$/.test(fields[3])) return undefined
  return { seq: Number(fields[3]), mac: fields[7] }
}
