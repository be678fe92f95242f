// The btrfs storage driver on a real loop-mounted btrfs, made by `stacker setup --btrfs`
// (run as root, like a user would): the seed example built on it and on overlay must give
// the same image digests, byte for byte, and `stacker check` must tell the two dirs apart.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI,
  IS_ROOT,
  REPO,
  type Result,
  removeWorkdir,
  stacker,
  TEST_USER,
  USER_IDS,
  workdir,
} from './harness.js';
import { makeBusybox, tool } from './oci-tools.js';

const EPOCH = { SOURCE_DATE_EPOCH: '1700000000' };
const canRun =
  IS_ROOT && existsSync('/usr/sbin/mkfs.btrfs') && spawnSync('id', ['-u', TEST_USER]).status === 0;

function ok(r: Result, what: string): Result {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.output}`);
  return r;
}

function index(layout: string): {
  manifests: Array<{ digest: string; annotations?: Record<string, string> }>;
} {
  return JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
}

function tags(layout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of index(layout).manifests)
    out[m.annotations?.['org.opencontainers.image.ref.name'] ?? '?'] = m.digest;
  return out;
}

describe.skipIf(!canRun)('btrfs storage on a loop mount made by stacker setup', () => {
  let onBtrfs: string;
  let onOverlay: string;
  let roots: string;
  let setup: Result;

  beforeAll(() => {
    onBtrfs = workdir('stacker-e2e-btrfs-', join(REPO, 'examples/seed'));
    onOverlay = workdir('stacker-e2e-btrfs-overlay-', join(REPO, 'examples/seed'));
    for (const d of [onBtrfs, onOverlay]) makeBusybox(join(d, 'centos.tar.gz'));
    roots = join(onBtrfs, 'btrfs-roots');
    // setup runs as root: it makes <stacker-dir>/btrfs.loop and mounts it on the roots dir
    const r = spawnSync(
      process.execPath,
      [
        CLI,
        '--stacker-dir',
        join(onBtrfs, '.stacker'),
        '--roots-dir',
        roots,
        'setup',
        '--btrfs',
        '1G',
        '--username',
        TEST_USER,
        '--uid',
        String(USER_IDS.uid),
        '--gid',
        String(USER_IDS.gid),
      ],
      { cwd: onBtrfs, encoding: 'utf8' },
    );
    setup = { code: r.status ?? 128, stdout: r.stdout, stderr: r.stderr, output: r.stdout + r.stderr };
    ok(setup, 'stacker setup --btrfs');
  });

  afterAll(() => {
    if (roots && spawnSync('umount', [roots]).status !== 0) spawnSync('umount', ['-l', roots]);
    for (const d of [onBtrfs, onOverlay]) if (d) removeWorkdir(d);
  });

  it('setup made a btrfs loop mount owned by the user, and running it again changes nothing', () => {
    expect(setup.stdout).toContain(`made a btrfs filesystem in ${join(onBtrfs, '.stacker', 'btrfs.loop')}`);
    expect(setup.stdout).toContain(`mounted ${join(onBtrfs, '.stacker', 'btrfs.loop')} on ${roots}`);
    expect(tool('findmnt', ['-n', '-o', 'FSTYPE,OPTIONS', roots])).toMatch(
      /^btrfs\s+.*user_subvol_rm_allowed/,
    );
    expect(tool('stat', ['-c', '%u', roots]).trim()).toBe(String(USER_IDS.uid));
    const again = spawnSync(
      process.execPath,
      [CLI, '--stacker-dir', join(onBtrfs, '.stacker'), '--roots-dir', roots, 'setup', '--btrfs', '1G'],
      { cwd: onBtrfs, encoding: 'utf8', env: { ...process.env, SUDO_USER: TEST_USER } },
    );
    expect(again.stdout.trim()).toBe('nothing to do');
  });

  it('stacker check says ok on the btrfs mount and FAIL with the fix elsewhere', () => {
    const good = stacker(['check', '--storage-type', 'btrfs', '--roots-dir', roots], { cwd: onBtrfs });
    expect(good.stdout).toMatch(new RegExp(`ok\\s+storage btrfs\\s+usable on ${roots}`));
    const bad = stacker(['check', '--storage-type', 'btrfs', '--roots-dir', join(onOverlay, 'roots')], {
      cwd: onOverlay,
    });
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/FAIL\s+storage btrfs\s+the roots dir .* is on \S+, not btrfs/);
    expect(bad.stdout).toContain('sudo stacker setup --btrfs');
  });

  it('builds the seed example with the same digests as on overlay', () => {
    const b = ok(
      stacker(['--storage-type', 'btrfs', '--roots-dir', roots, 'build'], { cwd: onBtrfs, env: EPOCH }),
      'build on btrfs',
    );
    for (const name of ['centos', 'boot', 'web'])
      expect(b.output).toContain(`filesystem ${name} built successfully`);
    // the driver really kept its snapshots on the loop mount
    expect(existsSync(join(roots, 'btrfs', 'snapshots'))).toBe(true);
    ok(stacker(['build'], { cwd: onOverlay, env: EPOCH }), 'build on overlay');

    const a = tags(join(onBtrfs, 'oci'));
    expect(Object.keys(a).sort()).toEqual(['boot', 'centos', 'web']);
    expect(a).toEqual(tags(join(onOverlay, 'oci')));
    expect(readFileSync(join(onBtrfs, 'oci', 'index.json'), 'utf8')).toBe(
      readFileSync(join(onOverlay, 'oci', 'index.json'), 'utf8'),
    );
  });

  it('a rebuild on btrfs is cached and leaves no active subvolumes behind', () => {
    const again = ok(
      stacker(['--storage-type', 'btrfs', '--roots-dir', roots, 'build'], { cwd: onBtrfs, env: EPOCH }),
      'second build on btrfs',
    );
    for (const name of ['centos', 'boot', 'web'])
      expect(again.output).toContain(`found cached layer ${name}`);
    const active = join(roots, 'btrfs', 'active');
    const left = existsSync(active) ? tool('ls', ['-A', active]).trim() : '';
    expect(left).toBe('');
  });
});
