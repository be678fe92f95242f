// What the user sees: --quiet prints nothing for a good build, --json gives one JSON log
// record per line, --log-file moves the log to a file, and on a terminal (a real pty made
// by util-linux `script`) the live view shows a row per stanza with its state and time.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asUser, CLI, chownTree, removeWorkdir, stacker, workdir, write } from './harness.js';
import { makeBusybox } from './oci-tools.js';

let dir: string;

const YAML = `base:
  from:
    type: tar
    url: ./busybox.tar.gz
  run: echo hello-from-base
other:
  from:
    type: built
    tag: base
  run: echo hello-from-other
`;

beforeAll(() => {
  dir = workdir('stacker-e2e-output-');
  makeBusybox(join(dir, 'busybox.tar.gz'));
  write(join(dir, 'stacker.yaml'), YAML);
  chownTree(dir);
});

afterAll(() => {
  if (dir) removeWorkdir(dir);
});

describe('output modes', () => {
  it('--quiet: a good build prints nothing at all, a failing one still says why', () => {
    const r = stacker(['--quiet', 'build', '--no-cache'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(r.output).toBe('');
    write(join(dir, 'bad.yaml'), 'bad:\n  from:\n    type: tar\n    url: ./busybox.tar.gz\n  run: exit 3\n');
    const bad = stacker(['--quiet', 'build', '-f', 'bad.yaml'], { cwd: dir });
    expect(bad.code).toBe(1);
    expect(bad.output).toContain('run commands failed for image "bad"');
  });

  it('--json: every log line is a JSON record with a level and a message', () => {
    const r = stacker(['--json', 'build', '--no-cache'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    const lines = r.stderr.split('\n').filter(Boolean);
    expect(lines.length).toBeGreaterThan(3);
    const records = lines.map((l) => JSON.parse(l));
    for (const rec of records) {
      expect(typeof rec.level).toBe('number');
      expect(typeof rec.msg).toBe('string');
    }
    const msgs = records.map((rec) => rec.msg);
    expect(msgs).toContain('filesystem base built successfully');
    expect(msgs).toContain('filesystem other built successfully');
    expect(msgs.some((m: string) => m.includes('hello-from-other'))).toBe(true);
  });

  it('--log-file: the log goes to the file, not to the terminal', () => {
    const r = stacker(['--log-file', 'build.log', 'build'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(r.output).not.toContain('found cached layer');
    const log = readFileSync(join(dir, 'build.log'), 'utf8');
    expect(log).toContain('found cached layer base');
    expect(log).toContain('found cached layer other');
  });

  it.runIf(existsSync('/usr/bin/script'))(
    'on a terminal: one row per stanza with its state and elapsed time; --no-progress gives plain lines',
    () => {
      const run = (flags: string[]) =>
        asUser('/usr/bin/script', ['-qec', `${process.execPath} ${CLI} ${flags.join(' ')}`, '/dev/null'], {
          cwd: dir,
          env: { TERM: 'xterm', COLUMNS: '100', LINES: '30' },
        });
      const live = run(['build', '--no-cache']);
      expect(live.code, live.output).toBe(0);
      // the final frame: both rows done, with a time
      expect(live.output).toMatch(/base\s+(done|built)\s+\d+\.\ds/);
      expect(live.output).toMatch(/other\s+(done|built)\s+\d+\.\ds/);
      // the view redraws in place (cursor movement), which plain output never does
      expect(live.output).toMatch(/\x1b\[\d*[AFK]/);
      const cached = run(['build']);
      expect(cached.output).toMatch(/base\s+cached/);
      const plain = run(['build', '--no-progress']);
      expect(plain.output).toContain('found cached layer base');
      expect(plain.output).not.toMatch(/\x1b\[\d*[AF]/);
    },
  );
});
