/**
 * Which member owns which partition: rendezvous hashing over the live member
 * list, a pure function of it, so every member computes the same answer from
 * the same heartbeat and a join or a leave moves only the partitions whose
 * winner changed (about 1/N of them).
 */
export function assignPartitions(members: readonly string[], partitions: number): string[] {
  const owners: string[] = new Array(partitions)
  const seeds = members.map(seedOf)
  for (let p = 0; p < partitions; p++) {
    let best = -1
    let bestScore = -1
    for (let m = 0; m < members.length; m++) {
      const score = mix(seeds[m] ^ Math.imul(p + 1, 0x9e3779b1))
      // Ties (rare) go to the smaller name, so the answer never depends on list order.
      if (score > bestScore || (score === bestScore && members[m] < members[best])) {
        best = m
        bestScore = score
      }
    }
    owners[p] = best < 0 ? '' : members[best]
  }
  return owners
}

/** FNV-1a of the name. */
function seedOf(name: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193)
  return h >>> 0
}

/** murmur3's finalizer: spreads the seed and partition bits over the whole word. */
function mix(x: number): number {
  x ^= x >>> 16
  x = Math.imul(x, 0x85ebca6b)
  x ^= x >>> 13
  x = Math.imul(x, 0xc2b2ae35)
  x ^= x >>> 16
  return x >>> 0
}
