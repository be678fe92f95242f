import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import {
  appendFile,
  chmod,
  chown,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rename,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getAttribute, listAttributes, setAttribute } from '@napi-rs/xattr';
import { type Change, type DriverContext, silentLogger } from '@stacker/plugin-api';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BtrfsDriver, snapshotId } from './driver.js';
import { btrfsFactory, storage } from './index.js';
import {
  buildIfStale,
  haveTestUser,
  isRoot,
  type LoopBtrfs,
  makeLoopBtrfs,
  pkg,
  repo,
  runFixture,
  TEST_USER,
} from './test-loop-btrfs.js';

const fixture = join(pkg, 'src', 'test-fixture-scenario.mjs');

function ctxFor(rootsDir: string): DriverContext {
  return {
    rootsDir,
    log: silentLogger,
    unpack: async () => {
      throw new Error('not used');
    },
  };
}

/** Changes as `kind path`; a source must be the path in the key's upper dir (or its tree, without a parent). */
async function changes(driver: BtrfsDriver, key: string): Promise<string[]> {
  const out: string[] = [];
  const sv = join(driver.activeDir, snapshotId(key), 'sv');
  const root = existsSync(join(sv, 'upper')) ? join(sv, 'upper') : join(sv, 'fs');
  for await (const c of driver.diff(key) as AsyncIterable<Change>) {
    if (c.kind === 'add' || c.kind === 'modify') {
      out.push(
        c.source === join(root as string, c.path)
          ? `${c.kind} ${c.path}`
          : `${c.kind} ${c.path} BAD SOURCE ${c.source}`,
      );
    } else out.push(`${c.kind} ${c.path}`);
  }
  return out;
}

