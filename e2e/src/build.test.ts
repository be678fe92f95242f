// The seed example (centos -> boot, web) built once as the unprivileged user, then read
// back with skopeo, jq, tar, umoci and run with runc.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  asUser,
  chownTree,
  REPO,
  type Result,
  removeWorkdir,
  stacker,
  USER_IDS,
  workdir,
} from './harness.js';
import {
  blobPath,
  entry,
  layersOf,
  makeBusybox,
  readText,
  sha256,
  skopeo,
  tarList,
  tool,
  topLayer,
  umociLs,
  unpack,
} from './oci-tools.js';

let dir: string;
let layout: string;
let build: Result;
let started: number;
let finished: number;

beforeAll(() => {
  dir = workdir('stacker-e2e-build-', join(REPO, 'examples/seed'));
  layout = join(dir, 'oci');
  makeBusybox(join(dir, 'centos.tar.gz'));
  started = Math.floor(Date.now() / 1000);
  build = stacker(['build', '-f', 'stacker.yaml'], { cwd: dir });
  finished = Math.ceil(Date.now() / 1000);
  if (build.code !== 0) throw new Error(`the seed build failed:\n${build.output}`);
});

afterAll(() => {
  if (dir) removeWorkdir(dir);
});

describe('the seed build', () => {
  it('says each filesystem was built', () => {
    expect(build.code).toBe(0);
    for (const name of ['centos', 'boot', 'web'])
      expect(build.output).toContain(`filesystem ${name} built successfully`);
  });

  it('tags centos, boot and web in oci/index.json', () => {
    const index = JSON.parse(readText(join(layout, 'index.json')));
    const tags = index.manifests.map((m: any) => m.annotations['org.opencontainers.image.ref.name']).sort();
    expect(tags).toEqual(['boot', 'centos', 'web']);
    expect(umociLs(layout)).toEqual(['boot', 'centos', 'web']);
  });

  it('passes umoci stat for every image', () => {
    for (const tag of ['centos', 'boot', 'web']) {
      const out = tool('umoci', ['stat', '--json', '--image', `${layout}:${tag}`]);
      expect(JSON.parse(out).history.length).toBeGreaterThan(0);
    }
  });
});

describe('web image config (skopeo inspect --config)', () => {
  let config: any;
  beforeAll(() => {
    config = skopeo(layout, 'web', 'config');
  });

  it('has the entrypoint, volumes and working dir of the stanza', () => {
    expect(config.config.Entrypoint).toEqual(['lighthttpd']);
    expect(config.config.Volumes).toEqual({ '/data/db': {} });
    expect(config.config.WorkingDir).toBe('/var/lib/www');
  });

  it('inherits the environment and labels of centos', () => {
    const env: string[] = config.config.Env;
    expect(env).toContain('http_proxy=http://example.com:8080');
    expect(env).toContain('https_proxy=https://example.com:8080');
    expect(env.filter((e) => e.startsWith('PATH='))).toHaveLength(1);
    expect(config.config.Labels).toEqual({ foo: 'bar', bar: 'baz' });
  });

  it('is linux/amd64', () => {
    expect(config.os).toBe('linux');
    expect(config.architecture).toBe('amd64');
    const inspect = skopeo(layout, 'web');
    expect(inspect.Os).toBe('linux');
    expect(inspect.Architecture).toBe('amd64');
  });

  it('was created during the build', () => {
    const created = Date.parse(config.created) / 1000;
    expect(created).toBeGreaterThanOrEqual(started - 1);
    expect(created).toBeLessThanOrEqual(finished + 1);
  });

  it('has a history entry for the imported tarball and one per stanza in its chain (centos, web)', () => {
    expect(config.history).toHaveLength(3);
    expect(config.history[0].created_by).toMatch(/^stacker import tar:sha256:/);
    expect(config.history[1].empty_layer).toBe(true);
    expect(config.history[2].created_by).toBe('stacker build web');
    for (const h of config.history) {
      const t = Date.parse(h.created) / 1000;
      expect(t).toBeGreaterThanOrEqual(started - 1);
      expect(t).toBeLessThanOrEqual(finished + 1);
    }
  });

  it('has as many non-empty history entries as layers (image-spec: empty_layer only for entries without a layer)', () => {
    const layers = config.rootfs.diff_ids.length;
    expect(layers).toBe(2);
    const nonEmpty = config.history.filter((h: any) => !h.empty_layer);
    expect(nonEmpty).toHaveLength(layers);
  });

  it('without SOURCE_DATE_EPOCH, the author is user@hostname as in stacker', () => {
    expect(config.author).toMatch(/^[^@\s]+@[^@\s]+$/);
  });
});

