// The commands that work on built images: inspect, grab, chroot/exec, clean, and the
// squashfs flavour of --layer-type. One build (tar + squashfs) serves them all.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  asUser,
  CLI,
  chownTree,
  IS_ROOT,
  type Result,
  removeWorkdir,
  stacker,
  TEST_USER,
  USER_IDS,
  workdir,
  write,
} from './harness.js';
import { blobPath, makeBusybox, sha256, skopeo, tarList, tool, umociLs } from './oci-tools.js';

const STACKER_YAML = `
base:
  from:
    type: tar
    url: ./busybox.tar.gz
  run: |
    mkdir -p /d/sub
    echo hi > /d/f
    echo x > /d/sub/g
    chmod 555 /d/sub
    echo own > /own
    chown 1000:1000 /own
    ln -s /d/f /link
    rm /etc/passwd
child:
  from:
    type: built
    tag: base
  environment:
    FOO: bar
  imports:
    - ./imp.txt
  binds:
    - ./bound -> /bound
  run: |
    rm -rf /d
    mkdir /d
    echo new > /d/new
tools:
  from:
    type: built
    tag: base
  build_only: true
  environment:
    TOOL: yes
  run: echo tool > /tool
`;

let dir: string;
let layout: string;
let build: Result;

const run = (args: string[], env?: Record<string, string>) => stacker(args, { cwd: dir, env });

/** `stacker grab ARG` run in `cwd`, on this test's layout, roots and stacker dir. */
const grab = (arg: string, cwd: string) =>
  stacker(
    [
      '--oci-dir',
      layout,
      '--roots-dir',
      join(dir, 'roots'),
      '--stacker-dir',
      join(dir, '.stacker'),
      'grab',
      arg,
    ],
    { cwd },
  );

/** index.json, the cache and the list of blobs: what grab and chroot must leave alone. */
function state(): string {
  const blobs = readdirSync(join(layout, 'blobs/sha256')).sort().join(',');
  return [sha256(join(layout, 'index.json')), sha256(join(dir, '.stacker/build.cache')), blobs].join('|');
}

beforeAll(() => {
  dir = workdir('stacker-e2e-cmd-images-');
  layout = join(dir, 'oci');
  makeBusybox(join(dir, 'busybox.tar.gz'));
  write(join(dir, 'stacker.yaml'), STACKER_YAML);
  write(join(dir, 'imp.txt'), 'imported\n');
  mkdirSync(join(dir, 'bound'));
  write(join(dir, 'bound/b.txt'), 'bound file\n');
  chownTree(dir);
  build = run(['build', '--layer-type', 'tar', '--layer-type', 'squashfs']);
  if (build.code !== 0) throw new Error(`the build failed:\n${build.output}`);
});

afterAll(() => {
  if (dir) removeWorkdir(dir);
});

describe('inspect', () => {
  it('prints each tag with its layers, annotations and config', () => {
    const r = run(['inspect']);
    expect(r.code, r.output).toBe(0);
    const layers = skopeo(layout, 'child', 'raw').layers as { digest: string; mediaType: string }[];
    expect(r.stdout).toMatch(/^base\n/);
    for (const tag of ['base', 'base-squashfs', 'child', 'child-squashfs'])
      expect(r.stdout).toContain(`${tag}\n\tlayer 0: `);
    layers.forEach((l, i) => {
      expect(r.stdout).toContain(`\tlayer ${i}: ${l.digest.slice(7, 19)}... (`);
    });
    expect(r.stdout).toContain('application/vnd.oci.image.layer.v1.tar+gzip)');
    expect(r.stdout).toMatch(/application\/vnd\.stacker\.image\.layer\.squashfs\+(zstd|gzip)\)/);
    expect(r.stdout).toContain('Annotations:\n  io.stackeroci.stacker.stacker_version: ');
    expect(r.stdout).toContain('Image config:\n{');
    expect(r.stdout).toContain('"FOO=bar"');
  });

  it('--json gives the same facts as skopeo', () => {
    const r = run(['inspect', 'child', '--json']);
    expect(r.code, r.output).toBe(0);
    const [report] = JSON.parse(r.stdout);
    const raw = skopeo(layout, 'child', 'raw');
    expect(report.tag).toBe('child');
    expect(report.layers).toEqual(
      raw.layers.map((l: any) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType })),
    );
    expect(report.annotations).toEqual(raw.annotations);
    expect(report.config).toEqual(skopeo(layout, 'child', 'config'));
  });

  it('an unknown tag is a one-line error', () => {
    const r = run(['inspect', 'nope']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('error: no image tagged nope');
  });
});

