// Test fixture (plain JS; needs `tsc -p tsconfig.build.json` for this package,
// @stacker/plugin-api and @stacker/runtime): drives the btrfs driver through a whole build
// in DIR (on a btrfs mounted with user_subvol_rm_allowed) and prints one JSON object with
// what it saw. Runs unprivileged in a user namespace, or as real root:
//   unshare --user --map-auto --map-root-user --mount --fork node test-fixture-scenario.mjs DIR
//   node test-fixture-scenario.mjs DIR
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { appendFile, chmod, copyFile, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { silentLogger } from '@stacker/plugin-api';
import { makeBundle, runContainer } from '@stacker/runtime';
import { BtrfsDriver, btrfsFactory, snapshotId } from '../dist/index.js';

const dir = process.argv[2];
const out = {};

// The fake unpack: the "tar" stream carries the path of a directory to copy.
async function unpack(tar, dest, options) {
  let src = '';
  for await (const chunk of tar) src += chunk;
  out.unpackOptions = options;
  execFileSync('cp', ['-a', `${src}/.`, dest]);
}
const ctx = { rootsDir: join(dir, 'roots'), log: silentLogger, unpack };

const layer = join(dir, 'layer');
for (const d of ['bin', 'a', 'd/sub', 'etc', 'proc', 'sys', 'dev'])
  await mkdir(join(layer, d), { recursive: true });
await copyFile('/bin/busybox', join(layer, 'bin/busybox'));
await symlink('busybox', join(layer, 'bin/sh'));
await writeFile(join(layer, 'a/keep'), 'keep\n');
await writeFile(join(layer, 'a/gone'), 'gone\n');
await writeFile(join(layer, 'd/old1'), 'old1\n');
await writeFile(join(layer, 'd/sub/old2'), 'old2\n');
await writeFile(join(layer, 'etc/passwd'), 'root:x:0:0::/:/bin/sh\n');
await writeFile(join(layer, 'etc/resolv.conf'), '');

await btrfsFactory.check(ctx);
out.checked = true;
out.checkLeftNothing =
  readdirSync(join(ctx.rootsDir, 'btrfs')).filter((n) => n.startsWith('.check-')).length === 0;
const driver = await btrfsFactory.create(ctx);

const base = await driver.prepare('extract-c1', undefined);
out.baseIsSubvolume =
  base === join(driver.activeDir, snapshotId('extract-c1'), 'sv', 'fs') &&
  lstatSync(join(driver.activeDir, snapshotId('extract-c1'), 'sv')).ino === 256;
await driver.unpackLayer('extract-c1', Readable.from([layer]));
out.baseDiff = await collect('extract-c1');
await driver.commit('c1', 'extract-c1');
out.existsC1 = await driver.exists('c1');
out.existsC2 = await driver.exists('c2');
out.extractGone =
  driver.rootfs('extract-c1') === undefined && !existsSync(join(driver.activeDir, snapshotId('extract-c1')));
try {
  await writeFile(join(driver.snapshotsDir, snapshotId('c1'), 'sv', 'fs', 'x'), 'x');
  out.committedReadOnly = 'writable';
} catch (e) {
  out.committedReadOnly = e.code;
}

const rootfs = await driver.prepare('build', 'c1');
// with a parent, the rootfs is an overlay whose upper dir is in the snapshot's subvolume
out.buildRootfs =
  rootfs === driver.rootfs('build') &&
  (await driver.isMounted('build')) &&
  lstatSync(join(driver.activeDir, snapshotId('build'), 'sv')).ino === 256;
await appendFile(join(rootfs, 'a/keep'), 'more\n');
await rm(join(rootfs, 'a/gone'));
await mkdir(join(rootfs, 'new'));
await writeFile(join(rootfs, 'new/file.txt'), 'new\n');
await rm(join(rootfs, 'd'), { recursive: true });
await mkdir(join(rootfs, 'd'));
await writeFile(join(rootfs, 'd/new'), 'd-new\n');
// A snapshot is a plain directory: a runc rootfs as it is.
const lines = [];
await makeBundle({
  bundle: join(dir, 'bundle'),
  rootfs,
  args: ['/bin/sh', '-c', 'echo ran > /from-runc; /bin/busybox cat /a/keep'],
});
out.runcExit = await runContainer({
  stateDir: join(dir, 'runc'),
  bundle: join(dir, 'bundle'),
  id: `bt-${process.pid}`,
  stdout: (l) => lines.push(l),
  stderr: (l) => lines.push(`err: ${l}`),
});
out.runcOutput = lines;
out.buildDiff = await collect('build');
await driver.commit('c2', 'build');
out.buildActiveAfterCommit = existsSync(join(driver.activeDir, snapshotId('build')));
out.existsC2After = await driver.exists('c2');
await driver.prepare('again', 'c1');
await driver.commit('c2', 'again');
out.againGone = driver.rootfs('again') === undefined;

const grand = await driver.prepare('grand', 'c2');
out.grand = {
  keep: readFileSync(join(grand, 'a/keep'), 'utf8'),
  a: readdirSync(join(grand, 'a')).sort(),
  d: readdirSync(join(grand, 'd')).sort(),
  new: readFileSync(join(grand, 'new/file.txt'), 'utf8'),
  fromRunc: readFileSync(join(grand, 'from-runc'), 'utf8'),
  passwd: readFileSync(join(grand, 'etc/passwd'), 'utf8'),
};
out.grandDiff = await collect('grand');
// Only an active child pins its parent: c2 is in use, c1 (a committed child's parent) is not.
out.removeC2 = await attempt(() => driver.remove('c2'));
out.removeC1 = await attempt(() => driver.remove('c1'));
out.grandStillReads = readFileSync(join(grand, 'a/keep'), 'utf8');
await driver.remove('grand');
out.grandRemoved = !existsSync(join(driver.activeDir, snapshotId('grand')));
await driver.remove('no-such-thing');

// A build killed halfway: an active snapshot with read-only directories, and a commit
// that never got its meta.json.
const left = await driver.prepare('left', 'c2');
await mkdir(join(left, 'ro/inner'), { recursive: true });
await writeFile(join(left, 'ro/inner/f'), 'x');
await chmod(join(left, 'ro/inner'), 0o555);
await chmod(join(left, 'ro'), 0o555);
await driver.prepare('left-base', undefined);
await mkdir(join(driver.snapshotsDir, 'abc.tmp-1'));
execFileSync(
  'btrfs',
  [
    'subvolume',
    'snapshot',
    '-r',
    join(driver.activeDir, snapshotId('left'), 'sv'),
    join(driver.snapshotsDir, 'abc.tmp-1', 'sv'),
  ],
  { stdio: 'ignore' },
);
const fresh = await BtrfsDriver.open(ctx);
await fresh.cleanup();
out.afterCleanup = {
  active: readdirSync(fresh.activeDir),
  snapshots: readdirSync(fresh.snapshotsDir).length,
  c2: await fresh.exists('c2'),
};
await fresh.remove('c2');
out.finalSnapshots = readdirSync(fresh.snapshotsDir).length;
console.log(JSON.stringify(out));

async function attempt(fn) {
  try {
    await fn();
    return 'removed';
  } catch (e) {
    return e.code ?? e.message;
  }
}

// Changes as `kind path`; an add's source must be the path in the key's subvolume: in its
// tree without a parent, in its overlay upper dir with one.
async function collect(key) {
  const sv = join(driver.activeDir, snapshotId(key), 'sv');
  const fs = existsSync(join(sv, 'upper')) ? join(sv, 'upper') : join(sv, 'fs');
  const list = [];
  for await (const c of driver.diff(key)) {
    if (c.kind === 'add' || c.kind === 'modify') {
      list.push(
        c.source === join(fs, c.path) ? `${c.kind} ${c.path}` : `${c.kind} ${c.path} BAD SOURCE ${c.source}`,
      );
    } else list.push(`${c.kind} ${c.path}`);
  }
  return list;
}