describe('web manifest', () => {
  it('carries the stacker file (after substitution) and the stacker version as annotations', () => {
    const manifest = skopeo(layout, 'web', 'raw');
    const text = readFileSync(join(REPO, 'examples/seed/stacker.yaml'), 'utf8').replace(
      // biome-ignore lint/suspicious/noTemplateCurlyInString: stacker's substitution syntax
      '${{CENTOS_TAR:./centos.tar.gz}}',
      './centos.tar.gz',
    );
    expect(manifest.annotations['io.stackeroci.stacker.stacker_yaml']).toBe(text);
    expect(manifest.annotations['io.stackeroci.stacker.stacker_version']).toMatch(/^\d+\.\d+\.\d+/);
    expect(
      manifest.layers.every((l: any) => l.mediaType === 'application/vnd.oci.image.layer.v1.tar+gzip'),
    ).toBe(true);
  });
});

describe('layers', () => {
  it('centos has exactly one layer: centos.tar.gz itself, not recompressed', () => {
    const centos = layersOf(layout, 'centos');
    expect(centos).toEqual([`sha256:${sha256(join(dir, 'centos.tar.gz'))}`]);
    expect(sha256(blobPath(layout, centos[0]))).toBe(centos[0].slice('sha256:'.length));
  });

  it('boot and web reuse the centos layer and add one each', () => {
    const [base] = layersOf(layout, 'centos');
    const boot = layersOf(layout, 'boot');
    const web = layersOf(layout, 'web');
    expect(boot).toHaveLength(2);
    expect(web).toHaveLength(2);
    expect(boot[0]).toBe(base);
    expect(web[0]).toBe(base);
    expect(boot[1]).not.toBe(web[1]);
  });

  it('every blob is named by its sha256', () => {
    for (const tag of ['centos', 'boot', 'web']) {
      for (const d of layersOf(layout, tag)) expect(`sha256:${sha256(blobPath(layout, d))}`).toBe(d);
    }
  });

  it('no layer has /stacker in it', () => {
    for (const tag of ['centos', 'boot', 'web']) {
      for (const d of layersOf(layout, tag)) {
        const names = tarList(blobPath(layout, d)).map((e) => e.name);
        expect(names.filter((n) => n === 'stacker' || n.startsWith('stacker/'))).toEqual([]);
      }
    }
  });

  it("boot's layer: sshd_config is 1000/1000, the rest 0/0", () => {
    const entries = topLayer(layout, 'boot');
    const names = entries.map((e) => e.name);
    expect(names).toEqual(expect.arrayContaining(['etc/ssh', 'etc/ssh/sshd_config', 'var/empty']));
    const sshd = entry(entries, 'etc/ssh/sshd_config')!;
    expect([sshd.uid, sshd.gid]).toEqual([1000, 1000]);
    expect(sshd.size).toBe('PermitRootLogin no\n'.length);
    for (const e of entries.filter((x) => x.name !== 'etc/ssh/sshd_config'))
      expect([e.name, e.uid, e.gid]).toEqual([e.name, 0, 0]);
  });

  it("web's layer whites out /etc/hostname and adds the lighttpd files", () => {
    const entries = topLayer(layout, 'web');
    const wh = entry(entries, 'etc/.wh.hostname');
    expect(wh?.type).toBe('-');
    expect(wh?.size).toBe(0);
    const cfg = entry(entries, 'etc/lighttpd/lighttp.cfg')!;
    expect([cfg.uid, cfg.gid, cfg.size]).toEqual([
      0,
      0,
      readFileSync(join(REPO, 'examples/seed/lighttp.cfg')).length,
    ]);
    expect(entry(entries, 'usr/bin/lighthttpd')?.mode).toBe('-rwxr-xr-x');
    expect(entry(entries, 'data/db')?.type).toBe('d');
    expect(entry(entries, 'var/lib/www')?.type).toBe('d');
  });
});

