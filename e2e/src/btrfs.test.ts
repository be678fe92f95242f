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

  it('a chain of built stanzas that delete, replace, relink and chown gives the same images as on overlay', () => {
    // Each committed btrfs snapshot is its parent plus the overlay upper applied by rename:
    // the last stanza writes a listing of the tree it sees (types, modes, owners, link
    // targets, file contents; not directory sizes, which differ between filesystems), so
    // any difference in what a child sees changes its digest.
    const chain = `base:
  from: {type: tar, url: ./centos.tar.gz}
c1:
  from: {type: built, tag: base}
  run: |
    mkdir -p /t/keep /t/gone/deep /t/opq/old /t/f2d
    echo a > /t/keep/a; echo b > /t/gone/deep/b; echo o > /t/opq/old/o; echo d > /t/d2f
    echo h > /t/h1; ln /t/h1 /t/h2; echo x > /t/mod; chmod 600 /t/mod
c2:
  from: {type: built, tag: c1}
  run: |
    rm -rf /t/gone /t/opq /t/f2d /t/d2f
    mkdir -p /t/opq/new /t/d2f; echo n > /t/opq/new/n; echo f > /t/f2d
    echo more >> /t/h2; chown 1000:1000 /t/mod; chmod 750 /t/keep
    ln -s keep/a /t/sym; rm -f /etc/hostname
c3:
  from: {type: built, tag: c2}
  run: |
    cd /
    find t etc bin -xdev | sort | while read p; do stat -c '%n %F %a %u %g %N' "$p"; done > /listing
    find t -type f | sort | xargs md5sum >> /listing
`;
    for (const d of [onBtrfs, onOverlay]) {
      tool('runuser', ['-u', TEST_USER, '--', 'tee', join(d, 'chain.yaml')], { input: chain });
    }
    ok(
      stacker(['--storage-type', 'btrfs', '--roots-dir', roots, 'build', '-f', 'chain.yaml'], {
        cwd: onBtrfs,
        env: EPOCH,
      }),
      'chain on btrfs',
    );
    ok(stacker(['build', '-f', 'chain.yaml'], { cwd: onOverlay, env: EPOCH }), 'chain on overlay');
    ok(stacker(['grab', 'c3:/listing'], { cwd: onOverlay }), 'grab on overlay');
    ok(
      stacker(['--storage-type', 'btrfs', '--roots-dir', roots, 'grab', 'c3:/listing'], { cwd: onBtrfs }),
      'grab',
    );
    const listing = readFileSync(join(onBtrfs, 'listing'), 'utf8');
    expect(listing).toBe(readFileSync(join(onOverlay, 'listing'), 'utf8'));
    const a = tags(join(onBtrfs, 'oci'));
    const o = tags(join(onOverlay, 'oci'));
    for (const t of ['c1', 'c2', 'c3']) expect([t, a[t]]).toEqual([t, o[t]]);
    // and the listing says what the chain did
    expect(listing).toContain('t/opq/new/n regular file 644 0 0 t/opq/new/n\n');
    expect(listing).toContain('t/mod regular file 600 1000 1000 t/mod\n');
    expect(listing).toContain("t/sym symbolic link 777 0 0 't/sym' -> 'keep/a'");
    expect(listing).toContain('t/d2f directory 755');
    expect(listing).toContain('t/f2d regular file 644');
    expect(listing).toMatch(/[0-9a-f]{32} {2}t\/h2\n/);
    expect(listing).not.toMatch(/t\/gone|t\/opq\/old|etc\/hostname/);
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

  it('clean deletes every subvolume (read-only snapshots too), the layout and the stacker dir', () => {
    const subvolumes = () =>
      tool('btrfs', ['subvolume', 'list', roots])
        .split('\n')
        .filter((l) => l.trim());
    expect(subvolumes().length).toBeGreaterThan(3); // base, boot, web, the chain...
    const r = ok(
      stacker(['--storage-type', 'btrfs', '--roots-dir', roots, 'clean'], { cwd: onBtrfs }),
      'clean',
    );
    expect(r.code).toBe(0);
    expect(subvolumes()).toEqual([]);
    expect(existsSync(join(onBtrfs, 'oci'))).toBe(false);
    expect(existsSync(join(onBtrfs, '.stacker', 'cache.json'))).toBe(false);
    // the mount `stacker setup` made stays, empty, ready for the next build
    expect(tool('findmnt', ['-n', '-o', 'FSTYPE', roots]).trim()).toBe('btrfs');
    ok(
      stacker(['--storage-type', 'btrfs', '--roots-dir', roots, 'build'], { cwd: onBtrfs, env: EPOCH }),
      'build after clean',
    );
    const seedTags = (layout: string) =>
      Object.fromEntries(Object.entries(tags(layout)).filter(([t]) => ['boot', 'centos', 'web'].includes(t)));
    expect(tags(join(onBtrfs, 'oci'))).toEqual(seedTags(join(onOverlay, 'oci')));
  });
});
