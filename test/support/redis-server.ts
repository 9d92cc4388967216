/**
 * Real redis-server processes for fault tests: each test owns its servers, so
 * it can stop, kill or restart them without touching the shared one on 6379.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

export interface RedisProcess {
  readonly port: number
  /** redis://127.0.0.1:port */
  readonly url: string
  /** Pid of the current server; changes on restart(). */
  readonly pid: number
  /** SIGTERM, wait for exit; SIGKILL if it is still up after 5 s. Safe to call twice. */
  stop(): Promise<void>
  /** Like stop(), but keeps the data dir: a restart() then loads what the server persisted (with --appendonly yes). */
  shutdown(): Promise<void>
  /** Signal the server without waiting, e.g. SIGKILL to crash it or SIGSTOP to freeze it. */
  kill(signal: NodeJS.Signals): void
  /** stop(), then a new server on the same port with the same args and dir. */
  restart(): Promise<void>
}

export interface StartRedisOptions {
  port?: number
  /** Extra redis-server arguments, appended after the defaults so they win. */
  args?: string[]
  /** How long a start (or restart) may take to answer PING: a server loading a large AOF on a loaded machine needs more than the default. @default 10000 */
  readyTimeoutMs?: number
}

export interface ClusterNodeAddress {
  host: string
  port: number
}

export interface RedisCluster {
  nodes: ClusterNodeAddress[]
  stop(): Promise<void>
}

const HOST = '127.0.0.1'
const READY_TIMEOUT_MS = 10_000
const STOP_GRACE_MS = 5_000
const LOG_TAIL_CHARS = 8_000

const run = promisify(execFile)

// An 'exit' hook can only do synchronous work: SIGKILL whatever we spawned so
// a failed or aborted test never leaves a server listening behind it.
const live = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL')
})

/** Ports the kernel hands out while all are held at once, so they are distinct. */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, () => {
      const server = createServer()
      return new Promise<typeof server>((resolve, reject) => {
        server.once('error', reject)
        server.listen(0, HOST, () => resolve(server))
      })
    }),
  )
  const ports = servers.map((s) => (s.address() as AddressInfo).port)
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
  return ports
}

export async function freePort(): Promise<number> {
  const [port] = await freePorts(1)
  return port
}

/** Runs redis-cli against a port; rejects on a non-zero exit (e.g. nothing listening yet). */
export async function redisCli(port: number, args: string[], timeoutMs = 1_000): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', HOST, '-p', String(port), ...args], { timeout: timeoutMs })
  return stdout.trim()
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

async function pollUntil(check: () => Promise<boolean>, timeoutMs: number, stopEarly: () => boolean): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline && !stopEarly()) {
    if (await check().catch(() => false)) return true
    await sleep(50)
  }
  return false
}

interface Spawned {
  child: ChildProcess
  exited: Promise<void>
  log: () => string
}

function spawnServer(port: number, dir: string, args: string[]): Spawned {
  const argv = ['--port', String(port), '--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', dir, ...args]
  const child = spawn('redis-server', argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  live.add(child)
  // Keep draining the pipes for the server's whole life: a full pipe would block its logging.
  let tail = ''
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString()).slice(-LOG_TAIL_CHARS)
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      live.delete(child)
      resolve()
    })
    // A spawn failure (redis-server not on PATH) emits 'error' and maybe never 'exit'.
    child.once('error', (err) => {
      keep(Buffer.from(`spawn error: ${err.message}\n`))
      live.delete(child)
      resolve()
    })
  })
  return { child, exited, log: () => tail }
}

async function terminate({ child, exited }: Spawned): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || !live.has(child)) return
  child.kill('SIGTERM')
  // A server frozen with SIGSTOP would sit on the SIGTERM until the SIGKILL; wake it to shut down now.
  child.kill('SIGCONT')
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS)
  await exited
  clearTimeout(timer)
}

async function launch(port: number, dir: string, args: string[], readyTimeoutMs = READY_TIMEOUT_MS): Promise<Spawned> {
  const spawned = spawnServer(port, dir, args)
  let gone = false
  void spawned.exited.then(() => (gone = true))
  const ready = await pollUntil(async () => (await redisCli(port, ['PING'], 500)) === 'PONG', readyTimeoutMs, () => gone)
  if (ready) return spawned
  await terminate(spawned)
  const why = gone ? `exited (code ${spawned.child.exitCode}, signal ${spawned.child.signalCode})` : `did not answer PING within ${readyTimeoutMs} ms`
  throw new Error(`redis-server on port ${port} ${why}. Its output:\n${spawned.log()}`)
}

