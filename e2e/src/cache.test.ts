// The build cache, the parallel scheduler, the directory locks and reproducible output.
import { spawn } from 'node:child_process';
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, IS_ROOT, removeWorkdir, stacker, TEST_USER, workdir, write } from './harness.js';
import { layersOf, makeBusybox, tarList } from './oci-tools.js';

/** Ten stanzas: a base, an import-using stanza and a chain hanging off it, and others. */
function tenStanzas(): string {
  let y = `
base:
  from:
    type: tar
    url: ./busybox.tar.gz
  run: echo base > /base.txt
importer:
  from:
    type: built
    tag: base
  imports:
    - ./input.txt
  run: cp /stacker/imports/input.txt /input.txt
after-importer:
  from:
    type: built
    tag: importer
  run: cat /input.txt > /copied.txt
`;
  for (let i = 1; i <= 7; i++) {
    y += `
other${i}:
  from:
    type: built
    tag: base
  run: echo ${i} > /other${i}
`;
  }
  return y;
}

function tags(dir: string, layout = 'oci'): Record<string, string> {
  const idx = JSON.parse(readFileSync(join(dir, layout, 'index.json'), 'utf8'));
  return Object.fromEntries(
    idx.manifests.map((m: any) => [m.annotations['org.opencontainers.image.ref.name'], m.digest]),
  );
}

function built(output: string): string[] {
  return [...output.matchAll(/^filesystem (\S+) built successfully$/gm)].map((m) => m[1]).sort();
}

function cached(output: string): string[] {
  return [...output.matchAll(/^found cached layer (\S+)$/gm)].map((m) => m[1]).sort();
}

const ALL = [
  'after-importer',
  'base',
  'importer',
  ...Array.from({ length: 7 }, (_, i) => `other${i + 1}`),
].sort();

