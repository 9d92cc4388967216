import { describe, expect, it } from 'vitest'
import { hasRowAlias } from '../../dist/src/store/sql/mysql-store.js'

describe('mysql store: which upsert the server gets', () => {
  it.each([
    ['10.11.19-MariaDB-0+deb12u1', false],
    ['11.4.2-MariaDB', false],
    ['5.7.44', false],
    ['8.0.18', false],
    ['8.0.19', true],
    ['8.0.36-0ubuntu0.22.04.1', true],
    ['8.4.0', true],
    ['9.1.0', true],
  ])('SELECT VERSION() = %s → row alias %s', (version, alias) => {
    expect(hasRowAlias(version)).toBe(alias)
  })
})
