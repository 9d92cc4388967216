/** A one-line progress bar on stderr, redrawn at most every 100 ms; silent when stderr is not a TTY. */
export class Progress {
  private last = 0
  private readonly started = performance.now()
  private readonly enabled: boolean

  constructor(
    private readonly total: number,
    private readonly unit: string,
    enabled = process.stderr.isTTY === true,
  ) {
    this.enabled = enabled
  }

  update(done: number): void {
    if (!this.enabled) return
    const now = performance.now()
    if (now - this.last < 100 && done < this.total) return
    this.last = now
    const share = Math.min(1, done / this.total)
    const width = 30
    const filled = Math.round(share * width)
    const rate = done / Math.max(1e-9, (now - this.started) / 1000)
    process.stderr.write(
      `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(share * 100).toFixed(0).padStart(3)}%  ${done.toLocaleString('en-US')}/${this.total.toLocaleString('en-US')} ${this.unit}  ${Math.round(rate).toLocaleString('en-US')} ${this.unit}/s `,
    )
  }

  finish(): void {
    if (this.enabled) process.stderr.write('\n')
  }
}