describe('the web image unpacked by umoci', () => {
  let rootfs: string;
  beforeAll(() => {
    rootfs = unpack(dir, layout, 'web', join(dir, 'web-bundle'));
  });

  it('has no /etc/hostname, but the rest of /etc', () => {
    expect(() => readFileSync(join(rootfs, 'etc/hostname'))).toThrow();
    expect(readText(join(rootfs, 'etc/passwd'))).toContain('root:x:0:0');
  });

  it('has lighttp.cfg as imported', () => {
    expect(readText(join(rootfs, 'etc/lighttpd/lighttp.cfg'))).toBe(
      readText(join(REPO, 'examples/seed/lighttp.cfg')),
    );
  });

  it('has no /stacker', () => {
    expect(() => readFileSync(join(rootfs, 'stacker'))).toThrow();
  });

  it("boot's rootfs keeps /etc/hostname", () => {
    const boot = unpack(dir, layout, 'boot', join(dir, 'boot-bundle'));
    expect(readText(join(boot, 'etc/hostname'))).toBe('stacker-busybox\n');
    expect(readText(join(boot, 'etc/ssh/sshd_config'))).toBe('PermitRootLogin no\n');
  });
});

describe('runc runs the web entrypoint', () => {
  it('prints lighthttpd serving /var/lib/www', () => {
    const bundle = join(dir, 'run-bundle');
    unpack(dir, layout, 'web', bundle);
    const cfgPath = join(bundle, 'config.json');
    const cfg = JSON.parse(tool('jq', ['.process.terminal = false', cfgPath]));
    expect(cfg.process.args).toEqual(['lighthttpd']);
    expect(cfg.process.cwd).toBe('/var/lib/www');
    writeFileSync(cfgPath, JSON.stringify(cfg));
    const state = join(dir, 'runc-state');
    mkdirSync(state);
    chownTree(bundle);
    chownTree(state);
    const r = asUser('runc', ['--root', state, 'run', '-b', bundle, `e2e-web-${process.pid}`], {
      cwd: dir,
      timeout: 60_000,
    });
    expect(r.code, r.output).toBe(0);
    expect(r.stdout).toContain('lighthttpd serving /var/lib/www');
    expect(r.stdout).toContain(readText(join(REPO, 'examples/seed/lighttp.cfg')).trim().split('\n')[0]);
  });
});

describe('a second build of the same file', () => {
  it('reuses every layer from the cache and gives the same manifests', () => {
    const before = JSON.parse(readText(join(layout, 'index.json')));
    const r = stacker(['build', '-f', 'stacker.yaml'], { cwd: dir });
    expect(r.code, r.output).toBe(0);
    for (const name of ['centos', 'boot', 'web']) expect(r.output).toContain(`found cached layer ${name}`);
    const after = JSON.parse(readText(join(layout, 'index.json')));
    expect(after.manifests.map((m: any) => m.digest).sort()).toEqual(
      before.manifests.map((m: any) => m.digest).sort(),
    );
  });
});

describe('SOURCE_DATE_EPOCH', () => {
  it('sets created, history and author, and clamps mtimes in the new layers', () => {
    const epoch = 1600000000;
    const r = stacker(['--oci-dir', 'oci-sde', 'build', '-f', 'stacker.yaml'], {
      cwd: dir,
      env: { SOURCE_DATE_EPOCH: String(epoch) },
    });
    expect(r.code, r.output).toBe(0);
    const sde = join(dir, 'oci-sde');
    const config = skopeo(sde, 'web', 'config');
    expect(config.created).toBe('2020-09-13T12:26:40Z');
    expect(config.author).toBe('stacker');
    for (const h of config.history) expect(h.created).toBe('2020-09-13T12:26:40Z');
    const out = tool('tar', ['tzv', '--full-time', '-f', blobPath(sde, layersOf(sde, 'web')[1])]);
    const times = out
      .split('\n')
      .filter(Boolean)
      .map((l) => Date.parse(`${l.split(/\s+/)[3]}T${l.split(/\s+/)[4]}Z`) / 1000);
    expect(times.length).toBeGreaterThan(3);
    for (const t of times) expect(t).toBeLessThanOrEqual(epoch);
  });
});

