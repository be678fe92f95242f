// Test fixture (plain JS; needs `tsc -p tsconfig.build.json` for this package and
// @stacker/runtime): run inside a user + mount namespace (or as root in a mount
// namespace) with DIR writable; drives the overlay driver through a whole build and
// prints one JSON object with what it saw.
//   unshare --user --map-auto --map-root-user --mount --fork node test-fixture-scenario.mjs DIR
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { appendFile, chmod, copyFile, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { silentLogger } from '@stacker/plugin-api';
import { makeBundle, runContainer } from '@stacker/runtime';
import { MAX_CHAIN, OverlayDriver, overlayFactory, snapshotId } from '../dist/index.js';

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

// A base layer: busybox, a few files, an overlay whiteout it must keep as-is.
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

await overlayFactory.check(ctx);
out.checked = true;
const driver = await overlayFactory.create(ctx);

const base = await driver.prepare('extract-c1', undefined);
out.baseRootfsIsUpper = base === join(driver.activeDir, snapshotId('extract-c1'), 'fs');
await driver.unpackLayer('extract-c1', Readable.from([layer]));
out.baseDiff = await collect('extract-c1');
await driver.commit('c1', 'extract-c1');
out.existsC1 = await driver.exists('c1');
out.existsC2 = await driver.exists('c2');
out.extractGone = driver.rootfs('extract-c1') === undefined;

const rootfs = await driver.prepare('build', 'c1');
out.buildRootfs = rootfs === driver.rootfs('build') && rootfs.endsWith('/rootfs');
out.buildMounted = await driver.isMounted('build');
// the super options of that mount (mountinfo's last field): no syncfs at unmount
out.buildMountOptions = readFileSync('/proc/self/mountinfo', 'utf8')
  .split('\n')
  .find((l) => l.split(' ')[4] === rootfs)
  ?.split(' ')
  .pop()
  .split(',')
  .map((o) => (o === 'fsync=volatile' ? 'volatile' : o)) // how kernels since 6.x show it
  .filter((o) => o === 'userxattr' || o === 'volatile')
  .sort();
await appendFile(join(rootfs, 'a/keep'), 'more\n');
await rm(join(rootfs, 'a/gone'));
await mkdir(join(rootfs, 'new'));
await writeFile(join(rootfs, 'new/file.txt'), 'new\n');
await rm(join(rootfs, 'd'), { recursive: true });
await mkdir(join(rootfs, 'd'));
await writeFile(join(rootfs, 'd/new'), 'd-new\n');
// The mounted snapshot is a runc rootfs.
const lines = [];
await makeBundle({
  bundle: join(dir, 'bundle'),
  rootfs,
  args: ['/bin/sh', '-c', 'echo ran > /from-runc; /bin/busybox cat /a/keep'],
});
out.runcExit = await runContainer({
  stateDir: join(dir, 'runc'),
  bundle: join(dir, 'bundle'),
  id: `ov-${process.pid}`,
  stdout: (l) => lines.push(l),
  stderr: (l) => lines.push(`err: ${l}`),
});
out.runcOutput = lines;
out.buildDiff = await collect('build');
await driver.commit('c2', 'build');
out.buildActiveAfterCommit = existsSync(join(driver.activeDir, snapshotId('build')));
out.existsC2After = await driver.exists('c2');
// Committing a name that exists just drops the active snapshot.
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
try {
  await driver.remove('c1');
  out.removeC1 = 'removed';
} catch (e) {
  out.removeC1 = e.code;
}
await driver.remove('grand');
out.grandRemoved =
  !existsSync(join(driver.activeDir, snapshotId('grand'))) && !(await driver.isMounted('grand'));
await driver.remove('no-such-thing');

// A build killed with its snapshot mounted, holding a read-only directory.
const left = await driver.prepare('left', 'c2');
await mkdir(join(left, 'ro/inner'), { recursive: true });
await writeFile(join(left, 'ro/inner/f'), 'x');
await chmod(join(left, 'ro/inner'), 0o555);
await chmod(join(left, 'ro'), 0o555);
await driver.prepare('left-base', undefined);
const fresh = await OverlayDriver.open(ctx);
await fresh.cleanup();
out.afterCleanup = {
  mounts: readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(driver.dir)).length,
  active: readdirSync(fresh.activeDir),
  c2: await fresh.exists('c2'),
};

// The deepest chain: MAX_CHAIN layers mount, one more is refused clearly.
out.maxChain = MAX_CHAIN;
let parent;
for (let i = 0; i <= MAX_CHAIN; i++) {
  const name = `n${i}`;
  const p = join(fresh.snapshotsDir, snapshotId(name));
  await mkdir(join(p, 'fs'), { recursive: true });
  await writeFile(join(p, 'fs', `f${i}`), '');
  await writeFile(join(p, 'meta.json'), JSON.stringify(parent ? { name, parent } : { name }));
  parent = name;
}
const deep = await fresh.prepare('deep', `n${MAX_CHAIN - 1}`);
out.deepFiles = readdirSync(deep).length;
try {
  await fresh.prepare('deeper', `n${MAX_CHAIN}`);
  out.deeper = 'mounted';
} catch (e) {
  out.deeper = e.code;
}
out.deeperLeftNothing = !existsSync(join(fresh.activeDir, snapshotId('deeper')));
await fresh.remove('deep');

await fresh.remove('c2');
await fresh.remove('c1');
out.finalSnapshots = readdirSync(fresh.snapshotsDir).filter((n) => !n.startsWith('.')).length;
console.log(JSON.stringify(out));

// Changes as `kind path`; an add's source must be the path in the key's upper dir.
async function collect(key) {
  const upper = join(driver.activeDir, snapshotId(key), 'fs');
  const list = [];
  for await (const c of driver.diff(key)) {
    if (c.kind === 'add' || c.kind === 'modify') {
      list.push(
        c.source === join(upper, c.path)
          ? `${c.kind} ${c.path}`
          : `${c.kind} ${c.path} BAD SOURCE ${c.source}`,
      );
    } else list.push(`${c.kind} ${c.path}`);
  }
  return list;
}
