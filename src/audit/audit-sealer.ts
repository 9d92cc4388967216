import { hash } from 'node:crypto'
import type { AuditChunk, AuditRecord, SealedChunk, SealerSetup } from './audit-chunk.js'
import { AuditKeys } from './audit-keys.js'
import { GENESIS_MAC, sealLine } from './audit-line.js'

/**
 * Turns chunks into sealed lines, the chain carried from one to the next.
 * Runs in the sealing thread: every per-record cost (digest, JSON,
 * encryption) is here, off the engine's thread.
 */
export class AuditSealer {
  private readonly keys: AuditKeys
  private readonly digestPrefix: string
  private seq: number
  private mac: string

  constructor(private readonly setup: SealerSetup) {
    this.keys = AuditKeys.fromTransfer(setup.keys)
    this.digestPrefix = this.keys.digest.toString('hex')
    this.seq = setup.tail?.seq ?? -1
    this.mac = setup.tail?.mac ?? GENESIS_MAC
  }

  /**
   * The keyed digest: a one-shot hash of secret ‖ key. A prefix-keyed hash is
   * open to length extension, which forges nothing here (the digest names a
   * key, it authenticates nothing: the line's MAC does), and it costs a sixth
   * of an HMAC.
   */
  digestOf(key: string): string {
    return hash(this.keys.cipher === 'sm4' ? 'sm3' : 'sha256', this.digestPrefix + key, 'base64url').slice(0, 22)
  }

  seal(chunk: AuditChunk): SealedChunk {
    const records: AuditRecord[] = new Array(chunk.count)
    for (let i = 0; i < chunk.count; i++) {
      const record: AuditRecord = {
        time: new Date(chunk.at[i]).toISOString(),
        ...(chunk.namespace[i] === undefined ? {} : { namespace: chunk.namespace[i] }),
        ...(this.setup.rawKeys ? { key: chunk.key[i] } : { keyDigest: this.digestOf(chunk.key[i]) }),
        verdict: chunk.verdict[i],
        rollout: chunk.enforced[i] === 1 ? 'enforced' : 'shadow',
        layer: chunk.layer[i],
        ...(chunk.owner[i] === undefined ? {} : { owner: chunk.owner[i] }),
        ...(chunk.errorCode[i] === undefined ? {} : { errorCode: chunk.errorCode[i] }),
      }
      records[i] = record
    }
    this.seq++
    const sealed = sealLine(this.keys, this.seq, this.mac, JSON.stringify(records))
    this.mac = sealed.mac
    return { lines: [sealed.line], records: chunk.count, seq: this.seq, mac: this.mac }
  }
}
