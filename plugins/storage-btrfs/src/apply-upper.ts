import type { BigIntStats } from 'node:fs';
import { chmod, lchown, lstat, mkdir, readdir, rename, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { getAttribute, listAttributes, removeAttribute, setAttribute } from '@napi-rs/xattr';
import { removeTree } from '@stacker/storage-overlay';

/**
 * Move what an overlayfs upper dir records into `target`, the tree the overlay's lower was
 * a snapshot of, so that `target` ends up as the merged view was: files, symlinks and other
 * non-directories are renamed in (same subvolume, so no data is copied and hard links
 * between new names survive), deletions (0/0 character devices, or files marked
 * `user.overlay.whiteout`) remove the path, an opaque directory (`user.overlay.opaque=y`)
 * replaces the target's, and every directory gets the upper copy's owner, mode, xattrs and
 * times. overlayfs's own `user.overlay.*` xattrs never reach the target. The cost is one
 * step per entry of the upper dir: the rest of the tree is never looked at.
 *
 * The upper dir is consumed: afterwards it holds only (emptied) directories.
 */
export async function applyUpper(upper: string, target: string): Promise<void> {
  await applyDir(upper, target);
}

const OVERLAY_PREFIX = 'user.overlay.';

async function applyDir(upperDir: string, targetDir: string): Promise<void> {
  for (const name of await readdir(upperDir)) {
    const u = join(upperDir, name);
    const t = join(targetDir, name);
    const st = await lstat(u, { bigint: true });
    const existing = await lstat(t, { bigint: true }).catch(() => undefined);
    if (await isWhiteout(u, st)) {
      if (existing) await removeTree(t);
      continue;
    }
    if (st.isDirectory()) {
      const opaque = (await getAttribute(u, `${OVERLAY_PREFIX}opaque`).catch(() => null))?.toString() === 'y';
      const fresh = opaque || !existing?.isDirectory();
      if (fresh && existing) await removeTree(t);
      if (fresh) await mkdir(t, { mode: 0o700 });
      await applyDir(u, t);
      await copyDirMetadata(u, st, t);
      continue;
    }
    if (!st.isSymbolicLink()) await dropOverlayXattrs(u);
    if (existing?.isDirectory()) await removeTree(t);
    await rename(u, t);
  }
}

async function isWhiteout(path: string, st: BigIntStats): Promise<boolean> {
  if (st.isCharacterDevice() && st.rdev === 0n) return true;
  if (!st.isFile() || st.size !== 0n) return false;
  return (await getAttribute(path, `${OVERLAY_PREFIX}whiteout`).catch(() => null)) !== null;
}

async function dropOverlayXattrs(path: string): Promise<void> {
  for (const x of await listAttributes(path)) {
    if (x.startsWith(OVERLAY_PREFIX)) await removeAttribute(path, x);
  }
}

/** Owner, mode, xattrs (overlay's own left out) and times of directory `u` onto `t`. */
async function copyDirMetadata(u: string, st: BigIntStats, t: string): Promise<void> {
  const cur = await lstat(t, { bigint: true });
  if (cur.uid !== st.uid || cur.gid !== st.gid) await lchown(t, Number(st.uid), Number(st.gid));
  // after chown, which clears set-id bits
  if ((cur.mode & 0o7777n) !== (st.mode & 0o7777n) || cur.uid !== st.uid || cur.gid !== st.gid)
    await chmod(t, Number(st.mode & 0o7777n));
  const want = (await listAttributes(u)).filter((x) => !x.startsWith(OVERLAY_PREFIX));
  const have = (await listAttributes(t)).filter((x) => !x.startsWith(OVERLAY_PREFIX));
  for (const x of have) if (!want.includes(x)) await removeAttribute(t, x);
  for (const x of want) {
    const v = await getAttribute(u, x);
    if (v === null) continue;
    const old = have.includes(x) ? await getAttribute(t, x) : null;
    if (old === null || !Buffer.from(old).equals(Buffer.from(v))) await setAttribute(t, x, v);
  }
  // last: entries renamed into `t` moved its times
  await utimes(t, Number(st.atimeNs) / 1e9, Number(st.mtimeNs) / 1e9);
}
