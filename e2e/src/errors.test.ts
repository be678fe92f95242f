// Malformed stacker files: exit code 1, one error line that names the file:line:col, in
// the words stacker uses (scripts grep for them), and no stack trace without --debug.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeWorkdir, stacker, workdir, write } from './harness.js';
import { makeBusybox, stackTraceLines } from './oci-tools.js';

let dir: string;

beforeAll(() => {
  dir = workdir('stacker-e2e-errors-');
  makeBusybox(join(dir, 'base.tar.gz'));
  write(join(dir, 'file.txt'), 'some content\n');
});

afterAll(() => {
  if (dir) removeWorkdir(dir);
});

const BASE = 'test:\n  from:\n    type: tar\n    url: ./base.tar.gz\n';

interface Case {
  name: string;
  yaml: string;
  /** line of the offending key or value */
  line: number | number[];
  words: (string | RegExp)[];
  args?: string[];
}

const cases: Case[] = [
  { name: 'an unknown key', yaml: `${BASE}  bogus_key: 1\n`, line: 5, words: ['bogus_key', /unknown/i] },
  { name: 'a wrong type (run: 42)', yaml: `${BASE}  run: 42\n`, line: 5, words: ['run', /string/] },
  { name: 'an empty os', yaml: `${BASE}  os: ""\n`, line: 5, words: ['os', /empty/] },
  {
    name: "a ':' in a layer name",
    yaml: 'test:bad:\n  from:\n    type: tar\n    url: ./base.tar.gz\n',
    line: 1,
    words: ['forbidden', 'test:bad'],
  },
  {
    name: 'an import hash that is not a sha256',
    yaml: `${BASE}  imports:\n    - path: ./file.txt\n      hash: notahash\n`,
    line: 7,
    words: ['notahash', 'is not valid'],
  },
  {
    name: 'a relative import dest',
    yaml: `${BASE}  imports:\n    - path: ./file.txt\n      dest: relative/dir\n`,
    line: 7,
    words: ['dest', /relative/],
  },
  {
    name: "both 'import' and 'imports'",
    yaml: `${BASE}  import: ./file.txt\n  imports:\n    - ./file.txt\n`,
    line: [5, 6],
    words: ['import', 'imports'],
  },
  {
    name: 'a duplicate layer name',
    yaml: `${BASE}other:\n  from:\n    type: scratch\ntest:\n  from:\n    type: scratch\n`,
    line: 8,
    words: ['duplicate layer name', 'test'],
  },
  {
    name: 'a missing substitution',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: stacker's substitution syntax
    yaml: 'test:\n  from:\n    type: tar\n    url: ${{NOPE}}\n',
    line: 4,
    words: ['NOPE'],
  },
  {
    name: '$VAR used for a substituted name',
    yaml: 'test:\n  from:\n    type: tar\n    url: $FOO\n',
    line: 4,
    // biome-ignore lint/suspicious/noTemplateCurlyInString: stacker's substitution syntax
    words: ['$FOO', '${{FOO}}'],
    args: ['--substitute', 'FOO=./base.tar.gz'],
  },
];

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('malformed stacker files', () => {
  for (const c of cases) {
    it(`${c.name}: exit 1, one error line with file:line:col`, () => {
      const name = `${c.name.replace(/[^a-z0-9]+/gi, '-')}.yaml`;
      const file = join(dir, name);
      write(file, c.yaml);
      const r = stacker(['build', '--order-only', '-f', name, ...(c.args ?? [])], { cwd: dir });
      expect(r.code, r.output).toBe(1);
      const lines = [...new Set([c.line].flat())];
      const place = new RegExp(`${escapeRegExp(file)}:(${lines.join('|')}):\\d+`);
      const errorLines = r.output.split('\n').filter((l) => l.includes(`${file}:`));
      expect(errorLines, r.output).toHaveLength(1);
      expect(errorLines[0]).toMatch(place);
      for (const w of c.words) {
        if (typeof w === 'string') expect(errorLines[0]).toContain(w);
        else expect(errorLines[0]).toMatch(w);
      }
      expect(stackTraceLines(r.output)).toEqual([]);
      expect(r.output).not.toContain('stacker build order:');
    });
  }

  it('the same error with --debug still exits 1 and names the place', () => {
    write(join(dir, 'debug.yaml'), `${BASE}  bogus_key: 1\n`);
    const r = stacker(['--debug', 'build', '--order-only', '-f', 'debug.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain(`${join(dir, 'debug.yaml')}:5:`);
  });
});

describe('dependency errors', () => {
  it('a built base that does not exist', () => {
    write(join(dir, 'notatag.yaml'), 'test:\n  from:\n    type: built\n    tag: notatag\n');
    const r = stacker(['build', '--order-only', '-f', 'notatag.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain("couldn't find dependencies for test: base layer notatag");
    expect(r.output).toContain("couldn't resolve some dependencies");
    expect(stackTraceLines(r.output)).toEqual([]);
  });

  it('the same without --order-only: nothing is built', () => {
    const r = stacker(['build', '-f', 'notatag.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain("couldn't find dependencies for test: base layer notatag");
    expect(r.output).toContain("couldn't resolve some dependencies");
    expect(r.output).not.toContain('built successfully');
  });

  it('stacker:// imports of layers that do not exist', () => {
    write(
      join(dir, 'stackerimports.yaml'),
      `${BASE}  imports:\n    - stacker://foo/bar\n    - stacker://baz/foo\n`,
    );
    const r = stacker(['build', '--order-only', '-f', 'stackerimports.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain("couldn't find dependencies for test: stacker://foo/bar, stacker://baz/foo");
    expect(r.output).toContain("couldn't resolve some dependencies");
    expect(stackTraceLines(r.output)).toEqual([]);
  });
});

describe('source types and from: keys', () => {
  it('a bad from: key or an unknown type in a later stanza stops the build before the first is built', () => {
    const first = 'first:\n  from:\n    type: tar\n    url: ./base.tar.gz\n  run: touch /x\n';
    write(join(dir, 'latekey.yaml'), `${first}second:\n  from:\n    type: tar\n    urll: ./base.tar.gz\n`);
    // (tar's schema: url is required)
    const k = stacker(['build', '-f', 'latekey.yaml', '--oci-dir', 'oci-late'], { cwd: dir });
    expect(k.code, k.output).toBe(1);
    expect(k.output).toMatch(
      new RegExp(`${escapeRegExp(join(dir, 'latekey.yaml'))}:8:\\d+: second: from\\.url`),
    );
    write(join(dir, 'latetype.yaml'), `${first}second:\n  from:\n    type: nosuch\n`);
    const t = stacker(['build', '-f', 'latetype.yaml', '--oci-dir', 'oci-late'], { cwd: dir });
    expect(t.code, t.output).toBe(1);
    expect(t.output).toMatch(new RegExp(`${escapeRegExp(join(dir, 'latetype.yaml'))}:8:\\d+: .*nosuch`));
    for (const r of [k, t]) {
      expect(r.output).not.toContain('preparing image first');
      expect(r.output).not.toContain('built successfully');
      expect(stackTraceLines(r.output)).toEqual([]);
    }
  });
});

describe('SOURCE_DATE_EPOCH', () => {
  for (const value of ['abc', '12abc', '1.5']) {
    it(`SOURCE_DATE_EPOCH=${value} is refused before anything is built`, () => {
      write(join(dir, 'ok.yaml'), BASE);
      const r = stacker(['build', '-f', 'ok.yaml'], { cwd: dir, env: { SOURCE_DATE_EPOCH: value } });
      expect(r.code, r.output).toBe(1);
      expect(r.output).toContain('invalid SOURCE_DATE_EPOCH');
      expect(r.output).toContain(value);
      expect(r.output).not.toContain('built successfully');
      expect(stackTraceLines(r.output)).toEqual([]);
    });
  }
});
