// Hostile base images through the real CLI (as the test user, overlay driver): a base tar
// made by hand with entries named `../escape`, `/escape2`, a symlink to a host directory
// followed by a file written through it, a hard link to `../../x`, device nodes and
// setuid/setgid files. Entries that would leave the rootfs refuse the build with one line
// naming the entry; the rest are neutralised inside the rootfs (device nodes skipped with
// one warning). Nothing appears on the host outside roots/, oci/ and .stacker/, and the
// output image unpacked with umoci escapes nowhere either.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkLayout } from './crash-tools.js';
import { BUSYBOX_TAR, chownTree, IS_ROOT, removeWorkdir, stacker, workdir, write } from './harness.js';
import { stackTraceLines, unpack } from './oci-tools.js';

const MARK = randomBytes(4).toString('hex');
/** A host directory the test user can write to: the symlink in the tar points at it. */
const OUTSIDE_DIR = `/tmp/stacker-hostile-out-${MARK}`;
const ESCAPE = `escape-${MARK}`;
const ESCAPE2 = `escape2-${MARK}`;
const HARDLINK_TARGET = `x-${MARK}`;

const KINDS = ['dotdot', 'hardlink', 'neutralised', 'onedevice'] as const;
type Kind = (typeof KINDS)[number];

/** busybox plus the hostile entries of `kind`, as a gzip tar made with Python's tarfile. */
function hostileTar(out: string, kind: Kind): void {
  const script = `
import gzip, io, sys, tarfile
src, out, kind, mark, outside = sys.argv[1:]
with tarfile.open(src) as base, gzip.open(out, 'wb') as gz, tarfile.open(fileobj=gz, mode='w', format=tarfile.PAX_FORMAT) as t:
    for m in base.getmembers():
        t.addfile(m, base.extractfile(m) if m.isfile() else None)
    def add(name, data=None, **kw):
        ti = tarfile.TarInfo(name)
        for k, v in kw.items(): setattr(ti, k, v)
        if data is not None: ti.size = len(data)
        t.addfile(ti, io.BytesIO(data) if data is not None else None)
    if kind == 'dotdot':
        add('../escape-' + mark, b'escaped\\n')
    elif kind == 'hardlink':
        add('target', b'inside\\n')
        add('hl', type=tarfile.LNKTYPE, linkname='../../x-' + mark)
    elif kind == 'onedevice':
        add('dev/only-one', type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
    else:
        add('/escape2-' + mark, b'absolute\\n')
        add('link', type=tarfile.SYMTYPE, linkname=outside)
        add('link/file', b'through the link\\n')
        add('dev/hostile-null', type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
        add('dev/hostile-zero', type=tarfile.CHRTYPE, devmajor=1, devminor=5, mode=0o666)
        add('dev/hostile-sda', type=tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660)
        add('suid-' + mark, b'#!/bin/sh\\necho setuid\\n', mode=0o4755)
        add('sgid-' + mark, b'#!/bin/sh\\necho setgid\\n', mode=0o2755)
`;
  execFileSync('python3', ['-c', script, BUSYBOX_TAR, out, kind, MARK, OUTSIDE_DIR]);
}

/** Every path below `dir` (not following symlinks) but roots/, oci/ and .stacker/: name,
 * type, mode, size, link target, and link count and content of the small files. */
function outsideListing(dir: string, skip: string[]): string {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel))) {
      const p = rel ? `${rel}/${name}` : name;
      if (skip.includes(p)) continue;
      const st = lstatSync(join(dir, p));
      let line = `${p} ${st.mode.toString(8)} ${st.size}`;
      if (st.isSymbolicLink()) line += ` -> ${readlinkSync(join(dir, p))}`;
      // (the base tarballs are hard linked into .stacker's source cache: no link count)
      else if (st.isFile() && !p.endsWith('.tgz'))
        line += ` ${st.nlink} ${readFileSync(join(dir, p), 'latin1')}`;
      out.push(line);
      if (st.isDirectory()) walk(p);
    }
  };
  walk('');
  return out.sort().join('\n');
}

