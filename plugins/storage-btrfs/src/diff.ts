import { type BigIntStats, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Change } from '@stacker/plugin-api';

/**
 * The changes of `upper` (an active snapshot) against `lower` (the committed snapshot it
 * was taken from; undefined = empty), found from metadata alone.
 *
 * A btrfs snapshot keeps inode numbers and every timestamp, and any change to a file
 * (content, mode, owner, xattrs, link count) moves its ctime, which no user can set: an
 * entry whose inode number and lstat metadata (plus link target) match its parent's is
 * unchanged, and no file content or xattr is ever read. Deriving an image from a big base
 * costs one lstat per path on each side and nothing else. readdir and lstat are made
 * synchronously, a directory at a time (the generator yields between directories): on
 * cached inodes they take microseconds, and a trip through libuv's thread pool for each
 * one (plus reading xattrs) made the walk of a Debian minbase base take 1.5 s, not 0.2 s. A path whose inode number differs was replaced: for a
 * directory that means the parent's contents are hidden (`opaque`).
 *
 * Order matches a walk of the tree with each directory's names in byte order, parents
 * before children, deletions in the place of the deleted name, and an opaque marker right
 * after its directory's own entry (as `d/.wh..wh..opq` follows `d/` in a tar): the same order the overlay driver gives, so both drivers produce
 * byte-identical layers for the same change. Unchanged directories that hold a change are
 * emitted too (as `modify`), as overlay's copied-up directories are.
 */
export async function* diffTrees(upper: string, lower: string | undefined): AsyncGenerator<Change> {
  yield* walk(upper, lower, '', []);
}

function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

function names(dir: string | undefined): Set<string> {
  if (dir === undefined) return new Set();
  return new Set(readdirSync(dir));
}

/**
 * `pending` holds unchanged ancestor directories not yet emitted; they are emitted (in
 * order) just before the first change found below them.
 */
async function* walk(
  upperDir: string,
  lowerDir: string | undefined,
  rel: string,
  pending: Change[],
): AsyncGenerator<Change> {
  const upperNames = names(upperDir);
  const lowerNames = names(lowerDir);
  const all = [...new Set([...upperNames, ...lowerNames])].sort(compareNames);
  for (const n of all) {
    const path = rel ? `${rel}/${n}` : n;
    const source = join(upperDir, n);
    const lowerPath = lowerDir === undefined ? undefined : join(lowerDir, n);
    if (!upperNames.has(n)) {
      yield* pending.splice(0);
      yield { kind: 'delete', path };
      continue;
    }
    const u = lstatSync(source, { bigint: true });
    const l =
      lowerPath !== undefined && lowerNames.has(n) ? lstatSync(lowerPath, { bigint: true }) : undefined;
    if (l === undefined || u.ino !== l.ino || fileType(u) !== fileType(l)) {
      yield* pending.splice(0);
      yield { kind: l === undefined || u.isDirectory() ? 'add' : 'modify', path, source };
      if (l !== undefined && u.isDirectory()) yield { kind: 'opaque', path };
      if (u.isDirectory()) yield* addTree(source, path);
      continue;
    }
    const same = sameEntry(u, l, source, lowerPath as string);
    if (u.isDirectory()) {
      const before = pending.length;
      if (same) pending.push({ kind: 'modify', path, source });
      else {
        yield* pending.splice(0);
        yield { kind: 'modify', path, source };
      }
      yield* walk(source, lowerPath, path, pending);
      if (pending.length > before) pending.length = before;
      continue;
    }
    if (!same) {
      yield* pending.splice(0);
      yield { kind: 'modify', path, source };
    }
  }
}

/** Everything below a new directory, as adds. */
async function* addTree(dir: string, rel: string): AsyncGenerator<Change> {
  const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => compareNames(a.name, b.name));
  for (const e of entries) {
    const path = `${rel}/${e.name}`;
    const source = join(dir, e.name);
    yield { kind: 'add', path, source };
    if (e.isDirectory()) yield* addTree(source, path);
  }
}

function fileType(st: BigIntStats): bigint {
  return st.mode & 0o170000n;
}

function sameEntry(u: BigIntStats, l: BigIntStats, upperPath: string, lowerPath: string): boolean {
  if (
    u.ctimeNs !== l.ctimeNs ||
    u.mtimeNs !== l.mtimeNs ||
    u.size !== l.size ||
    u.mode !== l.mode ||
    u.uid !== l.uid ||
    u.gid !== l.gid ||
    u.nlink !== l.nlink ||
    u.rdev !== l.rdev
  ) {
    return false;
  }
  // Belt and braces: a new link target moves the ctime too (symlinks are few).
  return !u.isSymbolicLink() || readlinkSync(upperPath) === readlinkSync(lowerPath);
}