export async function startRedis(options: StartRedisOptions = {}): Promise<RedisProcess> {
  const port = options.port ?? (await freePort())
  const args = options.args ?? []
  const dir = await mkdtemp(join(tmpdir(), 'redis-test-'))
  let current = await launch(port, dir, args, options.readyTimeoutMs).catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true })
    throw err
  })
  return {
    port,
    url: `redis://${HOST}:${port}`,
    get pid() {
      return current.child.pid!
    },
    async stop() {
      await terminate(current)
      await rm(dir, { recursive: true, force: true })
    },
    async shutdown() {
      await terminate(current)
    },
    kill(signal) {
      current.child.kill(signal)
    },
    async restart() {
      await terminate(current)
      // The same dir keeps a cluster node's nodes.conf (its identity); recreate it in case stop() removed it.
      await mkdir(dir, { recursive: true })
      current = await launch(port, dir, args, options.readyTimeoutMs)
    },
  }
}

/**
 * Waits until `replica` is linked to `primary` and the primary streams to it.
 * master_link_status:up on the replica is not enough: after a diskless full
 * sync, Redis 7.0 holds the command stream until the replica's first
 * REPLCONF ACK (sent once a second), so writes made in that second are not
 * on the replica yet. A probe write, then the primary's view of the
 * replica's acknowledged offset, proves the stream flows.
 */
export async function waitForReplicaLink(primary: { port: number }, replica: { port: number }, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
  const up = async () => (await redisCli(replica.port, ['INFO', 'replication'])).includes('master_link_status:up')
  if (!(await pollUntil(up, timeoutMs, () => false))) throw new Error(`replica on port ${replica.port} did not link to its primary within ${timeoutMs} ms`)
  await redisCli(primary.port, ['SET', 'test:replica-link-probe', String(replica.port)])
  const written = Number(/master_repl_offset:(\d+)/.exec(await redisCli(primary.port, ['INFO', 'replication']))![1])
  const acked = async () => {
    const line = new RegExp(`slave\\d+:ip=[^,]+,port=${replica.port},state=online,offset=(\\d+)`).exec(await redisCli(primary.port, ['INFO', 'replication']))
    return line !== null && Number(line[1]) >= written
  }
  if (!(await pollUntil(acked, timeoutMs, () => false))) throw new Error(`primary on port ${primary.port} did not stream to its replica on port ${replica.port} within ${timeoutMs} ms`)
}

/**
 * A replica of `primary` (`--replicaof`), returned once the primary streams
 * to it. The primary is told to start the full sync at once
 * (repl-diskless-sync-delay 0) instead of waiting its default 5 s for more
 * replicas to join.
 */
export async function startReplica(primary: { port: number }, options: StartRedisOptions = {}): Promise<RedisProcess> {
  await redisCli(primary.port, ['CONFIG', 'SET', 'repl-diskless-sync-delay', '0'])
  const replica = await startRedis({ ...options, args: ['--replicaof', HOST, String(primary.port), ...(options.args ?? [])] })
  try {
    await waitForReplicaLink(primary, replica)
  } catch (error) {
    await replica.stop()
    throw error
  }
  return replica
}

/** Makes a replica a primary of its own (REPLICAOF NO ONE): the manual failover a Sentinel would do. */
export async function promote(replica: { port: number }): Promise<void> {
  const reply = await redisCli(replica.port, ['REPLICAOF', 'NO', 'ONE'])
  if (reply !== 'OK') throw new Error(`REPLICAOF NO ONE on port ${replica.port} answered ${reply}`)
}

export async function startCluster(masters = 3): Promise<RedisCluster> {
  // Pin the bus port: the default port + 10000 can be taken, or above 65535 for a high ephemeral port.
  const ports = await freePorts(masters * 2)
  const started = await Promise.allSettled(
    Array.from({ length: masters }, (_, i) =>
      startRedis({
        port: ports[i],
        args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', '--cluster-port', String(ports[masters + i])],
      }),
    ),
  )
  const servers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
  const stop = async () => {
    await Promise.all(servers.map((s) => s.stop()))
  }
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failed) {
    await stop()
    throw failed.reason
  }
  const nodes = servers.map((s) => ({ host: HOST, port: s.port }))
  try {
    const create = ['--cluster', 'create', ...nodes.map((n) => `${n.host}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes']
    // redis-cli --cluster reports its errors on stdout, which execFile's message leaves out.
    await run('redis-cli', create, { timeout: 20_000 }).catch((err: Error & { stdout?: string }) => {
      throw new Error(`redis-cli ${create.join(' ')} failed: ${err.message}\n${err.stdout ?? ''}`)
    })
    const allOk = () => Promise.all(nodes.map(async (n) => (await redisCli(n.port, ['CLUSTER', 'INFO'])).includes('cluster_state:ok')))
    if (!(await pollUntil(async () => (await allOk()).every(Boolean), 15_000, () => false))) {
      throw new Error(`cluster on ports ${nodes.map((n) => n.port).join(', ')} did not reach cluster_state:ok`)
    }
  } catch (err) {
    await stop()
    throw err
  }
  return { nodes, stop }
}
