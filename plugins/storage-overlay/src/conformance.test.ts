import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ConformanceResult } from '@stacker/plugin-api/conformance';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

// The overlay driver mounts, so the kit runs in a child process inside namespaces (never
// in the host's mount namespace): as the test user in a user namespace, and as real root
// in a private mount namespace. The child uses the kit's own small runner.
const here = dirname(fileURLToPath(import.meta.url));
const pkg = dirname(here);
const fixture = join(here, 'test-fixture-conformance.mjs');
const isRoot = process.geteuid?.() === 0;
const TEST_USER = 'stacker-test';
const haveTestUser = readFileSync('/etc/passwd', 'utf8')
  .split('\n')
  .some((l) => l.startsWith(`${TEST_USER}:`));
const USERNS = ['--user', '--map-auto', '--map-root-user', '--mount', '--fork'];

function buildIfMissing(dir: string): void {
  if (!existsSync(join(dir, 'dist', 'index.js'))) {
    execFileSync('npx', ['tsc', '-p', join(dir, 'tsconfig.build.json')], { cwd: dir, stdio: 'inherit' });
  }
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'stacker-overlay-conformance-'));
  await chmod(tmp, 0o777);
  buildIfMissing(join(pkg, '..', '..', 'packages', 'plugin-api'));
  buildIfMissing(pkg);
}, 120_000);
afterAll(async () => {
  if (!tmp) return;
  if (!isRoot) spawnSync('unshare', [...USERNS, 'rm', '-rf', tmp]);
  await rm(tmp, { recursive: true, force: true });
});

async function run(as: 'test-user' | 'self-userns' | 'root'): Promise<ConformanceResult[]> {
  const dir = join(tmp, as);
  await mkdir(dir, { mode: 0o777 });
  await chmod(dir, 0o777);
  const cmd = [
    'unshare',
    ...(as === 'root' ? ['--mount', '--fork'] : USERNS),
    process.execPath,
    fixture,
    dir,
  ];
  const argv = as === 'test-user' ? ['runuser', '-u', TEST_USER, '--', ...cmd] : cmd;
  const out = execFileSync(argv[0], argv.slice(1), {
    cwd: '/tmp',
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out) as ConformanceResult[];
}

describe('overlay storage conformance', () => {
  it.runIf(isRoot && haveTestUser)(
    'passes the kit unprivileged, inside a user namespace',
    async () => {
      const results = await run('test-user');
      expect(results.length).toBeGreaterThanOrEqual(12);
      expect(results.filter((r) => !r.ok)).toEqual([]);
    },
    180_000,
  );

  it.runIf(!isRoot)(
    'passes the kit as the current user, inside a user namespace',
    async () => {
      const results = await run('self-userns');
      expect(results.filter((r) => !r.ok)).toEqual([]);
    },
    180_000,
  );

  it.runIf(isRoot)(
    'passes the kit as real root, in a private mount namespace',
    async () => {
      const results = await run('root');
      expect(results.length).toBeGreaterThanOrEqual(12);
      expect(results.filter((r) => !r.ok)).toEqual([]);
    },
    180_000,
  );
});
