import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setAttribute } from '@napi-rs/xattr';
import { type Change, type DriverContext, silentLogger } from '@stacker/plugin-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_CHAIN, OverlayDriver, snapshotId } from './driver.js';
import { overlayFactory, storage } from './index.js';
import { unescapeMountinfo } from './mounts.js';

const here = dirname(fileURLToPath(import.meta.url));
const pkg = dirname(here);
const runtimePkg = join(pkg, '..', '..', 'packages', 'runtime');
const fixture = join(here, 'test-fixture-scenario.mjs');
const isRoot = process.geteuid?.() === 0;
const TEST_USER = 'stacker-test';
const haveTestUser = readFileSync('/etc/passwd', 'utf8')
  .split('\n')
  .some((l) => l.startsWith(`${TEST_USER}:`));
const USERNS = ['--user', '--map-auto', '--map-root-user', '--mount', '--fork'];

/** Compile `dir` unless its dist is newer than every source file (nx builds before tests). */
function buildIfStale(dir: string): void {
  const out = join(dir, 'dist', 'index.js');
  const built = existsSync(out) ? statSync(out).mtimeMs : 0;
  const src = join(dir, 'src');
  const stale = readdirSync(src).some(
    (f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && statSync(join(src, f)).mtimeMs > built,
  );
  if (stale)
    execFileSync('npx', ['tsc', '-p', join(dir, 'tsconfig.build.json')], { cwd: dir, stdio: 'inherit' });
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'stacker-overlay-test-'));
  await chmod(tmp, 0o777);
  // The fixture runs compiled code: this package, and @stacker/runtime to run runc.
  buildIfStale(pkg);
  // Built by its own tests when stale; here only when missing, so two test files never
  // rewrite the same dist at once.
  if (!existsSync(join(runtimePkg, 'dist', 'index.js'))) buildIfStale(runtimePkg);
}, 120_000);
afterAll(async () => {
  if (!tmp) return;
  // Overlay leaves root-owned work dirs that only the namespace's root may remove.
  if (!isRoot) spawnSync('unshare', [...USERNS, 'rm', '-rf', tmp]);
  await rm(tmp, { recursive: true, force: true });
});

function ctxFor(rootsDir: string): DriverContext {
  return {
    rootsDir,
    log: silentLogger,
    unpack: async () => {
      throw new Error('not used');
    },
  };
}

async function changes(driver: OverlayDriver, key: string): Promise<string[]> {
  const out: string[] = [];
  for await (const c of driver.diff(key) as AsyncIterable<Change>) {
    out.push(
      c.kind === 'add' || c.kind === 'modify' ? `${c.kind} ${c.path} ${c.source}` : `${c.kind} ${c.path}`,
    );
  }
  return out;
}

describe('overlay driver without mounts', () => {
  it('is exported as the `overlay` storage type', () => {
    expect(storage).toEqual([overlayFactory]);
    expect(overlayFactory.type).toBe('overlay');
  });

  it('keeps ids short and the chain limit within one page of mount options', () => {
    expect(snapshotId('c1')).toMatch(/^[0-9a-f]{16}$/);
    expect(snapshotId('c1')).not.toBe(snapshotId('c2'));
    expect(MAX_CHAIN).toBe(199);
    expect(unescapeMountinfo('/a\\040b\\011c')).toBe('/a b\tc');
  });

  it('reads changes from the upper dir: whiteouts, opaque dirs, byte order, parents first', async () => {
    const driver = await OverlayDriver.open(ctxFor(join(tmp, 'nomount')));
    const rootfs = await driver.prepare('k', undefined);
    const upper = join(driver.activeDir, snapshotId('k'), 'fs');
    expect(rootfs).toBe(upper);
    expect(driver.rootfs('k')).toBe(upper);
    expect(driver.rootfs('other')).toBeUndefined();
    await mkdir(join(upper, 'a', 'b'), { recursive: true });
    await writeFile(join(upper, 'a.b'), '');
    await writeFile(join(upper, 'B'), '');
    await writeFile(join(upper, 'é'), '');
    await mkdir(join(upper, 'opq'));
    await writeFile(join(upper, 'opq', 'x'), '');
    await setAttribute(join(upper, 'opq'), 'user.overlay.opaque', 'y');
    await mkdir(join(upper, 'notopq'));
    await setAttribute(join(upper, 'notopq'), 'user.overlay.opaque', 'x');
    await writeFile(join(upper, 'notopq', 'gone'), '');
    await setAttribute(join(upper, 'notopq', 'gone'), 'user.overlay.whiteout', '');
    if (isRoot) execFileSync('mknod', [join(upper, 'wh'), 'c', '0', '0']);
    expect(await changes(driver, 'k')).toEqual([
      `add B ${upper}/B`,
      `add a ${upper}/a`,
      `add a/b ${upper}/a/b`,
      `add a.b ${upper}/a.b`,
      `add notopq ${upper}/notopq`,
      'delete notopq/gone',
      `add opq ${upper}/opq`,
      'opaque opq',
      `add opq/x ${upper}/opq/x`,
      ...(isRoot ? ['delete wh'] : []),
      `add é ${upper}/é`,
    ]);
    await driver.remove('k');
    expect(existsSync(join(driver.activeDir, snapshotId('k')))).toBe(false);
  });

  it('refuses redirect and metacopy xattrs', async () => {
    const driver = await OverlayDriver.open(ctxFor(join(tmp, 'redirect')));
    await driver.prepare('k', undefined);
    const upper = driver.rootfs('k') as string;
    await mkdir(join(upper, 'moved'));
    await setAttribute(join(upper, 'moved'), 'user.overlay.redirect', '/orig');
    await expect(changes(driver, 'k')).rejects.toMatchObject({ code: 'overlay-unsupported-xattr' });
  });

  it('commits, refuses to prepare twice and removes read-only trees', async () => {
    const driver = await OverlayDriver.open(ctxFor(join(tmp, 'commit')));
    const upper = await driver.prepare('k', undefined);
    await mkdir(join(upper, 'ro', 'in'), { recursive: true });
    await writeFile(join(upper, 'ro', 'in', 'f'), 'x');
    await chmod(join(upper, 'ro', 'in'), 0o500);
    await chmod(join(upper, 'ro'), 0o500);
    await expect(driver.prepare('k', undefined)).rejects.toThrow(/already exists/);
    await expect(driver.prepare('k2', 'missing')).rejects.toThrow(/parent snapshot missing does not exist/);
    expect(existsSync(join(driver.activeDir, snapshotId('k2')))).toBe(false);
    await driver.commit('n', 'k');
    expect(await driver.exists('n')).toBe(true);
    expect(await driver.exists('k')).toBe(false);
    expect(driver.rootfs('k')).toBeUndefined();
    expect(JSON.parse(readFileSync(join(driver.snapshotsDir, snapshotId('n'), 'meta.json'), 'utf8'))).toEqual(
      { name: 'n' },
    );
    expect(readFileSync(join(driver.snapshotsDir, snapshotId('n'), 'fs', 'ro', 'in', 'f'), 'utf8')).toBe('x');
    await driver.remove('n');
    expect(await driver.exists('n')).toBe(false);
    expect(existsSync(join(driver.snapshotsDir, snapshotId('n')))).toBe(false);
  });
});

