// What ends up in a layer: deletions, opaque directories, links, ownership, modes,
// build_only, stacker:// and dest imports, scratch and oci bases, empty stanzas, failures.
import { readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asUser, CLI, type Result, removeWorkdir, stacker, workdir, write } from './harness.js';
import {
  childrenBeforeParents,
  entry,
  layersOf,
  makeBusybox,
  readText,
  sha256,
  skopeo,
  topLayer,
  umociLs,
  unpack,
} from './oci-tools.js';

const STACKER_YAML = `
base:
  from:
    type: tar
    url: ./busybox.tar.gz
  run: |
    mkdir -p /d
    echo old1 > /d/old1
    echo old2 > /d/old2
    echo doomed > /todelete
child:
  from:
    type: built
    tag: base
  run: |
    rm /todelete
    rm -rf /d
    mkdir /d
    echo new > /d/new
    echo data > /hl-src
    ln /hl-src /hl-dst
    ln -s /hl-src /sym
    echo a > /own1000
    chown 1000:1000 /own1000
    echo b > /own65534
    chown 65534:65534 /own65534
    printf '#!/bin/sh\\n' > /suid
    chmod 4755 /suid
builder:
  from:
    type: built
    tag: base
  build_only: true
  run: echo built-output > /out.txt
frombuilder:
  from:
    type: built
    tag: builder
  run: echo hi > /child.txt
importer:
  from:
    type: built
    tag: base
  imports:
    - stacker://builder/out.txt
  run: cp /stacker/imports/out.txt /
legacy:
  from:
    type: built
    tag: base
  import:
    - ./file.txt
  run: cp /stacker/file.txt /legacy.txt
destimp:
  from:
    type: built
    tag: base
  imports:
    - path: ./file.txt
      dest: /opt/
      mode: 0600
      uid: 1000
      gid: 1000
scratchimg:
  from:
    type: scratch
  imports:
    - path: ./file.txt
      dest: /
empty:
  from:
    type: built
    tag: base
`;

const FILE_TXT = 'imported file\n';

let dir: string;
let layout: string;
let build: Result;
const rootfsOf = new Map<string, string>();

/** umoci unpack --rootless of a tag, once per tag. */
function rootfs(tag: string): string {
  let r = rootfsOf.get(tag);
  if (!r) {
    r = unpack(dir, layout, tag, join(dir, `unpacked-${tag}`));
    rootfsOf.set(tag, r);
  }
  return r;
}

function exists(path: string): boolean {
  try {
    readlinkSync(path);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EINVAL';
  }
}

beforeAll(() => {
  dir = workdir('stacker-e2e-layers-');
  layout = join(dir, 'oci');
  makeBusybox(join(dir, 'busybox.tar.gz'));
  write(join(dir, 'file.txt'), FILE_TXT);
  write(join(dir, 'stacker.yaml'), STACKER_YAML);
  build = stacker(['build', '-f', 'stacker.yaml'], { cwd: dir });
  if (build.code !== 0) throw new Error(`the layers build failed:\n${build.output}`);
});

afterAll(() => {
  if (dir) removeWorkdir(dir);
});

describe('tags', () => {
  it('every stanza but the build_only one is tagged', () => {
    expect(umociLs(layout)).toEqual(
      ['base', 'child', 'destimp', 'empty', 'frombuilder', 'importer', 'legacy', 'scratchimg'].sort(),
    );
    expect(build.output).toContain('filesystem builder built successfully');
  });

  it('a child of the build_only stanza carries its layer', () => {
    const base = layersOf(layout, 'base');
    const child = layersOf(layout, 'frombuilder');
    expect(child).toHaveLength(base.length + 2);
    expect(child.slice(0, base.length)).toEqual(base);
    const own = topLayer(layout, 'frombuilder').map((e) => e.name);
    expect(own).toContain('child.txt');
    expect(readText(join(rootfs('frombuilder'), 'out.txt'))).toBe('built-output\n');
    expect(readText(join(rootfs('frombuilder'), 'child.txt'))).toBe('hi\n');
  });
});