describe('build cache', () => {
  let dir: string;
  beforeAll(() => {
    dir = workdir('stacker-cache-');
    makeBusybox(join(dir, 'busybox.tar.gz'));
    write(join(dir, 'stacker.yaml'), tenStanzas());
    write(join(dir, 'input.txt'), 'one\n');
    const r = stacker(['build'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(built(r.output)).toEqual(ALL);
  });
  afterAll(() => removeWorkdir(dir));

  it('reuses every stanza of an unchanged 10-stanza file, with the same digests', () => {
    const before = tags(dir);
    const r = stacker(['build'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(cached(r.output)).toEqual(ALL);
    expect(built(r.output)).toEqual([]);
    expect(tags(dir)).toEqual(before);
  });

  it('rebuilds only the stanza whose import changed, and what depends on it', () => {
    const before = tags(dir);
    write(join(dir, 'input.txt'), 'two\n');
    const r = stacker(['build'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(built(r.output)).toEqual(['after-importer', 'importer']);
    expect(cached(r.output)).toEqual(ALL.filter((n) => n !== 'importer' && n !== 'after-importer'));
    const after = tags(dir);
    expect(after.importer).not.toBe(before.importer);
    expect(after['after-importer']).not.toBe(before['after-importer']);
    expect(after.other3).toBe(before.other3);
  });

  it("does not rebuild when only an import's mtime changed", () => {
    const r0 = stacker(['build'], { cwd: dir });
    expect(r0.code, r0.output).toBe(0);
    const text = readFileSync(join(dir, 'input.txt'), 'utf8');
    write(join(dir, 'input.txt'), text); // same bytes, new mtime
    const r = stacker(['build'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(built(r.output)).toEqual([]);
  });

  it('ignores a corrupt cache file with a warning and rebuilds', () => {
    write(join(dir, '.stacker', 'build.cache'), '{ this is not json');
    const r = stacker(['build'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(r.output).toMatch(/ignoring the build cache .*build\.cache: it is corrupt/);
    expect(built(r.output)).toEqual(ALL);
    const again = stacker(['build'], { cwd: dir });
    expect(cached(again.output)).toEqual(ALL);
  });

  it('ignores a cache file written by another version', () => {
    write(
      join(dir, '.stacker', 'build.cache'),
      JSON.stringify({ format: 1, stackerVersion: '0.0.0-other', entries: {} }),
    );
    const r = stacker(['build'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(r.output).toContain('it was written by another stacker version');
    expect(built(r.output)).toEqual(ALL);
  });

  it('--no-cache rebuilds everything', () => {
    const r = stacker(['build', '--no-cache'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(built(r.output)).toEqual(ALL);
    expect(cached(r.output)).toEqual([]);
  });

  it('a stanza with binds is always rebuilt', () => {
    const d = workdir('stacker-binds-');
    try {
      copyFileSync(join(dir, 'busybox.tar.gz'), join(d, 'busybox.tar.gz'));
      write(join(d, 'hostfile'), 'from the host\n');
      write(
        join(d, 'stacker.yaml'),
        `
b:
  from:
    type: tar
    url: ./busybox.tar.gz
  binds:
    - ${d} -> /hostdir
  run: cp /hostdir/hostfile /copied
`,
      );
      const first = stacker(['build'], { cwd: d });
      expect(first.code, first.output).toBe(0);
      const r = stacker(['build'], { cwd: d });
      expect(r.code, r.output).toBe(0);
      expect(r.output).toContain('rebuilding cached layer due to use of binds in stacker file');
      expect(built(r.output)).toEqual(['b']);
      expect(
        tarList(join(d, 'oci', 'blobs', ...layersOf(join(d, 'oci'), 'b').at(-1)!.split(':'))).map(
          (e) => e.name,
        ),
      ).toContain('copied');
    } finally {
      removeWorkdir(d);
    }
  });
});

describe('scheduling and locks', () => {
  let dir: string;
  beforeAll(() => {
    dir = workdir('stacker-par-');
    makeBusybox(join(dir, 'busybox.tar.gz'));
    write(
      join(dir, 'stacker.yaml'),
      `
base:
  from:
    type: tar
    url: ./busybox.tar.gz
one:
  from:
    type: built
    tag: base
  run: sleep 2; echo one > /one
two:
  from:
    type: built
    tag: base
  run: sleep 2; echo two > /two
`,
    );
  });
  afterAll(() => removeWorkdir(dir));

  it('runs independent stanzas at the same time', () => {
    const r = stacker(['--log-timestamp', 'build', '--no-cache'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    const at = (re: RegExp) => {
      const m = r.output.split('\n').find((l) => re.test(l));
      expect(m, `no line matching ${re}`).toBeDefined();
      return Date.parse(m!.split(' ')[0]);
    };
    // both start before either finishes: they overlapped
    const startOne = at(/ one: \+ sleep 2$/);
    const startTwo = at(/ two: \+ sleep 2$/);
    const endOne = at(/ filesystem one built successfully$/);
    const endTwo = at(/ filesystem two built successfully$/);
    expect(Math.max(startOne, startTwo)).toBeLessThan(Math.min(endOne, endTwo));
  });

  it('--jobs 1 builds one stanza at a time', () => {
    const r = stacker(['--log-timestamp', 'build', '--no-cache', '--jobs', '1'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    const lines = r.output.split('\n');
    const idx = (re: RegExp) => lines.findIndex((l) => re.test(l));
    const firstEnd = Math.min(idx(/filesystem one built/), idx(/filesystem two built/));
    const secondStart = Math.max(idx(/ one: \+ sleep 2$/), idx(/ two: \+ sleep 2$/));
    expect(firstEnd).toBeLessThan(secondStart);
  });

  it('jobs: 1 in the config file does the same; --jobs overrides it', () => {
    write(join(dir, 'conf.yaml'), 'jobs: 1\n');
    const order = (extra: string[]) => {
      const r = stacker(['--log-timestamp', '--config', 'conf.yaml', 'build', '--no-cache', ...extra], {
        cwd: dir,
      });
      expect(r.code, r.output).toBe(0);
      const lines = r.output.split('\n');
      const idx = (re: RegExp) => lines.findIndex((l) => re.test(l));
      const firstEnd = Math.min(idx(/filesystem one built/), idx(/filesystem two built/));
      const secondStart = Math.max(idx(/ one: \+ sleep 2$/), idx(/ two: \+ sleep 2$/));
      expect(
        Math.min(firstEnd, idx(/ one: \+ sleep 2$/), idx(/ two: \+ sleep 2$/)),
        r.output,
      ).toBeGreaterThan(-1);
      return firstEnd < secondStart ? 'one at a time' : 'together';
    };
    expect(order([])).toBe('one at a time');
    expect(order(['--jobs', '2'])).toBe('together');
  });

  it('a second stacker on the same directories fails at once with "couldn\'t acquire lock"', async () => {
    const argv = IS_ROOT
      ? ['runuser', ['-u', TEST_USER, '--', process.execPath, CLI, 'build', '--no-cache']]
      : [process.execPath, [CLI, 'build', '--no-cache']];
    const first = spawn(argv[0] as string, argv[1] as string[], { cwd: dir, stdio: 'pipe' });
    let out = '';
    first.stderr.on('data', (d) => {
      out += d;
    });
    // wait until the first one is running a step (it holds the locks then)
    for (let i = 0; i < 100 && !out.includes('+ sleep 2'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(out).toContain('+ sleep 2');
    const second = stacker(['build'], { cwd: dir });
    expect(second.code).toBe(1);
    expect(second.output).toMatch(/couldn't acquire lock on \S+: another stacker \(pid \d+\) is using it/);
    const code = await new Promise<number | null>((r) => first.on('exit', r));
    expect(code).toBe(0);
  });

  it('reports every failure of stanzas that ran at the same time', () => {
    const d = workdir('stacker-fail2-');
    try {
      copyFileSync(join(dir, 'busybox.tar.gz'), join(d, 'busybox.tar.gz'));
      write(
        join(d, 'stacker.yaml'),
        `
base:
  from:
    type: tar
    url: ./busybox.tar.gz
bad1:
  from:
    type: built
    tag: base
  run: sleep 1; exit 3
bad2:
  from:
    type: built
    tag: base
  run: sleep 1; exit 4
after:
  from:
    type: built
    tag: bad1
  run: echo never
`,
      );
      const r = stacker(['build'], { cwd: d });
      expect(r.code).toBe(1);
      expect(r.output).toContain('run commands failed for image "bad1": exit status 3');
      expect(r.output).toContain('run commands failed for image "bad2": exit status 4');
      expect(r.output).not.toContain('preparing image after');
      // what did build is tagged; the layout stays valid
      expect(Object.keys(tags(d))).toEqual(['base']);
    } finally {
      removeWorkdir(d);
    }
  });
});

describe('reproducible output', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach(removeWorkdir));

  function buildIn(env: Record<string, string>): string {
    const d = workdir('stacker-repro-');
    dirs.push(d);
    makeBusybox(join(d, 'busybox.tar.gz'));
    write(join(d, 'input.txt'), 'same\n');
    write(join(d, 'stacker.yaml'), tenStanzas());
    const r = stacker(['build'], { cwd: d, env });
    expect(r.code, r.output).toBe(0);
    return d;
  }

  it('two clean builds in different directories give identical digests and index.json', () => {
    const env = { SOURCE_DATE_EPOCH: '1700000000' };
    const a = buildIn(env);
    const b = buildIn(env);
    expect(tags(a)).toEqual(tags(b));
    expect(readFileSync(join(a, 'oci', 'index.json'))).toEqual(readFileSync(join(b, 'oci', 'index.json')));
  });

  it('without SOURCE_DATE_EPOCH everything but times is identical', () => {
    const a = buildIn({});
    const b = buildIn({});
    for (const tag of ['importer', 'other7']) {
      const la = layersOf(join(a, 'oci'), tag);
      const lb = layersOf(join(b, 'oci'), tag);
      expect(la[0]).toBe(lb[0]); // the base tarball, reused as it is
      const strip = (d: string, digest: string) =>
        tarList(join(d, 'oci', 'blobs', ...digest.split(':'))).map(({ line, ...rest }: any) => rest);
      expect(strip(a, la.at(-1)!)).toEqual(strip(b, lb.at(-1)!));
    }
  });
});
