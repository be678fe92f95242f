import { existsSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join, sep } from 'node:path';
import { unpackLayer } from '@stacker/oci';
import { type Logger, UserError } from '@stacker/plugin-api';
import type { BuildSettings } from './engine.js';
import { DirLock } from './lock.js';
import type { PluginRegistry } from './registry.js';

/** execa, imported on first use: loading it is costly, and a cached build runs none of this. */
const loadExeca = () => import('execa');

const BTRFS_SUPER_MAGIC = 0x9123683e;
/** Inode number of a btrfs subvolume's root directory. */
const SUBVOLUME_ROOT_INO = 256;

export interface CleanOptions {
  settings: BuildSettings;
  registry: PluginRegistry;
  log: Logger;
}

/**
 * `stacker clean`: release what the storage driver holds (its cleanup: mounts, active
 * snapshots), unmount anything still mounted below the roots dir, then delete the roots
 * dir, the OCI layout and the stacker dir. Works on trees a build leaves behind: read-only
 * directories, files owned by subuids (run it inside the user namespace), btrfs
 * subvolumes (read-only snapshots too). Every step is tried; fails at the end if one did.
 */
export async function cleanWorkspace(opts: CleanOptions): Promise<void> {
  const { settings, log } = opts;
  const problems: string[] = [];
  if (existsSync(settings.rootsDir)) {
    const locks: DirLock[] = [];
    try {
      locks.push(DirLock.acquire(settings.rootsDir));
      if (existsSync(settings.stackerDir)) locks.push(DirLock.acquire(settings.stackerDir));
      try {
        const factory = await opts.registry.storage(settings.storageType);
        const driver = await factory.create({
          rootsDir: settings.rootsDir,
          log,
          unpack: (tar, dir, o) => unpackLayer(tar, dir, o),
        });
        await driver.cleanup?.();
      } catch (e) {
        // roots of another driver, or a driver that cannot start here: still remove them
        log.debug(`storage cleanup skipped: ${(e as Error).message}`);
      }
      await unmountBelow(settings.rootsDir, log);
      await removeTree(settings.rootsDir);
    } catch (e) {
      if (e instanceof UserError && e.code === 'lock') throw e;
      log.info(`problem cleaning roots ${(e as Error).message}`);
      problems.push(settings.rootsDir);
    } finally {
      for (const l of locks) l.release();
    }
  }
  for (const dir of [settings.ociDir, settings.stackerDir]) {
    try {
      await removeTree(dir);
    } catch (e) {
      log.info(`problem cleaning ${dir}: ${(e as Error).message}`);
      problems.push(dir);
    }
  }
  if (problems.length)
    throw new UserError('clean', `cleaning failed: could not remove ${problems.join(', ')}`);
}

/** Unmount every mount point at or below `dir`, deepest first (lazily when busy). */
async function unmountBelow(dir: string, log: Logger): Promise<void> {
  const real = await fsp.realpath(dir).catch(() => dir);
  const points = (await mountPoints())
    .filter((p) => p === real || p.startsWith(real + sep))
    .sort((a, b) => b.length - a.length);
  for (const p of points) {
    const { execa } = await loadExeca();
    const r = await execa('umount', [p], { reject: false });
    if (r.exitCode !== 0) await execa('umount', ['-l', p], { reject: false });
    log.debug(`unmounted ${p}`);
  }
}

/**
 * rm -rf for a build's leftovers. The quick way first; when it is refused (a read-only
 * btrfs snapshot, a directory we may not write), walk: delete subvolumes with btrfs,
 * make directories writable, then remove entries one by one.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await fsp.rm(path, { recursive: true, force: true });
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!['EACCES', 'EPERM', 'EROFS', 'ENOTEMPTY', 'EBUSY'].includes(code ?? '')) throw e;
  }
  await removeCarefully(path);
}

async function removeCarefully(path: string): Promise<void> {
  const st = await fsp.lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isDirectory()) {
    await fsp.unlink(path);
    return;
  }
  if (st.ino === SUBVOLUME_ROOT_INO && (await isBtrfs(path)) && (await deleteSubvolume(path))) return;
  await fsp.chmod(path, (st.mode & 0o7777) | 0o700).catch(() => {});
  for (const name of await fsp.readdir(path)) await removeCarefully(join(path, name));
  try {
    await fsp.rmdir(path);
  } catch (e) {
    // a mount point we did not make (the btrfs `stacker setup --btrfs` mounts on the roots
    // dir): emptied, it stays for the next build
    if ((e as NodeJS.ErrnoException).code !== 'EBUSY' || !(await isMountPoint(path))) throw e;
  }
}

async function isMountPoint(path: string): Promise<boolean> {
  const real = await fsp.realpath(path).catch(() => path);
  return (await mountPoints()).includes(real);
}

/** The mount points of /proc/self/mountinfo, octal escapes decoded. */
async function mountPoints(): Promise<string[]> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  return text
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => Boolean(p))
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))));
}

async function isBtrfs(path: string): Promise<boolean> {
  const s = await fsp.statfs(path).catch(() => undefined);
  return s !== undefined && Number(s.type) === BTRFS_SUPER_MAGIC;
}

/** `btrfs subvolume delete`, after making a read-only snapshot writable; false if refused. */
async function deleteSubvolume(path: string): Promise<boolean> {
  const { execa } = await loadExeca();
  const del = () => execa('btrfs', ['subvolume', 'delete', path], { reject: false });
  if ((await del()).exitCode === 0) return true;
  await execa('btrfs', ['property', 'set', '-t', 'subvol', path, 'ro', 'false'], { reject: false });
  if ((await del()).exitCode === 0) return true;
  // without user_subvol_rm_allowed: empty it, rmdir removes an empty subvolume
  return false;
}
