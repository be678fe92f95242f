import { describe, expect, it } from 'vitest';
import { formatTransfer, ProgressView } from './progress.js';

/** A terminal of `columns` that keeps what was written, escape sequences and all. */
function fakeTerminal(columns = 100) {
  const out = {
    columns,
    text: '',
    write(s: string) {
      out.text += s;
      return true;
    },
  };
  return out;
}

/** The screen after the last redraw: what follows the last cursor-up-and-clear. */
function screen(text: string): string[] {
  const last = text.split(/\x1b\[\d+A\x1b\[0J/).pop()!;
  return last.split('\n').filter(Boolean);
}

describe('formatTransfer', () => {
  it('draws a bar, the bytes and the percentage', () => {
    expect(formatTransfer('↓', 'sha256:0123456789ab', 12 * 1024 * 1024, 30 * 1024 * 1024)).toBe(
      '  ↓ sha256:0123456789ab  [#########---------------] 12 MiB / 30 MiB  40%',
    );
    expect(formatTransfer('↑', 'p/app sha256:00', 0, 1000)).toBe(
      '  ↑ p/app sha256:00  [------------------------] 0 B / 1000 B   0%',
    );
    expect(formatTransfer('↑', 'x', 1536, 1536, 80, '    ')).toBe(
      '    ↑ x  [########################] 1.5 KiB / 1.5 KiB 100%',
    );
  });

  it('shows only bytes when the total is unknown, and never more than the terminal is wide', () => {
    expect(formatTransfer('↓', 'x', 2048, 0)).toBe('  ↓ x  2.0 KiB');
    const line = formatTransfer('↓', 'a-very-long-label'.repeat(5), 1, 2, 40);
    expect(line.length).toBe(39);
  });

  it('never overflows the bar with more bytes than the total', () => {
    expect(formatTransfer('↓', 'x', 300, 200)).toContain('[########################] 300 B / 200 B 100%');
  });
});

describe('ProgressView', () => {
  it('puts downloads under their stanza and drops them when complete', () => {
    const term = fakeTerminal();
    const view = new ProgressView(term as unknown as NodeJS.WriteStream);
    view.event({ stanza: 'base', state: 'resolving' });
    view.event({ stanza: 'app', state: 'queued' });
    view.transfer({ stanza: 'base', direction: 'pull', label: 'sha256:aaaa', done: 0, total: 4096 });
    view.transfer({ stanza: 'base', direction: 'pull', label: 'sha256:aaaa', done: 2048, total: 4096 });
    view.write('copied blob sha256:bbbb');
    let rows = screen(term.text);
    expect(rows.shift()).toBe('copied blob sha256:bbbb');
    expect(rows[0]).toMatch(/^ {2}base {2}resolving \d+\.\ds$/);
    expect(rows[1]).toBe('    ↓ sha256:aaaa  [############------------] 2.0 KiB / 4.0 KiB  50%');
    expect(rows[2]).toMatch(/^ {2}app {3}queued/);
    view.transfer({ stanza: 'base', direction: 'pull', label: 'sha256:aaaa', done: 4096, total: 4096 });
    rows = screen(term.text);
    expect(rows.length).toBe(2);
    expect(rows.join('\n')).not.toContain('sha256:aaaa');
    view.stop();
  });

  it('shows uploads of no stanza (publish) on their own rows', () => {
    const term = fakeTerminal();
    const view = new ProgressView(term as unknown as NodeJS.WriteStream);
    view.transfer({ direction: 'push', label: 'proj/app sha256:cccc', done: 0, total: 10 });
    view.transfer({ direction: 'push', label: 'proj/app sha256:dddd', done: 0, total: 20 });
    expect(screen(term.text)).toEqual([
      '  ↑ proj/app sha256:cccc  [------------------------] 0 B / 10 B   0%',
      '  ↑ proj/app sha256:dddd  [------------------------] 0 B / 20 B   0%',
    ]);
    view.stop();
  });
});
