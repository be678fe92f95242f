import type { BuildEvent } from '@stacker/core';
import { formatBytes } from '@stacker/registry';

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
 * Whether to draw the live view: it needs a terminal on stderr, where it draws, and is off
 * with --quiet, --json and --log-file; --progress/--no-progress decide, else whether stdout
 * is a terminal too.
 */
export function wantLiveView(flags: {
  quiet?: boolean;
  json?: boolean;
  'log-file'?: string;
  progress?: boolean;
}): boolean {
  return (
    !flags.quiet &&
    !flags.json &&
    !flags['log-file'] &&
    Boolean(process.stderr.isTTY) &&
    (flags.progress ?? Boolean(process.stdout.isTTY))
  );
}

const BAR = 24;

/**
 * One transfer as a row: `↓ LABEL  [#######-----------]  12 MiB / 30 MiB  40%`, cut to
 * `columns - 1` characters. `total` 0 (unknown) shows the bytes without bar or percentage.
 */
export function formatTransfer(
  arrow: '↓' | '↑',
  label: string,
  done: number,
  total: number,
  columns = 80,
  indent = '  ',
): string {
  let line: string;
  if (total > 0) {
    const frac = Math.min(1, Math.max(0, done / total));
    const filled = Math.floor(frac * BAR);
    const bar = `[${'#'.repeat(filled)}${'-'.repeat(BAR - filled)}]`;
    const pct = `${Math.floor(frac * 100)}%`.padStart(4);
    line = `${indent}${arrow} ${label}  ${bar} ${formatBytes(done)} / ${formatBytes(total)} ${pct}`;
  } else {
    line = `${indent}${arrow} ${label}  ${formatBytes(done)}`;
  }
  return line.slice(0, Math.max(1, columns - 1));
}

interface Transfer {
  stanza?: string;
  arrow: '↓' | '↑';
  label: string;
  done: number;
  total: number;
}

/**
 * The live view on a terminal: one row per stanza with its state and elapsed time, below
 * each the byte bars of its downloads (and, for publish, one bar per upload), kept at the
 * bottom while log lines scroll above it. Only used when stderr is a TTY and progress is
 * on; otherwise stacker's plain lines (one per blob, with its size) are all there is.
 */
export class ProgressView {
  private rows = new Map<string, { state: State; start: number; end?: number }>();
  private transfers = new Map<string, Transfer>();
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

  /**
   * Bytes of a transfer: a row appears at the first call and goes away once `done` reaches
   * `total`. Rows in between are redrawn by the timer, not on every call (calls come once
   * per network chunk).
   */
  transfer(t: {
    stanza?: string;
    direction: 'pull' | 'push';
    label: string;
    done: number;
    total: number;
  }): void {
    const key = `${t.stanza ?? ''}\0${t.label}`;
    const row = this.transfers.get(key);
    if (t.total > 0 && t.done >= t.total) {
      if (row) {
        this.transfers.delete(key);
        this.redraw();
      }
      return;
    }
    if (row) {
      row.done = t.done;
      row.total = t.total;
      return;
    }
    this.transfers.set(key, {
      stanza: t.stanza,
      arrow: t.direction === 'push' ? '↑' : '↓',
      label: t.label,
      done: t.done,
      total: t.total,
    });
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
    const cols = this.out.columns || 80;
    const lines: string[] = [];
    const transfersOf = (stanza: string | undefined, indent: string) => {
      for (const t of this.transfers.values())
        if (t.stanza === stanza) lines.push(formatTransfer(t.arrow, t.label, t.done, t.total, cols, indent));
    };
    for (const [name, r] of this.rows) {
      const secs = ((r.end ?? Date.now()) - r.start) / 1000;
      const time = r.state === 'queued' ? '' : `${secs.toFixed(1)}s`;
      lines.push(`  ${name.padEnd(width)}  ${LABEL[r.state].padEnd(9)} ${time}`);
      transfersOf(name, '    ');
    }
    // transfers of no known stanza (publish's uploads)
    for (const t of this.transfers.values())
      if (t.stanza === undefined || !this.rows.has(t.stanza))
        lines.push(formatTransfer(t.arrow, t.label, t.done, t.total, cols));
    for (const l of lines) this.out.write(`${l.slice(0, cols - 1)}\n`);
    this.drawn = lines.length;
  }

  private redraw(): void {
    this.clear();
    this.draw();
  }
}