describe('deletions', () => {
  it('a file deleted in the child is gone there but present in the parent', () => {
    expect(readText(join(rootfs('base'), 'todelete'))).toBe('doomed\n');
    expect(exists(join(rootfs('child'), 'todelete'))).toBe(false);
    const wh = entry(topLayer(layout, 'child'), '.wh.todelete');
    expect(wh?.type).toBe('-');
    expect(wh?.size).toBe(0);
  });

  it('rm -rf /d; mkdir /d makes /d opaque: only /d/new is left', () => {
    const entries = topLayer(layout, 'child');
    const names = entries.map((e) => e.name);
    expect(names).toContain('d/.wh..wh..opq');
    expect(names).toContain('d/new');
    expect(names.filter((n) => n.startsWith('d/old'))).toEqual([]);
    expect(readdirSync(join(rootfs('child'), 'd'))).toEqual(['new']);
    expect(readText(join(rootfs('child'), 'd/new'))).toBe('new\n');
    expect(readdirSync(join(rootfs('base'), 'd')).sort()).toEqual(['old1', 'old2']);
  });

  it('the child layer lists every directory before what is in it (the opaque marker too)', () => {
    expect(childrenBeforeParents(topLayer(layout, 'child'))).toEqual([]);
  });

  it('the rest of the base is still there in the child', () => {
    expect(readText(join(rootfs('child'), 'etc/passwd'))).toContain('root:x:0:0');
    expect(readText(join(rootfs('child'), 'etc/hostname'))).toBe('stacker-busybox\n');
  });
});

describe('links, owners and modes', () => {
  it('a hard link made in run is a hard link in the tar and on unpack', () => {
    const entries = topLayer(layout, 'child');
    const links = entries.filter((e) => e.type === 'h');
    expect(links).toHaveLength(1);
    const [link] = links;
    expect([link.name, link.link].sort()).toEqual(['hl-dst', 'hl-src']);
    expect(entry(entries, link.link!)?.type).toBe('-');
    const a = statSync(join(rootfs('child'), 'hl-src'));
    const b = statSync(join(rootfs('child'), 'hl-dst'));
    expect(a.ino).toBe(b.ino);
    expect(readText(join(rootfs('child'), 'hl-dst'))).toBe('data\n');
  });

  it('a symlink made in run is a symlink', () => {
    const sym = entry(topLayer(layout, 'child'), 'sym');
    expect(sym?.type).toBe('l');
    expect(sym?.link).toBe('/hl-src');
    expect(readlinkSync(join(rootfs('child'), 'sym'))).toBe('/hl-src');
  });

  it('chown 1000:1000 and 65534:65534 round-trip in the tar', () => {
    const entries = topLayer(layout, 'child');
    const a = entry(entries, 'own1000')!;
    const b = entry(entries, 'own65534')!;
    expect([a.uid, a.gid]).toEqual([1000, 1000]);
    expect([b.uid, b.gid]).toEqual([65534, 65534]);
    expect(entry(entries, 'd/new')).toMatchObject({ uid: 0, gid: 0 });
  });

  it('mode 4755 keeps setuid', () => {
    expect(entry(topLayer(layout, 'child'), 'suid')?.mode).toBe('-rwsr-xr-x');
    expect(statSync(join(rootfs('child'), 'suid')).mode & 0o7777).toBe(0o4755);
  });
});

describe('imports', () => {
  it('stacker:// import from a build_only stanza lands at /stacker/imports', () => {
    expect(readText(join(rootfs('importer'), 'out.txt'))).toBe('built-output\n');
    const names = topLayer(layout, 'importer').map((e) => e.name);
    expect(names).toContain('out.txt');
    expect(names.filter((n) => n === 'stacker' || n.startsWith('stacker/'))).toEqual([]);
  });

  it('legacy import: lands at /stacker', () => {
    expect(readText(join(rootfs('legacy'), 'legacy.txt'))).toBe(FILE_TXT);
  });

  it('dest: /opt/ with mode 0600 and uid/gid 1000', () => {
    const entries = topLayer(layout, 'destimp');
    const f = entry(entries, 'opt/file.txt')!;
    expect(f.mode).toBe('-rw-------');
    expect([f.uid, f.gid]).toEqual([1000, 1000]);
    expect(f.size).toBe(FILE_TXT.length);
    expect(readText(join(rootfs('destimp'), 'opt/file.txt'))).toBe(FILE_TXT);
    expect(exists(join(rootfs('destimp'), 'stacker'))).toBe(false);
  });

  it('a scratch base with an import dest gives an image with one layer', () => {
    const layers = layersOf(layout, 'scratchimg');
    expect(layers).toHaveLength(1);
    const names = topLayer(layout, 'scratchimg').map((e) => e.name);
    expect(names).toEqual(['file.txt']);
    expect(readText(join(rootfs('scratchimg'), 'file.txt'))).toBe(FILE_TXT);
  });
});

