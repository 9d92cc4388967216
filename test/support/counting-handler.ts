import type { Message } from '../../dist/src/message.js'

/** A handler that counts its runs per key (`effects`) and returns `done:<key>`. */
export function countingHandler(): { effects: Map<string, number>; handler: (m: Message) => string } {
  const effects = new Map<string, number>()
  const handler = (m: Message): string => {
    effects.set(m.key, (effects.get(m.key) ?? 0) + 1)
    return `done:${m.key}`
  }
  return { effects, handler }
}
