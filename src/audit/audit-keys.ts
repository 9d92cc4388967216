import { createHash, hkdfSync } from 'node:crypto'
import { inspect } from 'node:util'

export const AUDIT_CIPHERS = ['aes-256-gcm', 'sm4'] as const
export type AuditCipher = (typeof AUDIT_CIPHERS)[number]

/** The master key length per cipher, in bytes (the hex form is twice as long). */
export const KEY_BYTES: Record<AuditCipher, number> = { 'aes-256-gcm': 32, sm4: 16 }

/** The environment variable a key is read from when neither key nor keyFile is given. */
export const AUDIT_KEY_ENV = 'IDEM_AUDIT_KEY'

/** Why a key text is not a key, without a character of it: the text never reaches a message. */
export function keyProblem(text: string, cipher: AuditCipher): string | undefined {
  const hex = text.trim()
  const want = KEY_BYTES[cipher] * 2
  if (hex.length !== want) return `must be ${want} hex characters for ${cipher}, got ${hex.length} characters`
  if (!/^[0-9a-fA-F]+$/.test(hex)) return `must be ${want} hex characters for ${cipher}, got a character that is not hex`
  return undefined
}

/**
 * The keys one master key gives, each for one use (HKDF, so a leak of the
 * digest key tells nothing of the encryption key). Prints as redacted: a
 * config that holds it can be logged.
 */
export class AuditKeys {
  readonly enc: Buffer
  readonly mac: Buffer
  readonly digest: Buffer
  /** 8 bytes naming the key in every line, so a wrong key reads as a wrong key and not as tampering. */
  readonly id: string

  constructor(
    master: Buffer,
    readonly cipher: AuditCipher,
  ) {
    const hash = cipher === 'sm4' ? 'sm3' : 'sha256'
    const derive = (label: string, bytes: number): Buffer => Buffer.from(hkdfSync(hash, master, 'idem-audit', label, bytes))
    this.enc = derive('enc', KEY_BYTES[cipher])
    this.mac = derive('mac', 32)
    this.digest = derive('digest', 32)
    this.id = createHash(hash).update(derive('id', 32)).digest('base64url').slice(0, 11)
  }

  /** From checked hex text (keyProblem said nothing). */
  static fromHex(text: string, cipher: AuditCipher): AuditKeys {
    return new AuditKeys(Buffer.from(text.trim(), 'hex'), cipher)
  }

  /** The raw material for a worker thread (never printed). */
  toTransfer(): { enc: Uint8Array; mac: Uint8Array; digest: Uint8Array; id: string; cipher: AuditCipher } {
    return { enc: this.enc, mac: this.mac, digest: this.digest, id: this.id, cipher: this.cipher }
  }

  static fromTransfer(t: ReturnType<AuditKeys['toTransfer']>): AuditKeys {
    const keys = Object.create(AuditKeys.prototype) as { -readonly [K in keyof AuditKeys]: AuditKeys[K] }
    keys.enc = Buffer.from(t.enc)
    keys.mac = Buffer.from(t.mac)
    keys.digest = Buffer.from(t.digest)
    keys.id = t.id
    keys.cipher = t.cipher
    return keys as AuditKeys
  }

  toJSON(): string {
    return '[audit keys redacted]'
  }

  [inspect.custom](): string {
    return '[audit keys redacted]'
  }
}
