// recursive-build (finding stacker files, prerequisites, cross-file bases) and convert
// (a Dockerfile converted, then built with its base substituted by a local tarball).
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chownTree, removeWorkdir, stacker, workdir, write } from './harness.js';
import { makeBusybox, skopeo, umociLs, unpack } from './oci-tools.js';

let dir: string;

beforeAll(() => {
  dir = workdir('stacker-e2e-cmd-build-');
  makeBusybox(join(dir, 'busybox.tar.gz'));
});

afterAll(() => {
  if (dir) removeWorkdir(dir);
});

describe('recursive-build', () => {
  let top: string;
  beforeAll(() => {
    top = join(dir, 'rec');
    for (const d of ['rec/base', 'rec/apps/web', 'rec/apps/other', 'rec/ignored'])
      mkdirSync(join(dir, d), { recursive: true });
    // found second by name order, but built first: it is web's prerequisite
    write(
      join(top, 'base/stacker.yaml'),
      `rbase:\n  from:\n    type: tar\n    url: ../../busybox.tar.gz\n  run: echo base > /base.txt\n`,
    );
    write(
      join(top, 'apps/web/stacker.yaml'),
      `config:\n  prerequisites:\n    - ../../base/stacker.yaml\nweb:\n  from:\n    type: built\n    tag: rbase\n  run: cat /base.txt > /web.txt\n`,
    );
    write(
      join(top, 'apps/other/image.yaml'),
      `other:\n  from:\n    type: tar\n    url: ../../../busybox.tar.gz\n  run: touch /other\n`,
    );
    write(join(top, 'ignored/notstacker.yml'), 'x: [\n');
    chownTree(dir);
  });

  it('--order-only lists the files found, prerequisites first', () => {
    const r = stacker(['recursive-build', '--order-only'], { cwd: top });
    expect(r.code, r.output).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.slice(-2)).toEqual([
      `0 build ${join(top, 'base/stacker.yaml')}: requires: []`,
      `1 build ${join(top, 'apps/web/stacker.yaml')}: requires: [${join(top, 'base/stacker.yaml')}]`,
    ]);
  });

  it('builds every file found under -d matching -p, in prerequisite order', () => {
    const r = stacker(['recursive-build', '-d', '.', '-p', '(stacker|image)\\.yaml$'], { cwd: top });
    expect(r.code, r.output).toBe(0);
    expect(umociLs(join(top, 'oci'))).toEqual(['other', 'rbase', 'web']);
    expect(r.output.indexOf('filesystem rbase built successfully')).toBeLessThan(
      r.output.indexOf('filesystem web built successfully'),
    );
    const rootfs = unpack(top, join(top, 'oci'), 'web', join(top, 'unpacked-web'));
    expect(readFileSync(join(rootfs, 'web.txt'), 'utf8')).toBe('base\n');
  });

  it('a layer name defined in two files is refused', () => {
    mkdirSync(join(top, 'dup'));
    write(join(top, 'dup/stacker.yaml'), `web:\n  from:\n    type: built\n    tag: rbase\n`);
    chownTree(top);
    const r = stacker(['recursive-build', '--search-dir', top], { cwd: top });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('duplicate layer name "web"');
  });

  it('no matching file is an error', () => {
    const r = stacker(['recursive-build', '-d', 'ignored'], { cwd: top });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no stacker files matching');
  });
});

