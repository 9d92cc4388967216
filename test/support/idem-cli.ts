/** The built CLI run as an operator runs it, for the tests of its commands. */
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const cli = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url))

/** Runs `idem <args>` to its end (at most two minutes); its exit code and output. */
export function idem(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000 })
  return { code: run.status, stdout: run.stdout, stderr: run.stderr }
}