interface Scenario {
  [k: string]: unknown;
}

const EXPECTED: Scenario = {
  checked: true,
  baseRootfsIsUpper: true,
  unpackOptions: { whiteouts: 'overlay' },
  baseDiff: [
    'add a',
    'add a/gone',
    'add a/keep',
    'add bin',
    'add bin/busybox',
    'add bin/sh',
    'add d',
    'add d/old1',
    'add d/sub',
    'add d/sub/old2',
    'add dev',
    'add etc',
    'add etc/passwd',
    'add etc/resolv.conf',
    'add proc',
    'add sys',
  ],
  existsC1: true,
  existsC2: false,
  extractGone: true,
  buildRootfs: true,
  buildMounted: true,
  buildMountOptions: ['userxattr', 'volatile'],
  runcExit: 0,
  runcOutput: ['keep', 'more'],
  buildDiff: [
    'add a',
    'delete a/gone',
    'add a/keep',
    'add d',
    'opaque d',
    'add d/new',
    'add from-runc',
    'add new',
    'add new/file.txt',
  ],
  buildActiveAfterCommit: false,
  existsC2After: true,
  againGone: true,
  grand: {
    keep: 'keep\nmore\n',
    a: ['keep'],
    d: ['new'],
    new: 'new\n',
    fromRunc: 'ran\n',
    passwd: 'root:x:0:0::/:/bin/sh\n',
  },
  grandDiff: [],
  removeC1: 'overlay-snapshot-in-use',
  grandRemoved: true,
  afterCleanup: { mounts: 0, active: [], c2: true },
  maxChain: 199,
  deepFiles: 199,
  deeper: 'overlay-chain-too-long',
  deeperLeftNothing: true,
  finalSnapshots: 200,
};

function scenario(asTestUser: boolean): Scenario {
  const dir = join(tmp, `scenario-${asTestUser ? 'user' : 'root'}`);
  execFileSync('mkdir', ['-m', '777', dir]);
  const unshare = isRoot && !asTestUser ? ['--mount', '--fork'] : USERNS;
  const cmd = ['unshare', ...unshare, process.execPath, fixture, dir];
  const argv = asTestUser ? ['runuser', '-u', TEST_USER, '--', ...cmd] : cmd;
  const out = execFileSync(argv[0], argv.slice(1), {
    cwd: '/tmp',
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out) as Scenario;
}

describe('overlay driver through a whole build', () => {
  it.runIf(isRoot && haveTestUser)('works unprivileged, inside a user namespace', () => {
    expect(scenario(true)).toEqual(EXPECTED);
  });

  it.runIf(!isRoot)('works as the current user, inside a user namespace', () => {
    expect(scenario(false)).toEqual(EXPECTED);
  });

  it.runIf(isRoot)('works as real root, in a private mount namespace', () => {
    expect(scenario(false)).toEqual(EXPECTED);
  });
});
