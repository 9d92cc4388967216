import { hash } from 'node:crypto'
import type { AuditChunk, Runs, SealerSetup } from './audit-chunk.js'
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

  /**
   * The chunk's records as one sealed line (with its newline). The payload is
   * the JSON array of SealedRecord, written by hand: the columns that repeat
   * are encoded once per run, and no object is built per record.
   */
  seal(chunk: AuditChunk): string {
    const namespace = runReader(chunk.namespace, (v) => `,"namespace":${JSON.stringify(v)}`)
    const verdict = runReader(chunk.verdict, (v) => `,"verdict":${JSON.stringify(v)}`)
    const layer = runReader(chunk.layer, (v) => `,"layer":${JSON.stringify(v)}`)
    const owner = runReader(chunk.owner, (v) => `,"owner":${JSON.stringify(v)}`)
    const errorCode = runReader(chunk.errorCode, (v) => `,"errorCode":${JSON.stringify(v)}`)
    const removed = runReader(chunk.removed, (v) => `,"removed":${v}`)
    const rawKeys = this.setup.rawKeys
    let payload = '['
    let from = 0
    for (let i = 0; i < chunk.count; i++) {
      let keyField = ''
      if (chunk.keyLength[i] >= 0) {
        const key = chunk.keys.slice(from, from + chunk.keyLength[i])
        from += chunk.keyLength[i]
        // The digest is base64url: no escaping. A raw key can hold anything.
        keyField = rawKeys ? `,"key":${JSON.stringify(key)}` : `,"keyDigest":"${this.digestOf(key)}"`
      }
      payload += `${i === 0 ? '' : ','}{"time":${chunk.at[i]}${namespace(i)}${keyField}${verdict(i)},"rollout":"${chunk.enforced[i] === 1 ? 'enforced' : 'shadow'}"${layer(i)}${owner(i)}${errorCode(i)}${removed(i)}}`
    }
    payload += ']'
    this.seq++
    const sealed = sealLine(this.keys, this.seq, this.mac, payload)
    this.mac = sealed.mac
    return sealed.line
  }
}

/** The JSON fragment of record i's value ('' when it has none), read in increasing i; each run's fragment made once. */
function runReader(runs: Runs, fragmentOf: (value: string) => string): (i: number) => string {
  const fragments = runs.values.map((value) => (value === undefined ? '' : fragmentOf(value)))
  let run = 0
  return (i) => {
    while (run + 1 < runs.starts.length && runs.starts[run + 1] <= i) run++
    return fragments[run]
  }
}