describe('grab', () => {
  it('copies a file and a directory into the current directory, owned by the caller, with no side effects', () => {
    const before = state();
    const out = workdir('stacker-e2e-grab-');
    try {
      for (const arg of ['base:/own', 'child:/d', 'base:/link']) {
        const r = grab(arg, out);
        expect(r.code, r.output).toBe(0);
      }
      expect(readFileSync(join(out, 'own'), 'utf8')).toBe('own\n');
      expect(readFileSync(join(out, 'd/new'), 'utf8')).toBe('new\n');
      // the symlink is followed: its target's content
      expect(readFileSync(join(out, 'link'), 'utf8')).toBe('hi\n');
      for (const p of ['own', 'd', 'd/new', 'link']) {
        const st = statSync(join(out, p));
        expect([st.uid, st.gid], p).toEqual([USER_IDS.uid, USER_IDS.gid]);
      }
      expect(readdirSync(out).sort()).toEqual(['d', 'link', 'own']);
    } finally {
      removeWorkdir(out);
    }
    expect(state()).toBe(before);
    expect(umociLs(layout)).toEqual(['base', 'base-squashfs', 'child', 'child-squashfs']);
  });

  it('keeps modes (a read-only directory stays read-only)', () => {
    const out = workdir('stacker-e2e-grab-');
    try {
      const r = grab('base:/d', out);
      expect(r.code, r.output).toBe(0);
      expect(statSync(join(out, 'd/sub')).mode & 0o777).toBe(0o555);
      expect(readFileSync(join(out, 'd/sub/g'), 'utf8')).toBe('x\n');
    } finally {
      removeWorkdir(out);
    }
  });

  it('a missing path or tag, or a bad argument, is an error', () => {
    expect(run(['grab', 'base:/nope']).stderr).toContain('error: /nope does not exist in base');
    expect(run(['grab', 'nope:/x']).stderr).toContain('error: no image tagged nope');
    const bad = run(['grab', 'base']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('invalid grab argument: base');
  });
});

describe('chroot', () => {
  it("runs a command with the stanza's env, imports and binds; its exit code is stacker's", () => {
    const before = state();
    const r = run([
      'exec',
      'child',
      '/bin/sh',
      '-c',
      'echo FOO=$FOO; cat /stacker/imports/imp.txt /bound/b.txt; ls /d; touch /d/made-in-chroot; exit 7',
    ]);
    expect(r.code, r.output).toBe(7);
    expect(r.stdout).toBe('FOO=bar\nimported\nbound file\nnew\n');
    expect(state()).toBe(before);
    // nothing it changed is in the image or in a later chroot
    const again = run(['chroot', 'child', 'ls', '/d']);
    expect(again.code, again.output).toBe(0);
    expect(again.stdout).toBe('new\n');
  });

  it('reads commands from stdin when it is not a terminal; the default tag is the first stanza', () => {
    const s = asUser(process.execPath, [CLI, 'chroot'], {
      cwd: dir,
      input: 'cat /d/f\nexit 3\n',
    });
    expect(s.code, s.output).toBe(3);
    expect(s.stdout).toBe('hi\n');
  });

  it('a build_only layer, which has no tag, can be chrooted into and grabbed from', () => {
    const before = state();
    expect(run(['inspect', 'tools']).code).toBe(1); // not an image of the layout
    const r = run(['chroot', 'tools', '/bin/sh', '-c', 'echo TOOL=$TOOL; cat /tool /d/f']);
    expect(r.code, r.output).toBe(0);
    expect(r.stdout).toBe('TOOL=yes\ntool\nhi\n');
    const g = run(['grab', 'tools:/tool']);
    expect(g.code, g.output).toBe(0);
    expect(readFileSync(join(dir, 'tool'), 'utf8')).toBe('tool\n');
    expect(state()).toBe(before);
  });

  it('without a stacker file it chroots to the tag as best effort', () => {
    const r = run(['chroot', '-f', 'missing.yaml', 'base', 'cat', '/own']);
    expect(r.code, r.output).toBe(0);
    expect(r.stdout).toBe('own\n');
    expect(r.output).toContain("couldn't find stacker file, chrooting to base as best effort");
  });

  it.skipIf(!IS_ROOT)('gives an interactive shell a real terminal (tmux)', () => {
    const tmux = (args: string[]) =>
      spawnSync(
        'runuser',
        ['-u', TEST_USER, '--', 'env', `HOME=${dir}`, 'tmux', '-L', 'stacker-e2e', ...args],
        {
          encoding: 'utf8',
        },
      );
    const started = tmux([
      'new-session',
      '-d',
      '-s',
      'chroot',
      '-x',
      '120',
      '-y',
      '30',
      `cd ${dir} && ${process.execPath} ${CLI} chroot child; echo EXIT=$?; sleep 60`,
    ]);
    expect(started.status, started.stderr).toBe(0);
    const pane = () => tmux(['capture-pane', '-p', '-t', 'chroot']).stdout;
    const waitFor = (re: RegExp) => {
      for (let i = 0; i < 100 && !re.test(pane()); i++) spawnSync('sleep', ['0.1']);
      return pane();
    };
    try {
      waitFor(/\/ #/);
      tmux(['send-keys', '-t', 'chroot', 'echo out-$((6*7)); tty; echo $FOO', 'Enter']);
      expect(waitFor(/out-42/)).toMatch(/out-42\n\/dev\/pts\/\d+\nbar/);
      tmux(['send-keys', '-t', 'chroot', 'exit 5', 'Enter']);
      expect(waitFor(/EXIT=/)).toContain('EXIT=5');
    } finally {
      tmux(['kill-server']);
    }
  });
});

describe('--layer-type squashfs', () => {
  /** `unsquashfs -lln` of a blob as {name: "type mode uid/gid size"}, whiteouts as `.wh.` names. */
  function squashEntries(blob: string): Map<string, string> {
    const out = new Map<string, string>();
    for (const line of tool('unsquashfs', ['-lln', blob]).split('\n')) {
      const m =
        /^(\S)(\S{9})\s+(\d+)\/(\d+)\s+(\d+(?:,\s*\d+)?)\s+\S+\s+\S+\s+squashfs-root\/?(.*?)(?: -> .*)?$/.exec(
          line,
        );
      if (!m || m[6] === '') continue;
      const [type, perms, uid, gid, size, name] = [m[1], m[2], m[3], m[4], m[5], m[6]];
      if (type === 'c' && size.replace(/\s/g, '') === '0,0') {
        const slash = name.lastIndexOf('/');
        out.set(`${name.slice(0, slash + 1)}.wh.${name.slice(slash + 1)}`, 'whiteout');
      } else out.set(name, `${type}${perms} ${uid}/${gid} ${type === 'd' ? '' : size}`);
    }
    return out;
  }

  function tarEntries(blob: string): Map<string, string> {
    const out = new Map<string, string>();
    for (const e of tarList(blob)) {
      if (e.name === '.' || e.name === '') continue;
      if (/(^|\/)\.wh\.\.wh\.\.opq$/.test(e.name)) continue; // an xattr in squashfs, checked below
      if (e.name.split('/').pop()!.startsWith('.wh.')) out.set(e.name, 'whiteout');
      else {
        const type = e.type === 'h' ? '-' : e.type;
        out.set(e.name, `${type}${e.mode.slice(1)} ${e.uid}/${e.gid} ${type === 'd' ? '' : e.size}`);
      }
    }
    return out;
  }

  it('tags NAME-squashfs beside NAME, every layer a squashfs of the same tree', () => {
    const tar = skopeo(layout, 'child', 'raw');
    const sq = skopeo(layout, 'child-squashfs', 'raw');
    expect(sq.layers.length).toBe(tar.layers.length);
    expect(sq.annotations).toEqual(tar.annotations);
    const sqConfig = skopeo(layout, 'child-squashfs', 'config');
    expect(sqConfig.rootfs.diff_ids).toEqual(sq.layers.map((l: any) => l.digest));
    expect(sqConfig.config).toEqual(skopeo(layout, 'child', 'config').config);
    for (let i = 0; i < tar.layers.length; i++) {
      expect(sq.layers[i].mediaType).toMatch(
        /^application\/vnd\.stacker\.image\.layer\.squashfs\+(zstd|gzip)$/,
      );
      const a = tarEntries(blobPath(layout, tar.layers[i].digest));
      const b = squashEntries(blobPath(layout, sq.layers[i].digest));
      // hard links are separate names in both; compare everything but symlink sizes
      const norm = (m: Map<string, string>) =>
        [...m].map(([k, v]) => `${k} ${v.startsWith('l') ? v.replace(/ \d+$/, '') : v}`).sort();
      expect(norm(b), `layer ${i}`).toEqual(norm(a));
      // and the same bytes in every regular file (the busybox base has a handful)
      const files = contents(tar.layers[i].digest, 'tar');
      expect(contents(sq.layers[i].digest, 'squashfs'), `layer ${i} contents`).toEqual(files);
      if (i === 0) expect(files.length).toBeGreaterThanOrEqual(3);
    }
  });

  /** sha256 of every regular file of a layer blob, by path, from a fresh extraction. */
  function contents(digest: string, kind: 'tar' | 'squashfs'): string[] {
    const out = join(dir, `contents-${kind}-${digest.slice(7, 19)}`);
    const blob = blobPath(layout, digest);
    if (kind === 'tar') {
      mkdirSync(out);
      tool('tar', ['-xzf', blob, '-C', out, '--no-same-owner', '--no-same-permissions']);
    } else {
      spawnSync('unsquashfs', ['-q', '-n', '-d', out, blob], { encoding: 'utf8' });
    }
    return tool('sh', ['-c', `cd ${out} && find . -type f ! -name '.wh.*' -exec sha256sum {} + | sort -k2`])
      .trim()
      .split('\n')
      .filter(Boolean);
  }

  it('deletions are overlay whiteouts and an opaque directory has user.overlay.opaque', () => {
    const base = skopeo(layout, 'base-squashfs', 'raw').layers.at(-1).digest;
    expect(squashEntries(blobPath(layout, base)).get('etc/.wh.passwd')).toBe('whiteout');
    const child = skopeo(layout, 'child-squashfs', 'raw').layers.at(-1).digest;
    const out = join(dir, 'unsquashed');
    spawnSync('unsquashfs', ['-q', '-d', out, blobPath(layout, child)], { encoding: 'utf8' });
    expect(tool('getfattr', ['--only-values', '-n', 'user.overlay.opaque', join(out, 'd')])).toBe('y');
    expect(readFileSync(join(out, 'd/new'), 'utf8')).toBe('new\n');
  });

  it('a squashfs image is a base and a grab source like its tar twin (whiteouts applied)', () => {
    write(
      join(dir, 'onsquash.yaml'),
      [
        'onsquash:',
        '  from:',
        '    type: oci',
        `    url: ${layout}:child-squashfs`,
        '  run: |',
        '    test ! -e /etc/passwd',
        '    test ! -e /d/f',
        '    test "$(cat /d/new)" = new',
        '    echo on-squashfs > /marker',
        '',
      ].join('\n'),
    );
    // (not chownTree(dir): that would chown the snapshots in roots/ to the build user)
    const b = run(['build', '-f', 'onsquash.yaml', '--oci-dir', 'oci-onsquash']);
    expect(b.code, b.output).toBe(0);
    expect(umociLs(join(dir, 'oci-onsquash'))).toEqual(['onsquash']);
    const out = workdir('stacker-e2e-grab-sq-');
    try {
      const g = grab('base-squashfs:/own', out);
      expect(g.code, g.output).toBe(0);
      expect(readFileSync(join(out, 'own'), 'utf8')).toBe('own\n');
    } finally {
      removeWorkdir(out);
    }
  });
});

describe('clean', () => {
  it('removes roots, oci and the stacker dir, read-only and subuid-owned files included', () => {
    // a tree owned by a subordinate id with a read-only directory, as builds leave them
    const r0 = run(['exec', 'base', 'true']);
    expect(r0.code, r0.output).toBe(0);
    expect(existsSync(join(dir, 'roots'))).toBe(true);
    // the cases this test is about are really there: base's read-only /d/sub and its /own,
    // chowned to 1000 in the build, owned on the host by a subordinate uid of the build user
    const found = (args: string[]) =>
      tool('find', [join(dir, 'roots'), ...args, '-printf', '%m %U %p\n'])
        .trim()
        .split('\n')
        .filter(Boolean);
    const readOnly = found(['-type', 'd', '-path', '*/d/sub']);
    expect(readOnly.length, 'a read-only dir in roots').toBeGreaterThan(0);
    expect(readOnly[0]).toMatch(/^555 /);
    const owned = found(['-type', 'f', '-name', 'own']);
    expect(owned.length, 'a subuid-owned file in roots').toBeGreaterThan(0);
    const buildUid = IS_ROOT ? Number(tool('id', ['-u', TEST_USER]).trim()) : process.getuid!();
    for (const o of owned) {
      const ownUid = Number(o.split(' ')[1]);
      expect(ownUid, o).not.toBe(buildUid);
      expect(ownUid, o).toBeGreaterThan(65535);
    }
    const r = run(['clean']);
    expect(r.code, r.output).toBe(0);
    for (const d of ['roots', 'oci', '.stacker']) expect(existsSync(join(dir, d)), d).toBe(false);
    expect(existsSync(join(dir, 'stacker.yaml'))).toBe(true);
    // nothing left to clean is fine; --all is accepted
    const again = run(['clean', '--all']);
    expect(again.code, again.output).toBe(0);
  });
});