describe('an empty stanza', () => {
  it('adds no layer: same layers as its base', () => {
    expect(layersOf(layout, 'empty')).toEqual(layersOf(layout, 'base'));
    expect(skopeo(layout, 'empty', 'config').rootfs.diff_ids).toEqual(
      skopeo(layout, 'base', 'config').rootfs.diff_ids,
    );
  });
});

describe('import hash checks', () => {
  const wrong = '0'.repeat(64);

  it('a wrong hash fails the build (stanza with run)', () => {
    write(
      join(dir, 'hash-run.yaml'),
      `hashrun:\n  from:\n    type: tar\n    url: ./busybox.tar.gz\n  imports:\n    - path: ./file.txt\n      hash: ${wrong}\n  run: ls /stacker/imports\n`,
    );
    const r = stacker(['build', '-f', 'hash-run.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain('is different than the actual hash');
    expect(r.output).toContain(sha256(join(dir, 'file.txt')));
    expect(umociLs(layout)).not.toContain('hashrun');
  });

  it('a wrong hash fails the build (stanza without run)', () => {
    write(
      join(dir, 'hash-norun.yaml'),
      `hashnorun:\n  from:\n    type: tar\n    url: ./busybox.tar.gz\n  imports:\n    - path: ./file.txt\n      hash: ${wrong}\n`,
    );
    const r = stacker(['build', '-f', 'hash-norun.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain('is different than the actual hash');
  });

  it('the right hash (sha256: prefix, upper case) builds', () => {
    const h = sha256(join(dir, 'file.txt')).toUpperCase();
    write(
      join(dir, 'hash-ok.yaml'),
      `hashok:\n  from:\n    type: tar\n    url: ./busybox.tar.gz\n  imports:\n    - path: ./file.txt\n      hash: sha256:${h}\n  run: cp /stacker/imports/file.txt /ok.txt\n`,
    );
    const r = stacker(['build', '-f', 'hash-ok.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    expect(readText(join(rootfs('hashok'), 'ok.txt'))).toBe(FILE_TXT);
  });
});

describe('a failing run step', () => {
  let r: Result;
  beforeAll(() => {
    write(
      join(dir, 'fail.yaml'),
      'failing:\n  from:\n    type: tar\n    url: ./busybox.tar.gz\n  run: |\n    echo about to fail\n    false\n',
    );
    r = stacker(['build', '-f', 'fail.yaml'], { cwd: dir });
  });

  it('exits 1 naming the image', () => {
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain('run commands failed for image "failing"');
    expect(r.output).toContain('about to fail');
    expect(r.output).not.toContain('filesystem failing built successfully');
  });

  it('leaves a valid layout behind', () => {
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
    expect(index.schemaVersion).toBe(2);
    expect(umociLs(layout)).not.toContain('failing');
    expect(umociLs(layout)).toContain('child');
    expect(skopeo(layout, 'child').Layers).toEqual(layersOf(layout, 'child'));
  });
});

describe('an oci base', () => {
  it('type: oci, url: oci:base reads the layout the first build wrote', () => {
    write(
      join(dir, 'ocisrc.yaml'),
      'fromoci:\n  from:\n    type: oci\n    url: oci:base\n  run: echo from-oci > /fromoci.txt\n',
    );
    const r = stacker(['build', '-f', 'ocisrc.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    const base = layersOf(layout, 'base');
    const layers = layersOf(layout, 'fromoci');
    expect(layers.slice(0, base.length)).toEqual(base);
    expect(layers).toHaveLength(base.length + 1);
    expect(readText(join(rootfs('fromoci'), 'fromoci.txt'))).toBe('from-oci\n');
    expect(readdirSync(join(rootfs('fromoci'), 'd')).sort()).toEqual(['old1', 'old2']);
  });

  it('type: oci with a ./ path to the layout', () => {
    write(
      join(dir, 'ocisrc2.yaml'),
      'fromoci2:\n  from:\n    type: oci\n    url: ./oci:child\n  run: echo from-oci2 > /fromoci2.txt\n',
    );
    const r = stacker(['build', '-f', 'ocisrc2.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    const child = layersOf(layout, 'child');
    const layers = layersOf(layout, 'fromoci2');
    expect(layers.slice(0, child.length)).toEqual(child);
    expect(readText(join(rootfs('fromoci2'), 'fromoci2.txt'))).toBe('from-oci2\n');
    expect(exists(join(rootfs('fromoci2'), 'todelete'))).toBe(false);
  });

  it('a base image of several layers on fresh storage: each layer unpacked onto the one below', () => {
    // (no snapshot of these layers exists yet in the new roots dir, as for any image pulled
    // from a registry: every layer after the first goes onto a mounted parent)
    expect(layersOf(layout, 'child').length).toBeGreaterThanOrEqual(3);
    const r = stacker(
      [
        'build',
        '-f',
        'ocisrc2.yaml',
        '--roots-dir',
        'roots-fresh',
        '--stacker-dir',
        '.stacker-fresh',
        '--oci-dir',
        'oci-fresh',
      ],
      { cwd: dir },
    );
    expect(r.code, r.output).toBe(0);
    const child = layersOf(layout, 'child');
    const layers = layersOf(join(dir, 'oci-fresh'), 'fromoci2');
    expect(layers.slice(0, child.length)).toEqual(child);
    expect(layers).toHaveLength(child.length + 1);
  });
});

describe('generate_labels', () => {
  it('files written to /stacker/oci-labels become labels: name = file name, value = content as it is', () => {
    write(
      join(dir, 'labels.yaml'),
      [
        'labelled:',
        '  from:',
        '    type: oci',
        '    url: oci:base',
        '  labels:',
        '    static: from-yaml',
        '    overridden: from-yaml',
        '  run: echo built > /built',
        '  generate_labels: |',
        '    touch /from-generate-labels',
        '    echo -n rocks > /stacker/oci-labels/meshuggah',
        "    printf 'two\\nlines\\n' > /stacker/oci-labels/org.example.multi",
        '    echo -n generated > /stacker/oci-labels/overridden',
        '',
      ].join('\n'),
    );
    const r = stacker(['build', '-f', 'labels.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    const labels = skopeo(layout, 'labelled', 'config').config.Labels;
    expect(labels.meshuggah).toBe('rocks');
    expect(labels['org.example.multi']).toBe('two\nlines\n');
    expect(labels.static).toBe('from-yaml');
    // the stanza's own labels win over generated ones, as in stacker
    expect(labels.overridden).toBe('from-yaml');
    // as in stacker, the commands run in a throwaway snapshot of the result: what they
    // change on disk is not in the image
    const names = topLayer(layout, 'labelled').map((e) => e.name.replace(/^\.\//, ''));
    expect(names).toContain('built');
    expect(names).not.toContain('from-generate-labels');
  });
});

describe('--on-run-failure and --shell-fail', () => {
  // the failed run leaves a proof in its rootfs and a program (with a space in its name:
  // stacker runs the flag's value as a program, not as a shell command line)
  const FAILING = [
    'fails:',
    '  from:',
    '    type: oci',
    '    url: oci:base',
    '  run: |',
    '    echo inside-the-failed-container > /proof',
    `    printf '#!/bin/sh\\necho "inspector saw $(cat /proof)"\\n' > '/inspect me'`,
    "    chmod +x '/inspect me'",
    '    false',
    '',
  ].join('\n');

  it('--on-run-failure PROGRAM runs it in the failed container, then the build fails', () => {
    write(join(dir, 'onfail.yaml'), FAILING);
    const r = stacker(['build', '-f', 'onfail.yaml', '--on-run-failure', '/inspect me'], { cwd: dir });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain('inspector saw inside-the-failed-container');
    expect(r.output).toContain('run commands failed for image "fails"');
    expect(umociLs(layout)).not.toContain('fails');
  });

  it('--shell-fail opens /bin/sh in the failed container on stdin, then the build fails', () => {
    write(join(dir, 'shellfail.yaml'), FAILING);
    const r = asUser(process.execPath, [CLI, 'build', '-f', 'shellfail.yaml', '--shell-fail'], {
      cwd: dir,
      input: 'echo "shell saw $(cat /proof)"\nexit 0\n',
    });
    expect(r.code, r.output).toBe(1);
    expect(r.output).toContain('shell saw inside-the-failed-container');
    expect(r.output).toContain('run commands failed for image "fails"');
  });
});
