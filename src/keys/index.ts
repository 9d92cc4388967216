/**
 * `idem/keys`: what a producer uses to give its messages keys and
 * fingerprints that idem can deduplicate, instead of hand-rolled ones.
 * Also exported from the main entry.
 */
export { idempotencyKey, MAX_LITERAL_PART_BYTES, MAX_NAMESPACE_BYTES, type KeyPart } from './idempotency-key.js'
export { fingerprint, canonicalJson, MAX_PAYLOAD_DEPTH } from './fingerprint.js'
export { newEventId } from './event-id.js'
