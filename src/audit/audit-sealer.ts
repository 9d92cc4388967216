import { hash } from 'node:crypto'
import type { AuditChunk, Runs, SealedRecord, SealerSetup } from './audit-chunk.js'
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
  private readonly digestHash: string
  private seq: number
  private mac: string

  constructor(private readonly setup: Pick<SealerSetup, 'keys' | 'rawKeys' | 'tail'>) {
    this.keys = AuditKeys.fromTransfer(setup.keys)
    this.digestPrefix = this.keys.digest.toString('hex')
    this.digestHash = this.keys.cipher === 'sm4' ? 'sm3' : 'sha256'
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
    return hash(this.digestHash, this.digestPrefix + key, 'base64url').slice(0, 22)
  }

  /** The chunk's records as one sealed line (with its newline). */
  seal(chunk: AuditChunk): string {
    const records: SealedRecord[] = new Array(chunk.count)
    const namespace = runReader(chunk.namespace)
    const verdict = runReader(chunk.verdict)
    const layer = runReader(chunk.layer)
    const owner = runReader(chunk.owner)
    const errorCode = runReader(chunk.errorCode)
    let from = 0
    for (let i = 0; i < chunk.count; i++) {
      const key = chunk.keys.slice(from, from + chunk.keyLength[i])
      from += chunk.keyLength[i]
      // ms since the epoch: a Date per record was a large share of the sealing.
      const record: SealedRecord = { time: chunk.at[i], verdict: verdict(i)!, rollout: chunk.enforced[i] === 1 ? 'enforced' : 'shadow', layer: layer(i)! }
      const ns = namespace(i)
      if (ns !== undefined) record.namespace = ns
      if (this.setup.rawKeys) record.key = key
      else record.keyDigest = this.digestOf(key)
      const o = owner(i)
      if (o !== undefined) record.owner = o
      const e = errorCode(i)
      if (e !== undefined) record.errorCode = e
      records[i] = record
    }
    this.seq++
    const sealed = sealLine(this.keys, this.seq, this.mac, JSON.stringify(records))
    this.mac = sealed.mac
    return sealed.line
  }
}

/** The value of record i, read in increasing i. */
function runReader(runs: Runs): (i: number) => string | undefined {
  let run = 0
  return (i) => {
    while (run + 1 < runs.starts.length && runs.starts[run + 1] <= i) run++
    return runs.values[run]
  }
}
