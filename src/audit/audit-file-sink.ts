import { accessSync, closeSync, constants, existsSync, openSync, readSync, statSync, writeSync } from 'node:fs'
import { tailOf, type ChainTail } from './audit-line.js'

/** `<file>`, then `<file>.000001`, `<file>.000002`…: the n-th file of a log. */
export function rotatedName(file: string, index: number): string {
  return index === 0 ? file : `${file}.${String(index).padStart(6, '0')}`
}

/** The files of a log in chain order, as far as they exist. */
export function filesOf(file: string): string[] {
  const files: string[] = []
  for (let i = 0; existsSync(rotatedName(file, i)); i++) files.push(rotatedName(file, i))
  return files
}

function endsWithNewline(path: string, size: number): boolean {
  const fd = openSync(path, 'r')
  try {
    const last = Buffer.alloc(1)
    readSync(fd, last, 0, 1, size - 1)
    return last[0] === 10
  } finally {
    closeSync(fd)
  }
}

/** The last whole line of a file (up to its last '\n'), or undefined. */
function lastLineOf(path: string): string | undefined {
  const size = statSync(path).size
  if (size === 0) return undefined
  const fd = openSync(path, 'r')
  try {
    // A line holds a flush of records: read back in growing windows until a newline before the last one shows.
    for (let window = 64 * 1024; ; window *= 4) {
      const start = Math.max(0, size - window)
      const buffer = Buffer.alloc(size - start)
      readSync(fd, buffer, 0, buffer.length, start)
      const text = buffer.toString('utf8')
      const end = text.lastIndexOf('\n')
      if (end < 0) {
        if (start === 0) return undefined
        continue
      }
      const begin = text.lastIndexOf('\n', end - 1)
      if (begin >= 0 || start === 0) return text.slice(begin + 1, end)
    }
  } finally {
    closeSync(fd)
  }
}

/**
 * Appends to `<file>` and rotates by size: when a line would take the file
 * past maxFileBytes, it opens the next file. The chain goes on across files
 * (the first line of a file carries the last MAC of the one before), so
 * verify reads them in order as one log.
 */
export class AuditFileSink {
  private index: number
  private size: number
  private fd: number | undefined

  constructor(
    private readonly file: string,
    private readonly maxFileBytes: number,
  ) {
    const files = filesOf(file)
    this.index = Math.max(0, files.length - 1)
    this.size = files.length === 0 ? 0 : statSync(files[files.length - 1]).size
    // A last line cut short (a crash mid-write) stays as it is, for verify to report; new lines go to the next file.
    if (this.size > 0 && !endsWithNewline(files[files.length - 1], this.size)) {
      this.index++
      this.size = 0
    }
  }

  /** Throws the fs error when the file cannot be appended to (config time: the caller names the field). */
  static checkWritable(file: string): void {
    const files = filesOf(file)
    if (files.length > 0) {
      accessSync(files[files.length - 1], constants.R_OK | constants.W_OK)
      return
    }
    closeSync(openSync(file, 'a'))
  }

  tail(): ChainTail | undefined {
    for (let i = this.index; i >= 0; i--) {
      const name = rotatedName(this.file, i)
      if (!existsSync(name)) continue
      const line = lastLineOf(name)
      if (line !== undefined) return tailOf(line)
    }
    return undefined
  }

  /** Appends one line, rotating first when it would take the file past maxFileBytes; blocks (the sealing thread calls it, never the engine's). */
  appendSync(line: Uint8Array): void {
    if (this.size > 0 && this.size + line.length > this.maxFileBytes) {
      this.closeSync()
      this.index++
      this.size = 0
    }
    this.fd ??= openSync(rotatedName(this.file, this.index), 'a')
    for (let at = 0; at < line.length; ) at += writeSync(this.fd, line, at)
    this.size += line.length
  }

  closeSync(): void {
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
  }
}
