import type { BuildEvent } from '@stacker/core';

type State = BuildEvent['state'];

const LABEL: Record<State, string> = {
  queued: 'queued',
  resolving: 'resolving',
  running: 'running',
  diffing: 'diffing',
  writing: 'writing',
  done: 'built',
  cached: 'cached',
  failed: 'FAILED',
};

/**
 * The live view on a terminal: one row per stanza with its state and elapsed time, kept
 * at the bottom while log lines scroll above it. Only used when stderr is a TTY and
 * progress is on; otherwise stacker's plain lines are all there is.
 */
export class ProgressView {
  private rows = new Map<string, { state: State; start: number; end?: number }>();
  private drawn = 0;
  private timer?: NodeJS.Timeout;

  constructor(private out: NodeJS.WriteStream = process.stderr) {}

  start(): void {
    this.timer = setInterval(() => this.redraw(), 200);
    this.timer.unref();
  }

  event(e: BuildEvent): void {
    const now = Date.now();
    const row = this.rows.get(e.stanza);
    if (!row) {
      this.rows.set(e.stanza, { state: e.state, start: now });
    } else {
      if (row.state === 'queued' && e.state !== 'queued') row.start = now;
      row.state = e.state;
      if (e.state === 'done' || e.state === 'cached' || e.state === 'failed') row.end = now;
    }
    this.redraw();
  }

  /** Print a log line above the view. */
  write(line: string): void {
    this.clear();
    this.out.write(line.endsWith('\n') ? line : `${line}\n`);
    this.draw();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.redraw();
  }

  private clear(): void {
    if (this.drawn > 0) this.out.write(`\x1b[${this.drawn}A\x1b[0J`);
    this.drawn = 0;
  }

  private draw(): void {
    const width = Math.max(0, ...[...this.rows.keys()].map((k) => k.length));
    const lines: string[] = [];
    for (const [name, r] of this.rows) {
      const secs = ((r.end ?? Date.now()) - r.start) / 1000;
      const time = r.state === 'queued' ? '' : `${secs.toFixed(1)}s`;
      lines.push(`  ${name.padEnd(width)}  ${LABEL[r.state].padEnd(9)} ${time}`);
    }
    const cols = this.out.columns || 80;
    for (const l of lines) this.out.write(`${l.slice(0, cols - 1)}\n`);
    this.drawn = lines.length;
  }

  private redraw(): void {
    this.clear();
    this.draw();
  }
}
