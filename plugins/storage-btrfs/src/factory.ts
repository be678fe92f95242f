import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { DriverContext, StorageDriverFactory } from '@stacker/plugin-api';
import { probeOverlay, unmount } from '@stacker/storage-overlay';
import { createSubvolume, deleteSubvolume, filesystemType, setReadOnly, snapshotSubvolume } from './btrfs.js';
import { BtrfsDriver } from './driver.js';
import { notBtrfs, overlayOnBtrfsUnusable, subvolumesUnusable } from './errors.js';

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
    if (process.geteuid?.() === 0) {
      await mkdir(m);
      await mkdir(join(b, 'upper'));
      await mkdir(join(b, 'work'));
      overlayFailure = await probeOverlay(base, {
        lower: basename(a),
        upper: `${basename(b)}/upper`,
        work: `${basename(b)}/work`,
        mnt: basename(m),
      });
    }
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

export const btrfsFactory: StorageDriverFactory = {
  type: 'btrfs',
  description:
    'btrfs subvolumes and snapshots: a roots dir on btrfs mounted with user_subvol_rm_allowed (`sudo stacker setup --btrfs 10G` makes one)',
  check: checkBtrfs,
  create: (ctx) => BtrfsDriver.open(ctx),
};
