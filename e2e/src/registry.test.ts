import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkLayout } from './crash-tools.js';
import { BUSYBOX_TAR, type Result, removeWorkdir, stacker, workdir, write } from './harness.js';
import {
  haveRegistry,
  htpasswdLine,
  type Running,
  skopeo,
  startRegistry,
  tagDigest,
} from './registry-server.js';

// A real registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1, once open and
// once behind htpasswd basic auth; images go in with skopeo and come back out with skopeo.

const USER = 'pubuser';
const PASSWORD = 'correct-horse-battery';

function ok(r: Result, what: string): Result {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.output}`);
  return r;
}

const canRun = haveRegistry && existsSync(BUSYBOX_TAR);
// a bcrypt line for the htpasswd registry (undefined: no bcrypt tool on this machine)
const HTPASSWD = canRun ? htpasswdLine(USER, PASSWORD) : undefined;

/**
 * Every blob of an OCI layout as plain bytes in `out` (gzip layers decompressed), so that
 * a grep sees what is inside the layers too.
 */
function unpackBlobs(layout: string, out: string): void {
  mkdirSync(out, { recursive: true });
  const dir = join(layout, 'blobs', 'sha256');
  for (const name of readdirSync(dir)) {
    const bytes = readFileSync(join(dir, name));
    const gz = bytes.length > 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
    writeFileSync(join(out, name), gz ? gunzipSync(bytes) : bytes);
  }
}

describe.skipIf(!canRun)('registries: docker:// sources and stacker publish', () => {
  let base: string;
  let open: Running;
  let locked: Running | undefined;
  const work: string[] = [];

  beforeAll(async () => {
    base = workdir('stacker-e2e-registry-');
    [open, locked] = await Promise.all([
      startRegistry(base, 'open'),
      HTPASSWD ? startRegistry(base, 'locked', { htpasswd: HTPASSWD }) : Promise.resolve(undefined),
    ]);

    // the seed: busybox built by the CLI from the fixture tarball, pushed with skopeo
    const seed = workdir('stacker-e2e-seed-');
    work.push(seed);
    write(join(seed, 'stacker.yaml'), `centos:\n  from:\n    type: tar\n    url: ${BUSYBOX_TAR}\n`);
    ok(stacker(['build'], { cwd: seed }), 'seed build');
    skopeo([
      'copy',
      '--dest-tls-verify=false',
      `oci:${join(seed, 'oci')}:centos`,
      `docker://${open.host}/busybox:latest`,
    ]);
    // the same image as a docker schema 2 manifest with docker media types
    skopeo([
      'copy',
      '--dest-tls-verify=false',
      '--format',
      'v2s2',
      `oci:${join(seed, 'oci')}:centos`,
      `docker://${open.host}/busybox:v2s2`,
    ]);
    if (locked) {
      skopeo([
        'copy',
        '--dest-tls-verify=false',
        '--dest-creds',
        `${USER}:${PASSWORD}`,
        `oci:${join(seed, 'oci')}:centos`,
        `docker://${locked.host}/busybox:latest`,
      ]);
    }
  });

  afterAll(() => {
    for (const r of [open, locked]) r?.proc.kill('SIGTERM');
    for (const d of work) removeWorkdir(d);
    if (base) removeWorkdir(base);
  });

  it('builds from docker://, publishes, and skopeo reads back the same manifests', () => {
    const dir = workdir();
    work.push(dir);
    write(
      join(dir, 'stacker.yaml'),
      `app:
  from:
    type: docker
    url: docker://${open.host}/busybox:latest
    insecure: true
  run: |
    echo hello > /hello
tool:
  from:
    type: built
    tag: app
  run: |
    echo tool > /tool
scratchpad:
  build_only: true
  from:
    type: docker
    url: docker://${open.host}/busybox:latest
    insecure: true
`,
    );
    const first = ok(stacker(['build'], { cwd: dir }), 'build');
    expect(first.output).toMatch(/copied blob sha256:/);
    const local = join(dir, 'oci');
    const appDigest = tagDigest(local, 'app')!;
    const toolDigest = tagDigest(local, 'tool')!;
    expect(appDigest).toMatch(/^sha256:/);

    const show = stacker(
      ['publish', '--url', `docker://${open.host}/proj`, '--tag', 'v1', '--skip-tls', '--show-only'],
      { cwd: dir },
    );
    ok(show, 'publish --show-only');
    expect(show.output).toContain(
      `would publish: ${join(dir, 'stacker.yaml')} app to docker://${open.host}/proj/app:v1`,
    );
    expect(show.output).toContain(`will not publish: ${join(dir, 'stacker.yaml')} build_only scratchpad`);
    expect(
      spawnSync('skopeo', ['inspect', '--tls-verify=false', `docker://${open.host}/proj/app:v1`]).status,
    ).not.toBe(0);

    const pub = stacker(['publish', '--url', `docker://${open.host}/proj`, '--tag', 'v1', '--skip-tls'], {
      cwd: dir,
    });
    ok(pub, 'publish');
    expect(pub.output).toContain(
      `publishing ${join(dir, 'stacker.yaml')} app to docker://${open.host}/proj/app:v1`,
    );
    expect(pub.output).toContain('pushing blob');
    // tool shares app's layers: they are mounted across repositories, not sent again
    expect(pub.output).toMatch(/mounted blob sha256:[0-9a-f]{64} from proj\/app into/);

    for (const [name, digest] of [
      ['app', appDigest],
      ['tool', toolDigest],
    ]) {
      const inspected = JSON.parse(
        skopeo(['inspect', '--tls-verify=false', `docker://${open.host}/proj/${name}:v1`]),
      ) as { Digest: string };
      expect(inspected.Digest).toBe(digest);
      const back = join(dir, `back-${name}`);
      skopeo([
        'copy',
        '--src-tls-verify=false',
        `docker://${open.host}/proj/${name}:v1`,
        `oci:${back}:${name}`,
      ]);
      expect(tagDigest(back, name)).toBe(digest);
    }
    expect(
      spawnSync('skopeo', ['inspect', '--tls-verify=false', `docker://${open.host}/proj/scratchpad:v1`])
        .status,
    ).not.toBe(0);

    const again = stacker(['publish', '--url', `docker://${open.host}/proj`, '--tag', 'v1', '--skip-tls'], {
      cwd: dir,
    });
    ok(again, 'second publish');
    expect(again.output).not.toContain('pushing blob');
    expect(again.output).not.toContain('mounted blob');
    expect(again.output).toMatch(/blob sha256:[0-9a-f]{64} already in 127\.0\.0\.1:\d+\/proj\/app, skipped/);

    // an oci: destination gets NAME_TAG tags
    const toOci = stacker(['publish', '--url', `oci:${join(dir, 'out')}`, '--tag', 'v1', '--image', 'tool'], {
      cwd: dir,
    });
    ok(toOci, 'publish to oci');
    expect(tagDigest(join(dir, 'out'), 'tool_v1')).toBe(toolDigest);
    expect(tagDigest(join(dir, 'out'), 'app_v1')).toBeUndefined();

    // the pulled blobs are kept in the stacker dir: another output layout needs no download
    const elsewhere = ok(
      stacker(['build', '--oci-dir', 'oci-elsewhere', '--no-cache'], { cwd: dir }),
      'build elsewhere',
    );
    expect(elsewhere.output).not.toMatch(/copied blob/);
    expect(checkLayout(join(dir, 'oci-elsewhere')).problems).toEqual([]);
    expect(tagDigest(join(dir, 'oci-elsewhere'), 'app')).toMatch(/^sha256:/);
  });

  it('a docker schema 2 image is a base as it is, docker layer types kept', () => {
    const dir = workdir();
    work.push(dir);
    write(
      join(dir, 'stacker.yaml'),
      `d:\n  from:\n    type: docker\n    url: docker://${open.host}/busybox:v2s2\n    insecure: true\n  run: test -x /bin/busybox && echo ok > /ok\n`,
    );
    ok(stacker(['build'], { cwd: dir }), 'build from a v2s2 image');
    const local = join(dir, 'oci');
    const manifest = JSON.parse(
      readFileSync(join(local, 'blobs', 'sha256', tagDigest(local, 'd')!.slice(7)), 'utf8'),
    ) as {
      layers: Array<{ mediaType: string }>;
    };
    expect(manifest.layers[0].mediaType).toBe('application/vnd.docker.image.rootfs.diff.tar.gzip');
    expect(manifest.layers.length).toBe(2);
    // and such a mixed image publishes and reads back as it is
    ok(
      stacker(['publish', '--url', `docker://${open.host}/mixed`, '--tag', 't', '--skip-tls'], { cwd: dir }),
      'publish',
    );
    const inspected = JSON.parse(
      skopeo(['inspect', '--tls-verify=false', `docker://${open.host}/mixed/d:t`]),
    ) as { Digest: string };
    expect(inspected.Digest).toBe(tagDigest(local, 'd'));
  });

  it('a missing tag is one sentence naming the registry, the repository and the tag', () => {
    const dir = workdir();
    work.push(dir);
    write(
      join(dir, 'stacker.yaml'),
      `a:\n  from:\n    type: docker\n    url: docker://${open.host}/busybox:nope\n    insecure: true\n`,
    );
    const r = stacker(['build'], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`registry ${open.host} repository busybox has no tag "nope" (404 not found).`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('refuses to publish what was not built', () => {
    const dir = workdir();
    work.push(dir);
    write(
      join(dir, 'stacker.yaml'),
      `a:\n  from:\n    type: docker\n    url: docker://${open.host}/busybox:latest\n    insecure: true\n`,
    );
    mkdirSync(join(dir, 'oci', 'blobs', 'sha256'), { recursive: true });
    write(join(dir, 'oci', 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    write(join(dir, 'oci', 'index.json'), '{"schemaVersion":2,"manifests":[]}');
    const r = stacker(['publish', '--url', `docker://${open.host}/proj`, '--tag', 'v1', '--skip-tls'], {
      cwd: dir,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('layer needs to be rebuilt before publishing: a is not in the OCI layout');
  });

  it.skipIf(!HTPASSWD)(
    'with basic auth: a wrong password is a clear 401 that never shows the password',
    () => {
      if (!locked) throw new Error('the htpasswd registry did not start');
      const dir = workdir();
      work.push(dir);
      // credentials for the source come from containers' auth.json
      const authFile = join(dir, 'auth.json');
      write(
        authFile,
        JSON.stringify({
          auths: { [locked.host]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } },
        }),
      );
      write(
        join(dir, 'stacker.yaml'),
        `app:\n  from:\n    type: docker\n    url: docker://${locked.host}/busybox:latest\n    insecure: true\n  run: echo hi > /hi\n`,
      );
      ok(
        stacker(['--debug', '--log-file', join(dir, 'build.log'), 'build'], {
          cwd: dir,
          env: { REGISTRY_AUTH_FILE: authFile },
        }),
        'build from the locked registry',
      );

      const bad = stacker(
        [
          'publish',
          '--url',
          `docker://${locked.host}/proj`,
          '--tag',
          'v1',
          '--skip-tls',
          '--username',
          USER,
          '--password',
          'WrongPassw0rd',
        ],
        {
          cwd: dir,
        },
      );
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain(`registry ${locked.host} repository proj/app:`);
      expect(bad.stderr).toContain(
        `(401 unauthorized) with the credentials of user "${USER}" from --username/--password`,
      );
      expect(bad.output).not.toContain('WrongPassw0rd');

      const good = stacker(
        [
          'publish',
          '--url',
          `docker://${locked.host}/proj`,
          '--tag',
          'v1',
          '--skip-tls',
          '--username',
          USER,
          '--password',
          PASSWORD,
          '--debug',
          '--log-file',
          join(dir, 'publish.log'),
        ],
        {
          cwd: dir,
        },
      );
      ok(good, 'publish with the right password');
      // the password (plain, or as the base64 of user:password) is in no log, blob, cache or
      // annotation: grep everything the build and the publish wrote
      // (layer blobs decompressed first, so that their contents are searched too)
      const secrets = [PASSWORD, Buffer.from(`${USER}:${PASSWORD}`).toString('base64')];
      const plain = join(base, 'auth-blobs');
      unpackBlobs(join(dir, 'oci'), plain);
      const grepFor = (paths: string[]) =>
        spawnSync('grep', ['-rlF', ...secrets.flatMap((s) => ['-e', s]), ...paths], { encoding: 'utf8' });
      const leaks = grepFor([
        join(dir, 'oci'),
        plain,
        join(dir, '.stacker'),
        join(dir, 'build.log'),
        join(dir, 'publish.log'),
      ]);
      // exit 1: grep read everything and found nothing (2 would be an error, 0 a leak)
      expect(leaks.stdout).toBe('');
      expect(leaks.status, leaks.stderr).toBe(1);
      // and the grep does find a secret where there is one
      write(join(plain, 'canary'), `x ${secrets[1]} y`);
      expect(grepFor([plain]).status).toBe(0);
      expect(good.output).not.toContain(PASSWORD);
      expect(readFileSync(join(dir, 'publish.log'), 'utf8')).toContain('stacker version');
      const inspected = JSON.parse(
        skopeo([
          'inspect',
          '--tls-verify=false',
          '--creds',
          `${USER}:${PASSWORD}`,
          `docker://${locked.host}/proj/app:v1`,
        ]),
      ) as { Digest: string };
      expect(inspected.Digest).toBe(tagDigest(join(dir, 'oci'), 'app'));

      const anon = stacker(['build'], { cwd: dir, env: { REGISTRY_AUTH_FILE: join(dir, 'none.json') } });
      // cached build: the base is still resolved from the registry, which now refuses
      expect(anon.code).toBe(1);
      expect(anon.stderr).toContain('(401 unauthorized) with no credentials');
    },
  );

  it('a stanza edited after its build is refused by publish, naming it; --force publishes it', () => {
    const dir = workdir();
    work.push(dir);
    const file = join(dir, 'stacker.yaml');
    const yaml = (msg: string) =>
      `app:\n  from:\n    type: docker\n    url: docker://${open.host}/busybox:latest\n    insecure: true\n  run: echo ${msg} \${{WHO}} > /msg\ntool:\n  from:\n    type: built\n    tag: app\n  run: echo tool > /tool\n`;
    write(file, yaml('one'));
    ok(stacker(['build', '--substitute', 'WHO=me'], { cwd: dir }), 'build');
    const url = ['--url', `docker://${open.host}/stale`, '--tag', 'v1', '--skip-tls'];
    const args = ['publish', ...url, '--substitute', 'WHO=me'];
    ok(stacker([...args, '--show-only'], { cwd: dir }), 'publish --show-only of a fresh build');
    // as in stacker, a missing substitution is "dummy" on publish: here it makes app differ
    const dummy = stacker(['publish', ...url, '--show-only'], { cwd: dir });
    expect(dummy.code).toBe(1);
    expect(dummy.stderr).toContain(
      `app changed in ${file} since it was built (publish put "dummy" in place of \${{WHO}}: pass the --substitute values of the build)`,
    );

    write(file, yaml('two'));
    const r = stacker(args, { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `error: layer needs to be rebuilt before publishing: app changed in ${file} since it was built; run stacker build first, or publish it as it was built with --force`,
    );
    expect(
      spawnSync('skopeo', ['inspect', '--tls-verify=false', `docker://${open.host}/stale/app:v1`]).status,
    ).not.toBe(0);
    // tool, built on app, is stale too
    const only = stacker([...args, '--image', 'tool'], { cwd: dir });
    expect(only.code).toBe(1);
    expect(only.stderr).toContain(`tool is built on app, which changed in ${file} since`);

    const forced = stacker([...args, '--force'], { cwd: dir });
    ok(forced, 'publish --force');
    expect(forced.output).toContain(
      `publishing app as it was built, though changed in ${file} since it was built (--force)`,
    );
    const inspected = JSON.parse(
      skopeo(['inspect', '--tls-verify=false', `docker://${open.host}/stale/app:v1`]),
    ) as { Digest: string };
    expect(inspected.Digest).toBe(tagDigest(join(dir, 'oci'), 'app'));

    // rebuilt, it publishes again without --force
    ok(stacker(['build', '--substitute', 'WHO=me'], { cwd: dir }), 'rebuild');
    ok(stacker(args, { cwd: dir }), 'publish after the rebuild');
  });

  it('builds from a docker://…@sha256: reference, the base image as it is', () => {
    const dir = workdir();
    work.push(dir);
    const digest = (
      JSON.parse(skopeo(['inspect', '--tls-verify=false', `docker://${open.host}/busybox:latest`])) as {
        Digest: string;
      }
    ).Digest;
    write(
      join(dir, 'stacker.yaml'),
      `pinned:\n  from:\n    type: docker\n    url: docker://${open.host}/busybox@${digest}\n    insecure: true\n  run: echo pinned > /pinned\n`,
    );
    ok(stacker(['build'], { cwd: dir }), 'build from a digest');
    const local = join(dir, 'oci');
    const manifest = JSON.parse(
      readFileSync(join(local, 'blobs', 'sha256', tagDigest(local, 'pinned')!.slice(7)), 'utf8'),
    ) as { layers: Array<{ digest: string }> };
    const base = JSON.parse(
      skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${open.host}/busybox@${digest}`]),
    ) as { layers: Array<{ digest: string }> };
    expect(manifest.layers.slice(0, -1).map((l) => l.digest)).toEqual(base.layers.map((l) => l.digest));
    // a digest nobody has is one sentence naming it
    const missing = `sha256:${'0'.repeat(64)}`;
    write(
      join(dir, 'stacker.yaml'),
      `pinned:\n  from:\n    type: docker\n    url: docker://${open.host}/busybox@${missing}\n    insecure: true\n`,
    );
    const r = stacker(['build'], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `registry ${open.host} repository busybox has no manifest ${missing} (404 not found).`,
    );
  });

  it('notices a remote tag moved to another image on the next build', () => {
    const dir = workdir();
    work.push(dir);
    skopeo([
      'copy',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      `docker://${open.host}/busybox:latest`,
      `docker://${open.host}/moving:t`,
    ]);
    write(
      join(dir, 'stacker.yaml'),
      `m:\n  from:\n    type: docker\n    url: docker://${open.host}/moving:t\n    insecure: true\n  run: echo m > /m\n`,
    );
    ok(stacker(['build'], { cwd: dir }), 'first build');
    const first = tagDigest(join(dir, 'oci'), 'm');
    const cached = stacker(['build'], { cwd: dir });
    ok(cached, 'second build');
    expect(cached.output).toContain('found cached layer m');

    // the tag now names another image (the same files as a docker schema 2 manifest)
    skopeo([
      'copy',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      `docker://${open.host}/busybox:v2s2`,
      `docker://${open.host}/moving:t`,
    ]);
    const moved = stacker(['build'], { cwd: dir });
    ok(moved, 'build after the tag moved');
    expect(moved.output).not.toContain('found cached layer m');
    const manifest = JSON.parse(
      readFileSync(join(dir, 'oci', 'blobs', 'sha256', tagDigest(join(dir, 'oci'), 'm')!.slice(7)), 'utf8'),
    ) as { layers: Array<{ mediaType: string }> };
    expect(tagDigest(join(dir, 'oci'), 'm')).not.toBe(first);
    expect(manifest.layers[0].mediaType).toBe('application/vnd.docker.image.rootfs.diff.tar.gzip');
  });

  it('publishes --layer-type squashfs as TAG-squashfs, and refuses a squashfs image older than the tar one', () => {
    const dir = workdir();
    work.push(dir);
    const file = join(dir, 'stacker.yaml');
    const yaml = (msg: string) =>
      `sq:\n  from:\n    type: docker\n    url: docker://${open.host}/busybox:latest\n    insecure: true\n  run: echo ${msg} > /msg\n`;
    write(file, yaml('one'));
    ok(stacker(['build', '--layer-type', 'tar', '--layer-type', 'squashfs'], { cwd: dir }), 'build');
    const local = join(dir, 'oci');
    const args = ['publish', '--url', `docker://${open.host}/flavours`, '--tag', 'v1', '--skip-tls'];
    const pub = stacker([...args, '--layer-type', 'squashfs', '--layer-type', 'tar'], { cwd: dir });
    ok(pub, 'publish both layer types');
    expect(pub.output).toContain(
      `publishing ${file} sq-squashfs to docker://${open.host}/flavours/sq:v1-squashfs`,
    );
    for (const [tag, localTag] of [
      ['v1', 'sq'],
      ['v1-squashfs', 'sq-squashfs'],
    ]) {
      const inspected = JSON.parse(
        skopeo(['inspect', '--tls-verify=false', `docker://${open.host}/flavours/sq:${tag}`]),
      ) as { Digest: string };
      expect(inspected.Digest).toBe(tagDigest(local, localTag));
    }
    // rebuilt as tar only: the squashfs image left in the layout is the old one
    write(file, yaml('two'));
    ok(stacker(['build'], { cwd: dir }), 'tar-only rebuild');
    const r = stacker([...args, '--layer-type', 'squashfs'], { cwd: dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      'error: layer needs to be rebuilt before publishing: sq-squashfs is older than sq, its tar image; run stacker build --layer-type squashfs first',
    );
  });
});
