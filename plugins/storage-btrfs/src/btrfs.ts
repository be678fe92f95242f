import { lstat } from 'node:fs/promises';
import type { Options } from 'execa';

/** execa, imported on first use: loading it costs a quarter second, and a cached build runs nothing. */
const execa = async <O extends Options = Options>(file: string, args: readonly string[], options?: O) =>
  (await import('execa')).execa(file, args, options as O);

import { btrfsToolMissing } from './errors.js';

/**
 * The few btrfs-progs commands the driver needs. Each throws an Error carrying the
 * command's own message when it fails.
 */

/** Inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID). */
export const SUBVOLUME_ROOT_INO = 256;

async function btrfs(args: string[]): Promise<void> {
  const r = await execa('btrfs', args, { reject: false });
  if ((r as { code?: string }).code === 'ENOENT') throw btrfsToolMissing();
  if (r.exitCode !== 0) {
    const detail = r.stderr
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('WARNING:'))
      .join('; ');
    throw new Error(`btrfs ${args.join(' ')}: ${detail || r.shortMessage}`);
  }
}

export async function createSubvolume(path: string): Promise<void> {
  await btrfs(['subvolume', 'create', path]);
}

/** A writable snapshot of subvolume `source` at `dest`. */
export async function snapshotSubvolume(source: string, dest: string): Promise<void> {
  await btrfs(['subvolume', 'snapshot', source, dest]);
}

export async function setReadOnly(path: string, readOnly: boolean): Promise<void> {
  await btrfs(['property', 'set', '-t', 'subvol', path, 'ro', String(readOnly)]);
}

/** Is `path` the root of a subvolume (as opposed to a plain directory, or missing)? */
export async function isSubvolume(path: string): Promise<boolean> {
  const st = await lstat(path).catch(() => undefined);
  return st?.isDirectory() === true && st.ino === SUBVOLUME_ROOT_INO;
}

/**
 * Delete subvolume `path` (no-op when it is not there). Unprivileged deletion
 * (user_subvol_rm_allowed) needs write access to the subvolume's root, which a read-only
 * snapshot refuses: it is made writable first.
 */
export async function deleteSubvolume(path: string): Promise<void> {
  if (!(await isSubvolume(path))) return;
  try {
    await btrfs(['subvolume', 'delete', path]);
  } catch {
    await setReadOnly(path, false);
    await btrfs(['subvolume', 'delete', path]);
  }
}

/** The filesystem type `stat -f` reports for `path` (e.g. `btrfs`, `ext2/ext3`, `tmpfs`). */
export async function filesystemType(path: string): Promise<string> {
  const r = await execa('stat', ['-f', '-c', '%T', path], { reject: false });
  return r.exitCode === 0 ? r.stdout.trim() : '';
}
