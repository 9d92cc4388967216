/**
 * Every entry of package.json `exports` resolves, by package name, to a built
 * module with its type declarations beside it: what a user's `import 'idem/…'`
 * meets. Node resolves the package's own name from inside it (self-reference).
 */
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

const root = new URL('../../', import.meta.url)
const manifest = JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as {
  name: string
  exports: Record<string, string | { types: string; import: string }>
}
const entries = Object.entries(manifest.exports).filter((entry): entry is [string, { types: string; import: string }] => typeof entry[1] !== 'string')

describe('package.json exports', () => {
  it('lists the entries users import', () => {
    expect(entries.map(([subpath]) => subpath)).toEqual(expect.arrayContaining(['.', './amqp', './bloom', './bullmq', './keys', './nats', './redis-streams', './sql', './fastify', './express']))
  })

  it.each(entries)('%s resolves to its built module, which loads, with its declarations', async (subpath, target) => {
    const specifier = subpath === '.' ? manifest.name : `${manifest.name}/${subpath.slice(2)}`
    const resolved = import.meta.resolve(specifier)
    expect(resolved).toBe(new URL(target.import, root).href)
    expect(existsSync(fileURLToPath(new URL(target.types, root)))).toBe(true)
    expect(Object.keys(await import(specifier)).length).toBeGreaterThan(0)
  })
})
