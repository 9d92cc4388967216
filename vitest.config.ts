import { defineConfig } from 'vitest/config'

// Tests import the built package (dist/): worker threads load compiled JS, so
// testing dist is testing what ships. `npm test` builds first (pretest).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
})
