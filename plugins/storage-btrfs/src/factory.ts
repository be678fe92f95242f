import { randomBytes } from 'node:crypto';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DriverContext, StorageDriverFactory } from '@stacker/plugin-api';
import { unmount } from '@stacker/storage-overlay';
import type { Options } from 'execa';
import { createSubvolume, deleteSubvolume, filesystemType, setReadOnly, snapshotSubvolume } from './btrfs.js';
import { BtrfsDriver } from './driver.js';
import { notBtrfs, overlayOnBtrfsUnusable, subvolumesUnusable } from './errors.js';

/** execa, imported on first use. */
const execa = async <O extends Options = Options>(file: string, args: readonly string[], options?: O) =>
  (await import('execa')).execa(file, args, options as O);

/**
 * The roots dir must be on btrfs, and everything a build does with subvolumes must work
 * there as the current user: create, snapshot, make read-only, and delete (which an
 * unprivileged user can only do on a filesystem mounted with user_subvol_rm_allowed); and
 * an overlay (userxattr) with a read-only snapshot below and an upper dir in a writable
 * one must record a deletion as a whiteout, as builds track their changes that way.
 */
export async function checkBtrfs(ctx: DriverContext): Promise<void> {
  await mkdir(ctx.rootsDir, { recursive: true });
  const type = await filesystemType(ctx.rootsDir);
  if (type !== 'btrfs') throw notBtrfs(ctx.rootsDir, type);
  const base = join(ctx.rootsDir, 'btrfs');
  await mkdir(base, { recursive: true });
  const id = randomBytes(4).toString('hex');
  const a = join(base, `.check-${id}-a`);
  const b = join(base, `.check-${id}-b`);
  const m = join(base, `.check-${id}-m`);
  let failure: string | undefined;
  let overlayFailure: string | undefined;
  try {
    await createSubvolume(a);
    await writeFile(join(a, 'f'), 'x');
    await setReadOnly(a, true);
    await snapshotSubvolume(a, b);
    // Mounting needs root of a user namespace (builds, and the check they run, are in one);
    // `stacker check` runs outside and tries rootless overlay on its own.
    if (process.geteuid?.() === 0) overlayFailure = await tryOverlay(a, b, m);
  } catch (e) {
    failure = (e as Error).message;
  }
  await unmount(m).catch(() => undefined);
  await rm(m, { recursive: true, force: true }).catch(() => undefined);
  for (const p of [b, a]) {
    try {
      await deleteSubvolume(p);
    } catch (e) {
      failure ??= (e as Error).message;
    }
  }
  if (failure !== undefined) throw subvolumesUnusable(ctx.rootsDir, failure);
  if (overlayFailure !== undefined) throw overlayOnBtrfsUnusable(ctx.rootsDir, overlayFailure);
}

/** Mount an overlay of read-only subvolume `lower` with its upper dir in `writable`, delete
 * a lower file through it; undefined when that left a whiteout, else what went wrong. */
async function tryOverlay(lower: string, writable: string, mnt: string): Promise<string | undefined> {
  await mkdir(mnt);
  await mkdir(join(writable, 'upper'));
  await mkdir(join(writable, 'work'));
  const r = await execa(
    'mount',
    [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${lower},upperdir=${writable}/upper,workdir=${writable}/work,userxattr`,
      mnt,
    ],
    { reject: false },
  );
  if (r.exitCode !== 0) return r.stderr.trim() || `mount exited ${r.exitCode}`;
  await rm(join(mnt, 'f'));
  const wh = await stat(join(writable, 'upper', 'f')).catch(() => undefined);
  if (!wh?.isCharacterDevice() || wh.rdev !== 0) return 'deleting a lower file left no whiteout';
  return undefined;
}

export const btrfsFactory: StorageDriverFactory = {
  type: 'btrfs',
  description:
    'btrfs subvolumes and snapshots: a roots dir on btrfs mounted with user_subvol_rm_allowed (`sudo stacker setup --btrfs 10G` makes one)',
  check: checkBtrfs,
  create: (ctx) => BtrfsDriver.open(ctx),
};
