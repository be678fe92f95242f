/* biome-ignore-all lint/suspicious/noTemplateCurlyInString: stacker's ${{VAR}} placeholders are the data under test */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { asUser, convertDockerfile, shQuote } from './convert.js';
import { parseDockerfile, parseKeyValues } from './dockerfile.js';

function convert(text: string, contextDir?: string) {
  const r = convertDockerfile(text, { file: 'Dockerfile', contextDir });
  return { ...r, doc: parse(r.stackerYaml) as Record<string, any> };
}

function errorOf(text: string): string {
  try {
    convertDockerfile(text, { file: 'Dockerfile' });
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected an error');
}

describe('parseDockerfile', () => {
  it('joins continuation lines, skips comments inside them, keeps the first line number', () => {
    const ins = parseDockerfile('FROM a\n\n# c\nRUN echo 1 \\\n  # inner comment\n  && echo 2\nCMD x\n');
    expect(ins.map((i) => [i.keyword, i.line])).toEqual([
      ['FROM', 1],
      ['RUN', 4],
      ['CMD', 7],
    ]);
    expect(ins[1].rest).toBe('echo 1   && echo 2');
  });

  it('honours the escape directive and reads flags and the JSON form', () => {
    const ins = parseDockerfile(
      '# escape=`\nFROM a\nCOPY --from=b --chown=1:2 x `\n  /y\nCMD ["a", "b c"]\n',
    );
    expect(ins[1].flags).toEqual({ from: 'b', chown: '1:2' });
    expect(ins[1].rest).toBe('x   /y');
    expect(ins[2].json).toEqual(['a', 'b c']);
  });

  it('splits ENV pairs and the legacy form', () => {
    expect(parseKeyValues('A=1 B="two words" C=x\\ y', true)).toEqual([
      ['A', '1'],
      ['B', 'two words'],
      ['C', 'x y'],
    ]);
    expect(parseKeyValues('KEY some value', true)).toEqual([['KEY', 'some value']]);
  });

  it('refuses heredocs with the line', () => {
    expect(() => parseDockerfile('FROM a\nRUN <<EOF\necho\nEOF\n')).toThrow(
      /Dockerfile:2: RUN with a heredoc/,
    );
  });
});

describe('convertDockerfile', () => {
  it('makes a stanza named ${{IMAGE}} with the base as substitutions', () => {
    const r = convert('FROM alpine:3.19\nRUN apk add curl\n');
    expect(Object.keys(r.doc)).toEqual(['${{IMAGE}}']);
    expect(r.doc['${{IMAGE}}'].from).toEqual({ type: '${{BASE_TYPE}}', url: '${{BASE_URL}}' });
    expect(r.doc['${{IMAGE}}'].run).toEqual(["sh -e -c 'apk add curl'"]);
    expect(r.substitutions).toEqual({ IMAGE: 'app', BASE_TYPE: 'docker', BASE_URL: 'docker://alpine:3.19' });
  });

  it('stages: earlier ones build_only, FROM stage is built, COPY --from is a stacker:// import', () => {
    const r = convert(
      'FROM golang AS build\nRUN go build -o /app\nFROM build AS test\nRUN true\nFROM scratch\nCOPY --from=build /app /usr/bin/app\n',
    );
    expect(Object.keys(r.doc)).toEqual(['build', 'test', '${{IMAGE}}']);
    expect(r.doc.build.build_only).toBe(true);
    expect(r.doc.build.from).toEqual({ type: '${{BUILD_BASE_TYPE}}', url: '${{BUILD_BASE_URL}}' });
    expect(r.doc.test.from).toEqual({ type: 'built', tag: 'build' });
    expect(r.doc['${{IMAGE}}'].from).toEqual({ type: 'scratch' });
    expect(r.doc['${{IMAGE}}'].build_only).toBeUndefined();
    expect(r.doc['${{IMAGE}}'].imports).toEqual([{ path: 'stacker://build/app', dest: '/usr/bin/app' }]);
  });

  it('config instructions go to the image config', () => {
    const r = convert(
      [
        'FROM a',
        'LABEL x=1 "y z"=2',
        'MAINTAINER me@example.com',
        'ENV A=1 PATH=/opt:$PATH',
        'ENV B ${A}-two',
        'WORKDIR /srv',
        'WORKDIR sub',
        'USER 1000:1000',
        'VOLUME /data /cache',
        'ENTRYPOINT ["/bin/app"]',
        'CMD run --fast',
      ].join('\n'),
    );
    const s = r.doc['${{IMAGE}}'];
    expect(s.labels).toEqual({ x: '1', 'y z': '2' });
    expect(s.annotations).toEqual({ 'org.opencontainers.image.authors': 'me@example.com' });
    expect(s.environment).toEqual({
      A: '1',
      PATH: '/opt:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      B: '1-two',
    });
    expect(s.working_dir).toBe('/srv/sub');
    expect(s.run).toEqual(['mkdir -p /srv', 'mkdir -p /srv/sub']);
    expect(s.runtime_user).toBe('1000:1000');
    expect(s.volumes).toEqual(['/data', '/cache']);
    expect(s.entrypoint).toEqual(['/bin/app']);
    expect(s.cmd).toEqual(['/bin/sh', '-c', 'run --fast']);
  });

  it('RUN after USER: su with a shell for names, ids set by setpriv or chroot --userspec otherwise', () => {
    expect(asUser('app', 'id')).toBe('su -s /bin/sh -p app -c id');
    const line = asUser('4242', 'echo $(id -u) $(id -g)');
    expect(line).toContain(
      'setpriv --reuid=4242 --regid="$(id -g 4242 2>/dev/null || echo 0)" --clear-groups',
    );
    expect(line).toContain('chroot --userspec=4242:"$(id -g 4242 2>/dev/null || echo 0)" /');
    expect(asUser('1000:50', 'id')).toContain('--reuid=1000 --regid=50 ');
    expect(asUser('app:staff', 'id')).toContain(
      `--reuid="$(id -u app)" --regid="$(sed -n 's/^staff:[^:]*:\\([0-9]*\\):.*/\\1/p' /etc/group)"`,
    );
  });

  it.runIf(process.geteuid?.() === 0)(
    'the RUN line for a numeric USER runs as it, with setpriv and without',
    () => {
      const line = asUser('4242', 'echo $(id -u) $(id -g)');
      expect(execFileSync('sh', ['-c', line], { encoding: 'utf8' })).toBe('4242 0\n');
      // a PATH without setpriv: coreutils chroot sets the ids
      const bin = mkdtempSync(join(tmpdir(), 'asuser-'));
      chmodSync(bin, 0o755);
      try {
        for (const t of ['sh', 'id', 'chroot', 'echo'])
          symlinkSync(
            execFileSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).trim(),
            join(bin, t),
          );
        const out = execFileSync('/bin/sh', ['-c', line], { encoding: 'utf8', env: { PATH: bin } });
        expect(out).toBe('4242 0\n');
      } finally {
        rmSync(bin, { recursive: true, force: true });
      }
    },
  );

  it('RUN after WORKDIR and USER runs there and as that user; ARGs become substitutions', () => {
    const r = convert('ARG V=1.2\nARG NODEF\nFROM a\nWORKDIR /w\nUSER app\nRUN echo $V ${NODEF} $HOME\n');
    expect(r.doc['${{IMAGE}}'].run[1]).toBe(
      "su -s /bin/sh -p app -c 'cd /w && echo ${{V}} ${{NODEF}} $HOME'",
    );
    expect(r.substitutions.V).toBe('1.2');
    expect(r.substitutions.NODEF).toBe('');
  });

  it('COPY: directories land at dest, files keep a trailing-slash dest, chown/chmod kept', () => {
    const ctx = mkdtempSync(join(tmpdir(), 'convert-'));
    mkdirSync(join(ctx, 'dir'));
    writeFileSync(join(ctx, 'f.txt'), 'x');
    const r = convert(
      'FROM a\nWORKDIR /app\nCOPY dir/ ./dir2/\nCOPY --chown=1:2 --chmod=640 f.txt conf/\nADD https://example.com/x.bin /opt/\n',
      ctx,
    );
    expect(r.doc['${{IMAGE}}'].imports).toEqual([
      { path: './dir', dest: '/app/dir2' },
      { path: './f.txt', dest: '/app/conf/', uid: 1, gid: 2, mode: 0o640 },
      { path: 'https://example.com/x.bin', dest: '/opt/' },
    ]);
  });

  it('ADD of a local archive imports it and unpacks it in a run step', () => {
    const r = convert('FROM a\nADD rootfs.tar.gz /opt/x\n');
    expect(r.doc['${{IMAGE}}'].imports).toEqual([{ path: './rootfs.tar.gz' }]);
    expect(r.doc['${{IMAGE}}'].run).toEqual([
      'mkdir -p /opt/x/ && tar -xf /stacker/imports/rootfs.tar.gz -C /opt/x/',
    ]);
  });

  it('EXPOSE is a warning with its line', () => {
    expect(convert('FROM a\nEXPOSE 80\n').warnings).toEqual([
      'Dockerfile:2: EXPOSE 80: ignored, stacker image configs have no exposed ports',
    ]);
  });

  it.each([
    [
      'FROM a\nHEALTHCHECK CMD true\n',
      'Dockerfile:2: HEALTHCHECK (HEALTHCHECK CMD true): no stacker equivalent',
    ],
    ['FROM a\nONBUILD RUN x\n', 'Dockerfile:2: ONBUILD (ONBUILD RUN x): no stacker equivalent'],
    ['FROM a\nSHELL ["/bin/bash", "-c"]\n', 'Dockerfile:2: SHELL'],
    ['FROM a\nSTOPSIGNAL SIGTERM\n', 'Dockerfile:2: STOPSIGNAL'],
    [
      'FROM a\n\nRUN --mount=type=cache,target=/x true\n',
      'Dockerfile:3: RUN (RUN --mount=type=cache,target=/x true): RUN --mount has no stacker equivalent',
    ],
    ['FROM a\nCOPY *.txt /x/\n', 'Dockerfile:2: COPY (COPY *.txt /x/): wildcard source'],
    [
      'FROM a\nCOPY --chown=app f /x\n',
      'Dockerfile:2: COPY (COPY --chown=app f /x): --chown=app: stacker imports take numeric ids only',
    ],
    ['FROM a\nCOPY --from=nope /x /y\n', 'Dockerfile:2: COPY (COPY --from=nope /x /y): --from=nope'],
    ['RUN x\n', 'Dockerfile:1: RUN (RUN x): comes before the first FROM'],
    ['FROM a\nFOO bar\n', 'Dockerfile:2: FOO (FOO bar): unknown instruction FOO'],
    ['# nothing\n', 'Dockerfile:1: no FROM'],
  ])('refuses %j with the line and instruction', (text, message) => {
    expect(errorOf(text)).toContain(message);
  });

  it('quotes for sh only when needed', () => {
    expect(shQuote('/usr/bin')).toBe('/usr/bin');
    expect(shQuote("it's")).toBe("'it'\\''s'");
  });
});