describe('btrfs driver without a btrfs', () => {
  it('is exported as the `btrfs` storage type', () => {
    expect(storage).toEqual([btrfsFactory]);
    expect(btrfsFactory.type).toBe('btrfs');
    expect(btrfsFactory.description).toMatch(/user_subvol_rm_allowed/);
  });

  it('check refuses a roots dir that is not on btrfs and says how to fix it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'stacker-btrfs-nobtrfs-'));
    try {
      const type = execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
      if (type === 'btrfs') return; // this machine's temp dir is btrfs: nothing to refuse
      const err = await btrfsFactory.check?.(ctxFor(join(dir, 'roots'))).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'btrfs-not-btrfs', userError: true });
      expect((err as Error).message).toContain(`is on ${type}, not btrfs`);
      expect((err as Error).message).toContain('sudo stacker setup --btrfs 10G');
      expect((err as Error).message).toContain('user_subvol_rm_allowed');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe.runIf(isRoot)('btrfs driver on a loop-mounted btrfs', () => {
  let fs: LoopBtrfs;
  let noRm: LoopBtrfs;
  beforeAll(() => {
    buildIfStale(join(repo, 'packages', 'plugin-api'), true);
    buildIfStale(join(repo, 'packages', 'runtime'), true);
    buildIfStale(pkg);
    fs = makeLoopBtrfs();
    noRm = makeLoopBtrfs('loop', '256M');
  }, 120_000);
  afterAll(() => {
    fs?.dispose();
    noRm?.dispose();
  });

  const EXPECTED = {
    checked: true,
    checkLeftNothing: true,
    baseIsSubvolume: true,
    unpackOptions: { whiteouts: 'delete' },
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
    committedReadOnly: 'EROFS',
    buildRootfs: true,
    runcExit: 0,
    runcOutput: ['keep', 'more'],
    // The same entries, in the same order, as the overlay driver gives for the same build
    // (the change set is the upper dir of an overlay on the parent's snapshot).
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
    removeC2: 'btrfs-snapshot-in-use',
    removeC1: 'removed',
    grandStillReads: 'keep\nmore\n',
    grandRemoved: true,
    afterCleanup: { active: [], snapshots: 1, c2: true },
    finalSnapshots: 0,
  };

  it.runIf(haveTestUser())('works unprivileged, inside a user namespace', () => {
    expect(runFixture(fixture, [fs.dirFor(TEST_USER, 'scenario-user')], 'user')).toEqual(EXPECTED);
  });

  it('works as real root', () => {
    expect(runFixture(fixture, [fs.dirFor('root', 'scenario-root')], 'root')).toEqual(EXPECTED);
  });

  it.runIf(haveTestUser())('check says what to do when subvolumes cannot be deleted unprivileged', () => {
    const roots = noRm.dirFor(TEST_USER, 'roots');
    const script = `import { checkBtrfs } from ${JSON.stringify(join(pkg, 'dist', 'index.js'))};
      import { silentLogger } from '@stacker/plugin-api';
      try { await checkBtrfs({ rootsDir: process.argv[1], log: silentLogger }); console.log(JSON.stringify({ ok: true })); }
      catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
    const out = JSON.parse(
      execFileSync(
        'runuser',
        [
          '-u',
          TEST_USER,
          '--',
          'unshare',
          '--user',
          '--map-auto',
          '--map-root-user',
          '--mount',
          '--fork',
          process.execPath,
          '--input-type=module',
          '-e',
          script,
          roots,
        ],
        { cwd: pkg, encoding: 'utf8' },
      ),
    );
    expect(out.code).toBe('btrfs-subvolumes-unusable');
    expect(out.message).toContain('sudo stacker setup --btrfs 10G');
    expect(out.message).toContain('user_subvol_rm_allowed');
    // and what it tried is gone again (root can see it: nothing but the btrfs dir)
    expect(execFileSync('find', [roots, '-mindepth', '2'], { encoding: 'utf8' })).toMatch(
      /^(.*\.check-[^\n]*\n)*$/,
    );
  });

  it('tracks a build in an overlay upper dir and commits it by rename into a flat snapshot', async () => {
    const driver = await BtrfsDriver.open(ctxFor(fs.dirFor('root', 'direct')));
    const b = await driver.prepare('b', undefined);
    await mkdir(join(b, 'dir2file/sub'), { recursive: true });
    await writeFile(join(b, 'file2dir'), 'f');
    await mkdir(join(b, 'mv-me/inner'), { recursive: true });
    await writeFile(join(b, 'mv-me/inner/x'), 'x');
    await writeFile(join(b, 'h1'), 'one');
    await link(join(b, 'h1'), join(b, 'h2'));
    await mkdir(join(b, 'big/deeper/still'), { recursive: true });
    await writeFile(join(b, 'big/deeper/still/file'), 'same');
    await mkdir(join(b, 'meta/keep'), { recursive: true });
    await setAttribute(join(b, 'meta'), 'user.note', 'old');
    await symlink('h1', join(b, 'ln'));
    await driver.commit('base', 'b');

    const k = await driver.prepare('k', 'base');
    expect(await driver.isMounted('k')).toBe(true);
    const options = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .find((l) => l.split(' ')[4] === k)
      ?.split(' ')
      .pop();
    expect(options?.split(',')).toContain('userxattr');
    expect(options).toMatch(/(^|,)(fsync=)?volatile(,|$)/); // no syncfs at unmount
    expect(await changes(driver, 'k')).toEqual([]);
    await readFile(join(k, 'big/deeper/still/file')); // reading changes nothing
    await rm(join(k, 'dir2file'), { recursive: true });
    await writeFile(join(k, 'dir2file'), 'now a file');
    await rm(join(k, 'file2dir'));
    await mkdir(join(k, 'file2dir'));
    // rootless overlay has no redirect_dir: renaming a lower directory is EXDEV (as on the
    // overlay driver), and `mv` copies instead
    await expect(rename(join(k, 'mv-me'), join(k, 'moved'))).rejects.toMatchObject({ code: 'EXDEV' });
    execFileSync('mv', [join(k, 'mv-me'), join(k, 'moved')]);
    await appendFile(join(k, 'h2'), ' more');
    await writeFile(join(k, 'new1'), 'linked');
    await link(join(k, 'new1'), join(k, 'new2'));
    await chmod(join(k, 'meta'), 0o750);
    await chown(join(k, 'meta'), 1000, 1000);
    await setAttribute(join(k, 'meta'), 'user.note', 'new');
    await writeFile(join(k, 'meta/added'), 'a');
    // commit renames `added` into the tree's meta/: that must not move the time set here
    await utimes(join(k, 'meta'), 1_000_000_000, 1_000_000_000);
    await rm(join(k, 'ln'));
    await symlink('h2', join(k, 'ln'));
    expect(await changes(driver, 'k')).toEqual([
      'add dir2file',
      'add file2dir',
      'opaque file2dir',
      'add h2',
      'add ln',
      'add meta',
      'add meta/added',
      'add moved',
      'add moved/inner',
      'add moved/inner/x',
      'delete mv-me',
      'add new1',
      'add new2',
    ]);
    const merged = await treeOf(k);
    const upper = join(driver.activeDir, snapshotId('k'), 'sv', 'upper');
    const h2Ino = (await lstat(join(upper, 'h2'))).ino;
    await driver.commit('top', 'k');

    // The committed tree is what the overlay showed, without overlayfs's own xattrs, and
    // the upper's files were moved, not copied.
    const tree = join(driver.snapshotsDir, snapshotId('top'), 'sv', 'fs');
    expect(await treeOf(tree)).toEqual(merged);
    expect(await readdir(join(driver.snapshotsDir, snapshotId('top'), 'sv'))).toEqual(['fs']);
    expect((await lstat(join(tree, 'h2'))).ino).toBe(h2Ino);
    expect((await lstat(join(tree, 'meta'))).mtimeMs).toBe(1e12);
    expect((await lstat(join(tree, 'new1'))).ino).toBe((await lstat(join(tree, 'new2'))).ino);
    expect(await readFile(join(tree, 'h1'), 'utf8')).toBe('one');
    // and a child sees that tree through its own overlay, changing nothing
    const v = await driver.prepare('v', 'top');
    expect(await treeOf(v)).toEqual(merged);
    expect(await changes(driver, 'v')).toEqual([]);
    await driver.remove('v');

    await driver.remove('top');
    await driver.remove('base');
    expect(await readdir(driver.snapshotsDir)).toEqual([]);
    expect(existsSync(join(driver.activeDir))).toBe(true);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).toContain(fs.mnt);
  });
});

/** Every path below `dir` with what an image would keep of it (content, link target,
 * type, owner, mode, xattrs, directory mtimes in whole seconds as a tar keeps them (the
 * driver sets them through utimes, which takes a double: not to the nanosecond), hard-link groups of two
 * or more names: overlayfs shows a lower file's own link count even when its other name
 * was copied up, so a count alone says nothing). */
async function treeOf(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const names = new Map<bigint, string[]>();
  async function walk(d: string, rel: string): Promise<void> {
    for (const n of (await readdir(d)).sort()) {
      const p = join(d, n);
      const r = rel ? `${rel}/${n}` : n;
      const st = await lstat(p, { bigint: true });
      const xattrs = st.isSymbolicLink()
        ? []
        : await Promise.all(
            (await listAttributes(p))
              .sort()
              .map(async (x) => `${x}=${(await getAttribute(p, x))?.toString()}`),
          );
      let what = `${st.mode.toString(8)} ${st.uid}:${st.gid} ${xattrs.join(',')}`;
      if (st.isSymbolicLink()) what += ` -> ${await readlink(p)}`;
      else if (st.isFile()) {
        what += ` ${(await readFile(p)).toString('base64')}`;
        names.set(st.ino, [...(names.get(st.ino) ?? []), r]);
      } else if (st.isDirectory()) what += ` mtime:${st.mtimeNs / 1_000_000_000n}`;
      out[r] = what;
      if (st.isDirectory()) await walk(p, r);
    }
  }
  await walk(dir, '');
  for (const group of names.values()) {
    if (group.length > 1) for (const r of group) out[r] += ` linked:${group.join('+')}`;
  }
  return out;
}
