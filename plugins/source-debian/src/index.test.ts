import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isUserError } from '@stacker/plugin-api';
import { checkSource, testSourceContext } from '@stacker/plugin-api/source-kit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { debianSource, mirrorFromSources, mmdebstrapArgs, schema } from './index.js';

let dir: string;
const savedEnv = process.env.STACKER_MMDEBSTRAP;

// A stand-in mmdebstrap: records its arguments, writes an empty tar (two zero blocks) to
// stdout, or fails like the real one when asked for a package that does not exist.
const FAKE = `#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
case "$*" in *no-such-package*) echo "I: running apt-get update..." >&2; echo "E: Unable to locate package no-such-package" >&2; exit 1;; esac
echo "I: creating tarball..." >&2
head -c 1024 /dev/zero
`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'source-debian-test-'));
  await writeFile(join(dir, 'mmdebstrap'), FAKE);
  await chmod(join(dir, 'mmdebstrap'), 0o755);
  process.env.STACKER_MMDEBSTRAP = join(dir, 'mmdebstrap');
});
afterAll(async () => {
  if (savedEnv === undefined) delete process.env.STACKER_MMDEBSTRAP;
  else process.env.STACKER_MMDEBSTRAP = savedEnv;
  await rm(dir, { recursive: true, force: true });
});

const calls = async () =>
  (await readFile(join(dir, 'calls'), 'utf8').catch(() => '')).trim().split('\n').filter(Boolean);

describe('debian source', () => {
  it('validates from: with defaults, and rejects typos and bad names', () => {
    expect(schema.parse({ type: 'debian', suite: 'bookworm' })).toEqual({
      type: 'debian',
      suite: 'bookworm',
      variant: 'minbase',
      packages: [],
    });
    const bad = (from: unknown) => schema.safeParse(from).error?.issues[0];
    expect(bad({ type: 'debian', suite: 'bookworm', packges: ['hello'] })).toMatchObject({
      code: 'unrecognized_keys',
      keys: ['packges'],
    });
    expect(bad({ type: 'debian' })?.path).toEqual(['suite']);
    expect(bad({ type: 'debian', suite: 'bookworm', packages: ['Bad Name'] })?.path).toEqual(['packages', 0]);
    expect(bad({ type: 'debian', suite: 'bookworm', variant: 'tiny' })?.message).toMatch(/minbase/);
    expect(bad({ type: 'debian', suite: 'bookworm', mirror: 'ftp://x' })?.path).toEqual(['mirror']);
  });

  it('passes the source kit, and a second resolve uses the cached tarball', async () => {
    const work = join(dir, 'kit');
    const report = await checkSource(debianSource, {
      valid: [
        {
          type: 'debian',
          suite: 'bookworm',
          packages: ['hello', 'curl', 'hello'],
          mirror: 'http://m.example/debian/',
        },
      ],
      invalid: [{ type: 'debian', suite: 'bookworm', packages: 'hello' }],
      workDir: work,
    });
    expect(report.base?.identity).toMatch(/^debian:sha256:[0-9a-f]{64}$/);
    expect(await calls()).toEqual([
      `--mode=unshare --variant=minbase --architectures=${process.arch === 'arm64' ? 'arm64' : 'amd64'} --include=curl,hello bookworm - http://m.example/debian`,
    ]);
    // the identity depends on the inputs only, not on the order of packages
    const ctx = testSourceContext(work);
    const a = await debianSource.identity!(
      schema.parse({ type: 'debian', suite: 'bookworm', packages: ['aa', 'bb'] }),
      ctx,
    );
    const b = await debianSource.identity!(
      schema.parse({ type: 'debian', suite: 'bookworm', packages: ['bb', 'aa'] }),
      ctx,
    );
    const c = await debianSource.identity!(
      schema.parse({ type: 'debian', suite: 'trixie', packages: ['aa', 'bb'] }),
      ctx,
    );
    expect(a).toBe(b);
    expect(a).not.toBe(c);
    await rm(work, { recursive: true, force: true });
  });

  it('says what mmdebstrap said when it fails, and caches nothing', async () => {
    const work = join(dir, 'fail');
    const ctx = testSourceContext(work);
    const from = schema.parse({ type: 'debian', suite: 'bookworm', packages: ['no-such-package'] });
    const e = await debianSource.resolve(from, ctx).catch((x) => x);
    expect(isUserError(e)).toBe(true);
    expect(e.message).toMatch(
      /^test: couldn't make a Debian bookworm \(minbase, no-such-package, \w+\) base: .*mmdebstrap exited with 1: E: Unable to locate package no-such-package; check the suite/,
    );
    const again = await debianSource.resolve(from, ctx).catch((x) => x);
    expect(again.message).toBe(e.message);
  });

  it('says how to install mmdebstrap when it is missing', async () => {
    process.env.STACKER_MMDEBSTRAP = join(dir, 'not-there');
    try {
      const ctx = testSourceContext(join(dir, 'missing'));
      const e = await debianSource
        .resolve(schema.parse({ type: 'debian', suite: 'sid' }), ctx)
        .catch((x) => x);
      expect(e.message).toMatch(/is not installed; install it \(apt-get install mmdebstrap\)/);
    } finally {
      process.env.STACKER_MMDEBSTRAP = join(dir, 'mmdebstrap');
    }
  });

  it("finds the host's mirror in deb822 and one-line sources", () => {
    const deb822 = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
`;
    expect(mirrorFromSources(deb822)).toBe('http://deb.debian.org/debian');
    expect(
      mirrorFromSources(
        `Types: deb\nURIs: http://security.debian.org/x\nSuites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example/debian\nSuites: trixie\n`,
      ),
    ).toBe('http://mirror.example/debian');
    expect(
      mirrorFromSources(
        'deb http://security.debian.org/ bookworm-security main\ndeb [arch=amd64] http://ftp.de.debian.org/debian bookworm main\n',
      ),
    ).toBe('http://ftp.de.debian.org/debian');
    expect(mirrorFromSources('# nothing\n')).toBeUndefined();
  });

  it('builds the mmdebstrap command line', () => {
    expect(
      mmdebstrapArgs({ suite: 'trixie', variant: 'apt', packages: [], mirror: 'http://m', arch: 'arm64' }),
    ).toEqual(['--mode=unshare', '--variant=apt', '--architectures=arm64', 'trixie', '-', 'http://m']);
  });
});