describe('with STACKER_USERNS_HELPER=newuidmap (the path for util-linux older than 2.38)', () => {
  it('builds with the ids mapped by newuidmap/newgidmap: uid 0 inside, the subuid range behind it', () => {
    writeFileSync(
      join(dir, 'mapped.yaml'),
      [
        'mapped:',
        '  from:',
        '    type: tar',
        '    url: ./centos.tar.gz',
        '  run: |',
        '    cat /proc/self/uid_map > /uid_map',
        '    id -u > /id',
        '    echo owned > /owned',
        '    chown 1000:1000 /owned',
        '',
      ].join('\n'),
    );
    chownTree(join(dir, 'mapped.yaml'));
    const r = stacker(['--oci-dir', 'oci-mapped', 'build', '-f', 'mapped.yaml'], {
      cwd: dir,
      env: { STACKER_USERNS_HELPER: 'newuidmap' },
    });
    expect(r.code, r.output).toBe(0);
    expect(r.output).toContain('filesystem mapped built successfully');
    const mapped = join(dir, 'oci-mapped');
    const rootfs = unpack(dir, mapped, 'mapped', join(dir, 'unpacked-mapped'));
    const map = readText(join(rootfs, 'uid_map'))
      .trim()
      .split('\n')
      .map((l) => l.trim().split(/\s+/).join(' '));
    // newuidmap maps the whole range at 1 (unshare --map-auto maps one id fewer)
    expect(map).toEqual([`0 ${USER_IDS.uid} 1`, '1 100000 65536']);
    expect(readText(join(rootfs, 'id'))).toBe('0\n');
    const owned = entry(topLayer(mapped, 'mapped'), 'owned')!;
    expect([owned.uid, owned.gid]).toEqual([1000, 1000]);
  });
});

describe('stacker check', () => {
  it('reports btrfs support and creates no directory', () => {
    const fresh = workdir('stacker-e2e-check-');
    try {
      const r = stacker(['check'], { cwd: fresh });
      expect(r.code, r.output).toBe(0);
      expect(r.stdout).toMatch(/^(ok|no) {2,}btrfs {2,}\S/m);
      expect(r.stdout).toMatch(/^ok {2,}storage overlay {2,}usable on /m);
      expect(readdirSync(fresh)).toEqual([]);
      // asked for btrfs on a filesystem that is not: it fails, and still leaves nothing
      const b = stacker(['--storage-type', 'btrfs', 'check'], { cwd: fresh });
      expect(b.code, b.output).toBe(1);
      expect(b.stdout).toMatch(/^FAIL {2}storage btrfs {2,}the roots dir .* not btrfs/m);
      expect(readdirSync(fresh)).toEqual([]);
    } finally {
      removeWorkdir(fresh);
    }
  });
});

describe('the git_version annotation', () => {
  const git = (cwd: string, ...args: string[]) =>
    tool('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.com', ...args], { cwd }).trim();

  it('is `git describe --tags` of the stacker file’s repository, with -dirty for changed tracked files, also when someone else owns the checkout', () => {
    // the repository belongs to root (readable by all): inside the user namespace its
    // owner is nobody, which git's safe.directory check refuses unless told otherwise
    const repo = join(dir, 'repo');
    mkdirSync(repo);
    copyFileSync(join(dir, 'centos.tar.gz'), join(repo, 'centos.tar.gz'));
    writeFileSync(
      join(repo, 'stacker.yaml'),
      'gitted:\n  from:\n    type: tar\n    url: ./centos.tar.gz\n  run: echo hi > /hi\n',
    );
    git(repo, 'init', '-q');
    git(repo, 'add', '.');
    git(repo, 'commit', '-q', '-m', 'first');
    git(repo, 'tag', 'v1');
    tool('chmod', ['-R', 'a+rX', repo]);
    tool('chown', ['root:root', repo]);
    const annotation = (oci: string) =>
      skopeo(join(dir, oci), 'gitted', 'raw').annotations['io.stackeroci.stacker.git_version'];

    const clean = stacker(['--oci-dir', 'oci-git', 'build', '-f', 'repo/stacker.yaml'], { cwd: dir });
    expect(clean.code, clean.output).toBe(0);
    expect(git(repo, 'describe', '--tags')).toBe('v1');
    expect(annotation('oci-git')).toBe('v1');

    // untracked files do not count; a changed tracked file does
    writeFileSync(join(repo, 'untracked.txt'), 'x');
    writeFileSync(
      join(repo, 'stacker.yaml'),
      `${readText(join(repo, 'stacker.yaml'))}  labels:\n    l: dirty\n`,
    );
    const dirty = stacker(['--oci-dir', 'oci-git-dirty', 'build', '-f', 'repo/stacker.yaml'], { cwd: dir });
    expect(dirty.code, dirty.output).toBe(0);
    expect(annotation('oci-git-dirty')).toBe('v1-dirty');

    // a commit after the tag: describe's v1-1-g<hash>
    git(repo, 'commit', '-q', '-am', 'second');
    const after = stacker(['--oci-dir', 'oci-git-after', 'build', '-f', 'repo/stacker.yaml'], { cwd: dir });
    expect(after.code, after.output).toBe(0);
    expect(annotation('oci-git-after')).toBe(git(repo, 'describe', '--tags'));
    expect(annotation('oci-git-after')).toMatch(/^v1-1-g[0-9a-f]+$/);
  });
});
