import { lstatSync, readdirSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { getAttribute, getAttributeSync, listAttributes, listAttributesSync } from '@napi-rs/xattr';
import type { Change } from '@stacker/plugin-api';
import { unsupportedOverlayFeature } from './errors.js';

// The change set an overlayfs upper dir records, for any driver that tracks a build's
// changes with an overlay (this one, and btrfs, whose lower is a whole snapshot).

function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * The changes an upper dir records, depth first, each directory's entries in byte order
 * (so parents come before children): a 0/0 character device (or a file marked
 * `user.overlay.whiteout`) is a deletion, a directory with `user.overlay.opaque=y`
 * hides its lower contents. readdir, lstat and listxattr are made synchronously: each
 * takes microseconds, and a thread-pool trip per entry cost more than the calls on an upper
 * dir of thousands of files.
 */
export async function* walkUpper(dir: string, rel: string): AsyncGenerator<Change> {
  const names = readdirSync(dir).sort(compareNames);
  for (const n of names) {
    const source = join(dir, n);
    const path = rel ? `${rel}/${n}` : n;
    const st = lstatSync(source);
    if (st.isCharacterDevice() && st.rdev === 0) {
      yield { kind: 'delete', path };
      continue;
    }
    if (st.isSymbolicLink()) {
      yield { kind: 'add', path, source };
      continue;
    }
    const xattrs = listAttributesSync(source).filter((x) => x.startsWith('user.overlay.'));
    for (const x of xattrs) {
      if (x === 'user.overlay.redirect' || x === 'user.overlay.metacopy') {
        throw unsupportedOverlayFeature(source, x);
      }
    }
    if (st.isFile() && xattrs.includes('user.overlay.whiteout')) {
      yield { kind: 'delete', path };
      continue;
    }
    if (st.isDirectory()) {
      yield { kind: 'add', path, source };
      if (xattrs.includes('user.overlay.opaque')) {
        const v = getAttributeSync(source, 'user.overlay.opaque')?.toString();
        if (v === 'y') yield { kind: 'opaque', path };
      }
      yield* walkUpper(source, path);
      continue;
    }
    yield { kind: 'add', path, source };
  }
}

/** The first lower layer that has `path`, as overlayfs would look it up (nearest first). */
async function lowerStat(lowers: string[], path: string) {
  for (const l of lowers) {
    const st = await lstat(join(l, path)).catch(() => undefined);
    if (st) return { st, source: join(l, path) };
  }
  return undefined;
}

async function sameDirMetadata(upper: string, lowers: string[], path: string): Promise<boolean> {
  const u = await lstat(upper);
  const lower = await lowerStat(lowers, path);
  if (!lower?.st.isDirectory()) return false;
  const l = lower.st;
  if (u.mode !== l.mode || u.uid !== l.uid || u.gid !== l.gid || u.mtimeMs !== l.mtimeMs) return false;
  const plain = async (p: string) =>
    (await listAttributes(p)).filter((x) => !x.startsWith('user.overlay.')).sort();
  const [ux, lx] = await Promise.all([plain(upper), plain(lower.source)]);
  if (ux.join('\0') !== lx.join('\0')) return false;
  for (const x of ux) {
    const [a, b] = await Promise.all([getAttribute(upper, x), getAttribute(lower.source, x)]);
    if (!a || !b || !Buffer.from(a).equals(Buffer.from(b))) return false;
  }
  return true;
}

/**
 * A directory is in the upper dir either because it changed or because overlayfs copied
 * it up on the way to a child (also one that was later removed again, like a mount point
 * runc had to create). Directories identical to their lower copy are held back and only
 * emitted when something below them is, so a run that changed nothing makes no layer.
 */
export async function* dropUnchangedCopyUps(
  changes: AsyncIterable<Change>,
  lowers: string[],
): AsyncGenerator<Change> {
  const pending: Change[] = [];
  // an opaque marker belongs to its directory (it follows the directory's own entry)
  const covers = (dir: Change, c: Change) =>
    c.path.startsWith(`${dir.path}/`) || (c.kind === 'opaque' && c.path === dir.path);
  for await (const c of changes) {
    while (pending.length && !covers(pending[pending.length - 1], c)) pending.pop();
    if (
      c.kind === 'add' &&
      lowers.length > 0 &&
      lstatSync(c.source).isDirectory() &&
      (await sameDirMetadata(c.source, lowers, c.path))
    ) {
      pending.push(c);
      continue;
    }
    yield* pending.splice(0);
    yield c;
  }
}