describe('convert', () => {
  const DOCKERFILE = `# a small image
ARG VERSION=1.0
FROM alpine:3.19 AS build
RUN echo built-$VERSION > /out.txt

FROM debian:12
LABEL org.example.version="\${VERSION}"
ENV GREETING="hello world"
WORKDIR /srv
COPY app /srv/app
COPY --chown=1000:1000 conf.txt ./conf/
COPY --from=build /out.txt /srv/
RUN echo "$GREETING" > greeting.txt
RUN echo 'svc:x:1500:1500::/nonexistent:/sbin/nologin' >> /etc/passwd && echo 'svc:x:1500:' >> /etc/group && \\
    mkdir -m 1777 /srv/own
USER svc
RUN id -u > /srv/own/svc.txt; id -g >> /srv/own/svc.txt
USER root
ADD app/hello.txt /srv/added.txt
VOLUME ["/data"]
EXPOSE 80
ENTRYPOINT ["/bin/cat"]
CMD ["/srv/greeting.txt"]
`;
  let cdir: string;
  beforeAll(() => {
    cdir = join(dir, 'conv');
    mkdirSync(join(cdir, 'app'), { recursive: true });
    write(join(cdir, 'Dockerfile'), DOCKERFILE);
    write(join(cdir, 'app/hello.txt'), 'hello\n');
    write(join(cdir, 'conf.txt'), 'conf\n');
    chownTree(dir);
  });

  it('converts a Dockerfile, and the result builds with the base substituted by a tarball', () => {
    const c = stacker(
      [
        'convert',
        '--docker-file',
        'Dockerfile',
        '--output-file',
        'stacker.yaml',
        '--substitute-file',
        'stacker-subs.yaml',
      ],
      { cwd: cdir },
    );
    expect(c.code, c.output).toBe(0);
    expect(c.output).toContain('Dockerfile:21: EXPOSE 80: ignored');
    const subs = readFileSync(join(cdir, 'stacker-subs.yaml'), 'utf8');
    expect(subs).toContain('BASE_URL: docker://debian:12');
    expect(subs).toContain('BUILD_BASE_URL: docker://alpine:3.19');
    const tarball = ['--substitute', 'BASE_TYPE=tar', '--substitute', 'BASE_URL=../busybox.tar.gz'];
    const b = stacker(
      [
        'build',
        '--substitute-file',
        'stacker-subs.yaml',
        ...tarball,
        '--substitute',
        'BUILD_BASE_TYPE=tar',
        '--substitute',
        'BUILD_BASE_URL=../busybox.tar.gz',
      ],
      { cwd: cdir },
    );
    expect(b.code, b.output).toBe(0);
    expect(umociLs(join(cdir, 'oci'))).toEqual(['app']);
    const config = skopeo(join(cdir, 'oci'), 'app', 'config').config;
    expect(config.Entrypoint).toEqual(['/bin/cat']);
    expect(config.Cmd).toEqual(['/srv/greeting.txt']);
    expect(config.User).toBe('root');
    expect(config.WorkingDir).toBe('/srv');
    expect(config.Labels).toEqual({ 'org.example.version': '1.0' });
    expect(config.Volumes).toEqual({ '/data': {} });
    expect(config.Env).toContain('GREETING=hello world');
    const rootfs = unpack(cdir, join(cdir, 'oci'), 'app', join(cdir, 'unpacked'));
    expect(readFileSync(join(rootfs, 'srv/greeting.txt'), 'utf8')).toBe('hello world\n');
    expect(readFileSync(join(rootfs, 'srv/out.txt'), 'utf8')).toBe('built-1.0\n');
    expect(readFileSync(join(rootfs, 'srv/app/hello.txt'), 'utf8')).toBe('hello\n');
    expect(readFileSync(join(rootfs, 'srv/conf/conf.txt'), 'utf8')).toBe('conf\n');
    expect(readFileSync(join(rootfs, 'srv/added.txt'), 'utf8')).toBe('hello\n');
    // RUN after USER runs as a nologin user (numeric ids need setpriv, which busybox lacks:
    // the convert unit tests run those lines on the host)
    expect(readFileSync(join(rootfs, 'srv/own/svc.txt'), 'utf8')).toBe('1500\n1500\n');
  });

  it('an instruction without an equivalent is an error naming its line', () => {
    write(join(cdir, 'Dockerfile.bad'), 'FROM a\nRUN true\nHEALTHCHECK CMD curl -f http://localhost/\n');
    const r = stacker(['convert', '-i', 'Dockerfile.bad', '-o', 'bad.yaml', '-s', 'bad-subs.yaml'], {
      cwd: cdir,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      'error: Dockerfile.bad:3: HEALTHCHECK (HEALTHCHECK CMD curl -f http://localhost/): no stacker equivalent',
    );
  });
});
