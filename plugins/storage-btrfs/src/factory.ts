import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DriverContext, StorageDriverFactory } from '@stacker/plugin-api';
import { createSubvolume, deleteSubvolume, filesystemType, setReadOnly, snapshotSubvolume } from './btrfs.js';
import { BtrfsDriver } from './driver.js';
import { notBtrfs, subvolumesUnusable } from './errors.js';

/**
 * The roots dir must be on btrfs, and everything a build does with subvolumes must work
 * there as the current user: create, snapshot, make read-only, and delete (which an
 * unprivileged user can only do on a filesystem mounted with user_subvol_rm_allowed).
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
  let failure: string | undefined;
  try {
    await createSubvolume(a);
    await writeFile(join(a, 'f'), 'x');
    await setReadOnly(a, true);
    await snapshotSubvolume(a, b);
  } catch (e) {
    failure = (e as Error).message;
  }
  for (const p of [b, a]) {
    try {
      await deleteSubvolume(p);
    } catch (e) {
      failure ??= (e as Error).message;
    }
  }
  if (failure !== undefined) throw subvolumesUnusable(ctx.rootsDir, failure);
}

export const btrfsFactory: StorageDriverFactory = {
  type: 'btrfs',
  description:
    'btrfs subvolumes and snapshots: a roots dir on btrfs mounted with user_subvol_rm_allowed (`sudo stacker setup --btrfs 10G` makes one)',
  check: checkBtrfs,
  create: (ctx) => BtrfsDriver.open(ctx),
};