/** Paths below `root` whose name is `name` (find, as root: the roots hold subuid files). */
function findNamed(root: string, name: string): string[] {
  if (!existsSync(root)) return [];
  return execFileSync('find', [root, '-name', name], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

/** A directory that is a rootfs (or an overlay layer of one): busybox is in it. */
const isRootfs = (p: string) => existsSync(join(p, 'bin/busybox'));

describe.runIf(IS_ROOT)('hostile base images through the CLI', () => {
  let dir: string;
  const SKIP = ['roots', 'oci', '.stacker', 'unpacked'];
  let before: string;

  beforeAll(() => {
    dir = workdir('stacker-hostile-');
    for (const kind of KINDS) hostileTar(join(dir, `${kind}.tgz`), kind);
    // watched: a sibling directory, the hard link's target by name, and the symlink's target
    mkdirSync(join(dir, 'watched'));
    writeFileSync(join(dir, 'watched', 'keep'), 'keep\n');
    writeFileSync(join(dir, HARDLINK_TARGET), 'host file\n');
    mkdirSync(OUTSIDE_DIR);
    writeFileSync(join(OUTSIDE_DIR, 'hostfile'), 'host\n');
    chownTree(OUTSIDE_DIR);
    for (const kind of KINDS)
      write(
        join(dir, `${kind}.yaml`),
        `
${kind}:
  from:
    type: tar
    url: ./${kind}.tgz
  run: |
${
  kind === 'onedevice'
    ? '    true'
    : `    ls -l /suid-${MARK} /sgid-${MARK} | sed 's/^/MODE /'
    cat /escape2-${MARK} /tmp/stacker-hostile-out-${MARK}/file`
}
`,
      );
    chownTree(dir);
    before = outsideListing(dir, SKIP);
  });

  afterAll(() => {
    rmSync(OUTSIDE_DIR, { recursive: true, force: true });
    if (dir) removeWorkdir(dir);
  });

  /** Nothing changed on the host: the work dir outside its stacker dirs, the targets. */
  function nothingEscaped(): void {
    expect(outsideListing(dir, SKIP)).toBe(before);
    expect(readdirSync(OUTSIDE_DIR)).toEqual(['hostfile']);
    expect(statSync(join(dir, HARDLINK_TARGET)).nlink).toBe(1);
    for (const p of [`/${ESCAPE}`, `/${ESCAPE2}`, `/tmp/${ESCAPE}`, join(dirname(dir), ESCAPE)])
      expect(existsSync(p), p).toBe(false);
    // inside roots/ too, nothing sits next to a rootfs instead of in it
    for (const name of [ESCAPE, HARDLINK_TARGET]) expect(findNamed(join(dir, 'roots'), name)).toEqual([]);
    for (const p of findNamed(join(dir, 'roots'), ESCAPE2)) expect(isRootfs(dirname(p)), p).toBe(true);
  }

  function oneErrorLine(output: string): string {
    const errors = output.split('\n').filter((l) => l.startsWith('error: '));
    expect(errors, output).toHaveLength(1);
    expect(stackTraceLines(output)).toEqual([]);
    return errors[0];
  }

  it('refuses a `../` entry with one line naming it, and writes nothing outside', () => {
    const r = stacker(['build', '-f', 'dotdot.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(oneErrorLine(r.output)).toBe(
      `error: refusing layer entry "../${ESCAPE}": it has a ".." component.`,
    );
    nothingEscaped();
    expect(checkLayout(join(dir, 'oci')).problems).toEqual([]);
  });

  it('refuses a hard link to `../../x` with one line naming the entry, and links nothing', () => {
    const r = stacker(['build', '-f', 'hardlink.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(oneErrorLine(r.output)).toBe(
      `error: refusing layer entry "hl": it is a hard link to "../../${HARDLINK_TARGET}", whose path has a ".." component.`,
    );
    nothingEscaped();
    expect(checkLayout(join(dir, 'oci')).problems).toEqual([]);
  });

  it('neutralises absolute names, a file through a symlink to the host, device nodes and setuid files', () => {
    const r = stacker(['build', '-f', 'neutralised.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    // the absolute name and the file written through the symlink are the rootfs's own
    expect(r.output).toMatch(/^neutralised: absolute$/m);
    expect(r.output).toMatch(/^neutralised: through the link$/m);
    // setuid/setgid bits are kept as data inside the image ...
    expect(r.output).toMatch(new RegExp(`^neutralised: MODE -rwsr-xr-x .* /suid-${MARK}$`, 'm'));
    expect(r.output).toMatch(new RegExp(`^neutralised: MODE -rwxr-sr-x .* /sgid-${MARK}$`, 'm'));
    // ... on files no host user with privilege owns: in the snapshots they belong to a subuid
    const suids = findNamed(join(dir, 'roots'), `suid-${MARK}`);
    expect(suids.length).toBeGreaterThan(0);
    for (const p of suids) expect(statSync(p).uid, p).not.toBe(0);
    // ... below a roots dir only the build user can enter
    expect((statSync(join(dir, 'roots')).mode & 0o777).toString(8)).toBe('700');
    // device nodes: none created, one warning for the layer naming the first and the count
    const warnings = r.output.split('\n').filter((l) => l.includes('device node'));
    expect(warnings).toEqual([
      '3 device nodes in a layer were skipped (the first: "dev/hostile-null"): creating them needs privilege',
    ]);
    for (const name of ['hostile-null', 'hostile-zero', 'hostile-sda'])
      expect(findNamed(join(dir, 'roots'), name)).toEqual([]);
    nothingEscaped();
    for (const p of findNamed(join(dir, 'roots'), 'file'))
      if (p.includes(`stacker-hostile-out-${MARK}`))
        expect(
          p.endsWith(`/tmp/stacker-hostile-out-${MARK}/file`) &&
            isRootfs(p.slice(0, -`/tmp/stacker-hostile-out-${MARK}/file`.length)),
          p,
        ).toBe(true);
    expect(checkLayout(join(dir, 'oci')).problems).toEqual([]);

    // the image as another tool unpacks it: everything stays under its rootfs
    const rootfs = unpack(dir, 'oci', 'neutralised', join(dir, 'unpacked'));
    expect(readFileSync(join(rootfs, ESCAPE2), 'utf8')).toBe('absolute\n');
    expect(readFileSync(join(rootfs, `tmp/stacker-hostile-out-${MARK}/file`), 'utf8')).toBe(
      'through the link\n',
    );
    expect(readlinkSync(join(rootfs, 'link'))).toBe(OUTSIDE_DIR);
    nothingEscaped();
  });

  it('names a single skipped device node in its warning', () => {
    const r = stacker(['build', '-f', 'onedevice.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(r.output.split('\n').filter((l) => l.includes('device node'))).toEqual([
      'device node "dev/only-one" in a layer was skipped: creating it needs privilege',
    ]);
    expect(findNamed(join(dir, 'roots'), 'only-one')).toEqual([]);
    nothingEscaped();
  });
});
