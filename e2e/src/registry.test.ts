import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

function ok(r: Result, what: string): void {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.output}`);
}

const canRun = haveRegistry && existsSync(BUSYBOX_TAR);

describe.skipIf(!canRun)('registries: docker:// sources and stacker publish', () => {
  let base: string;
  let open: Running;
  let locked: Running | undefined;
  const work: string[] = [];

  beforeAll(async () => {
    base = workdir('stacker-e2e-registry-');
    const line = htpasswdLine(USER, PASSWORD);
    [open, locked] = await Promise.all([
      startRegistry(base, 'open'),
      line ? startRegistry(base, 'locked', { htpasswd: line }) : Promise.resolve(undefined),
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
    ok(stacker(['build'], { cwd: dir }), 'build');
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

  it('with basic auth: a wrong password is a clear 401 that never shows the password', () => {
    if (!locked) return; // no bcrypt tool on this machine
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
    const secrets = [PASSWORD, Buffer.from(`${USER}:${PASSWORD}`).toString('base64')];
    const leaks = spawnSync(
      'grep',
      [
        '-rlF',
        ...secrets.flatMap((s) => ['-e', s]),
        join(dir, 'oci'),
        join(dir, '.stacker'),
        join(dir, 'build.log'),
        join(dir, 'publish.log'),
      ],
      { encoding: 'utf8' },
    );
    expect(leaks.stdout).toBe('');
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
  });
});
