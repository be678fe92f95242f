import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { constants as fsc } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { setAttributeSync } from '@napi-rs/xattr';
import { type Logger, silentLogger, type UnpackOptions } from '@stacker/plugin-api';
import { badTar, chownFailed, unsafePath } from './errors.js';
import type { TarHeader } from './tar-header.js';
import { readTar, type TarLimits } from './tar-reader.js';

const run = promisify(execFile);
const MAX_SYMLINKS = 40;
const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

export interface UnpackLayerOptions extends UnpackOptions {
  log?: Logger;
  /** Set owners from the tar (default: when running as uid 0, e.g. root of a user namespace). */
  chown?: boolean;
  /** Caps on entries and bytes (default: the environment's STACKER_LAYER_MAX_*, else generous). */
  limits?: TarLimits;
}

/**
 * Apply a layer tar (plain or gzip) onto `destDir`. Whiteouts are applied (`delete`) or
 * recorded the way overlayfs does with `userxattr` (`overlay`). Nothing is ever written
 * outside `destDir`: names with `..` are refused, leading slashes are dropped, and
 * symlinks met on the way are resolved as if `destDir` were `/`.
 */
export async function unpackLayer(
  layerTar: Readable | AsyncIterable<Buffer>,
  destDir: string,
  options: UnpackLayerOptions,
): Promise<void> {
  await fsp.mkdir(destDir, { recursive: true });
  const root = await fsp.realpath(destDir);
  const unpacker = new Unpacker(root, options);
  for await (const entry of readTar(layerTar, options.limits)) await unpacker.apply(entry.header, entry.body);
  await unpacker.finish();
}

class Unpacker {
  private readonly log: Logger;
  private readonly chown: boolean;
  /** Absolute paths known to be real directories (no symlink on the way) in this unpack. */
  private readonly dirs = new Set<string>();
  /** Paths written by this layer: whiteouts and opaque markers leave them alone. */
  private readonly created = new Set<string>();
  /** Directory mtimes, set once everything inside them is written. */
  private readonly dirTimes = new Map<string, number>();
  private warned = new Set<string>();
  /** Device nodes met (never created: mknod needs privilege), reported once at the end. */
  private devices = 0;
  private firstDevice = '';
  /** Directories this unpack made: nothing was in them before, so a name not in `created`
   * does not exist there and needs no lstat. */
  private readonly fresh = new Set<string>();

  constructor(
    private readonly root: string,
    private readonly options: UnpackLayerOptions,
  ) {
    this.log = options.log ?? silentLogger;
    this.chown = options.chown ?? process.getuid?.() === 0;
  }

  async apply(header: TarHeader, body: AsyncIterable<Buffer>): Promise<void> {
    const parts = safeParts(header.name);
    if (parts.length === 0) {
      if (header.type === 'directory') this.applyMeta(this.root, header, false);
      return;
    }
    const base = parts[parts.length - 1];
    const parentParts = parts.slice(0, -1);
    if (base.startsWith(WHITEOUT)) return this.whiteout(header.name, parentParts, base);

    if (header.type === 'char' || header.type === 'block') {
      if (this.devices++ === 0) this.firstDevice = header.name;
      return;
    }
    const parent = (await this.resolveDir(header.name, parentParts, true)) as string;
    const target = join(parent, base);
    const existing = this.fresh.has(parent) && !this.created.has(target) ? null : lstatOrNull(target);

    if (header.type === 'directory') {
      if (!existing?.isDirectory()) {
        if (existing) this.removePath(target, true);
        fs.mkdirSync(target, 0o700);
        this.fresh.add(target);
      }
    } else {
      if (existing) {
        this.removePath(target, existing.isDirectory());
        this.dirTimes.delete(target);
      }
      switch (header.type) {
        case 'file':
          // owner, mode, xattrs and times through the open descriptor: no more path walks
          await writeFile(target, body, header.size, (fd) => this.applyMeta(target, header, false, fd));
          this.created.add(target);
          return;
        case 'symlink':
          fs.symlinkSync(header.linkname ?? '', target);
          break;
        case 'hardlink':
          fs.linkSync(await this.linkTarget(header), target);
          break;
        case 'fifo':
          await run('mkfifo', ['-m', (header.mode & 0o777).toString(8), target]);
          break;
      }
    }
    this.created.add(target);
    if (header.type !== 'hardlink') this.applyMeta(target, header, header.type === 'symlink');
  }

  /** Remove `path` (absolute, inside the root); forget cached directories at or below it. */
  private removePath(path: string, recursive: boolean): void {
    fs.rmSync(path, { recursive, force: true });
    this.fresh.delete(path);
    if (recursive || this.dirs.has(path)) {
      for (const d of this.dirs) if (d === path || d.startsWith(`${path}/`)) this.dirs.delete(d);
    }
    // A directory time set later must not land on whatever takes the path's place (a
    // symlink to outside the root would lead lutimes out of it).
    for (const d of this.dirTimes.keys()) if (d === path || d.startsWith(`${path}/`)) this.dirTimes.delete(d);
  }

  async finish(): Promise<void> {
    const first = this.firstDevice;
    if (this.devices === 1) {
      this.log.warn(
        { path: first },
        `device node ${JSON.stringify(first)} in a layer was skipped: creating it needs privilege`,
      );
    } else if (this.devices > 1) {
      this.log.warn(
        { path: first, count: this.devices },
        `${this.devices} device nodes in a layer were skipped (the first: ${JSON.stringify(first)}): creating them needs privilege`,
      );
    }
    for (const [path, mtime] of this.dirTimes) {
      try {
        fs.lutimesSync(path, mtime, mtime);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
  }

  private async whiteout(name: string, parentParts: string[], base: string): Promise<void> {
    const overlay = this.options.whiteouts === 'overlay';
    const parent = await this.resolveDir(name, parentParts, overlay);
    if (parent === undefined) return; // nothing below to hide
    if (base === OPAQUE) {
      if (overlay) this.setXattr(parent, 'user.overlay.opaque', Buffer.from('y'));
      else this.clearLower(parent);
      return;
    }
    if (base.startsWith(`${WHITEOUT}${WHITEOUT}`)) {
      this.log.debug({ path: name }, 'unknown whiteout metadata entry ignored');
      return;
    }
    const victim = base.slice(WHITEOUT.length);
    if (victim === '' || victim === '.' || victim === '..')
      throw unsafePath(name, 'a whiteout must name an entry');
    const target = join(parent, victim);
    if (overlay) {
      this.removePath(target, true);
      await run('mknod', [target, 'c', '0', '0']);
      this.created.add(target);
    } else if (!this.created.has(target)) {
      this.removePath(target, true);
    }
  }

  /** Remove what lower layers left in `dir`, keeping what this layer wrote. */
  private clearLower(dir: string): void {
    for (const name of fs.readdirSync(dir)) {
      const path = join(dir, name);
      if (!this.created.has(path)) this.removePath(path, true);
      else if (fs.lstatSync(path).isDirectory()) this.clearLower(path);
    }
  }

  private async linkTarget(header: TarHeader): Promise<string> {
    let parts: string[];
    try {
      parts = safeParts(header.linkname ?? '');
    } catch {
      // name the entry, not only its target
      const why = header.linkname?.includes('\0') ? 'a NUL byte' : 'a ".." component';
      throw unsafePath(
        header.name,
        `it is a hard link to ${JSON.stringify(header.linkname)}, whose path has ${why}`,
      );
    }
    if (parts.length === 0) throw unsafePath(header.name, 'a hard link must name a file in the layer');
    const parent = await this.resolveDir(header.name, parts.slice(0, -1), false);
    const target = parent === undefined ? undefined : join(parent, parts[parts.length - 1]);
    const st = target === undefined ? null : lstatOrNull(target);
    if (!st || st.isDirectory()) {
      throw badTar(
        `hard link ${JSON.stringify(header.name)} points at ${JSON.stringify(header.linkname)}, which is not a file unpacked so far`,
      );
    }
    return target as string;
  }

  /**
   * The real directory that `parts` name inside the root, resolving symlinks as if the root
   * were `/` (so `..` and absolute targets cannot leave it). With `create`, missing
   * directories are made and non-directories in the way are replaced.
   */
  private async resolveDir(name: string, parts: string[], create: boolean): Promise<string | undefined> {
    // Fast path: a directory this unpack already resolved to a real directory (entries come
    // parents first, so nearly every lookup hits). Anything replaced is forgotten.
    const direct = join(this.root, ...parts);
    if (parts.length === 0) return this.root;
    if (this.dirs.has(direct) && !parts.some((p) => p === '..' || p === '.' || p === '')) return direct;
    let stack: string[] = [];
    const queue = [...parts];
    let links = 0;
    while (queue.length > 0) {
      const part = queue.shift() as string;
      if (part === '' || part === '.') continue;
      if (part === '..') {
        stack.pop();
        continue;
      }
      const path = join(this.root, ...stack, part);
      if (this.dirs.has(path)) {
        stack.push(part);
        continue;
      }
      const st = lstatOrNull(path);
      if (st?.isDirectory()) {
        stack.push(part);
        this.dirs.add(path);
      } else if (st?.isSymbolicLink()) {
        if (++links > MAX_SYMLINKS)
          throw unsafePath(name, 'too many levels of symbolic links in its parents');
        const target = fs.readlinkSync(path);
        if (target.startsWith('/')) stack = [];
        queue.unshift(...target.split('/'));
      } else if (!create) {
        return undefined;
      } else {
        if (st) this.removePath(path, false);
        fs.mkdirSync(path, 0o755);
        this.fresh.add(path);
        stack.push(part);
        this.dirs.add(path);
      }
    }
    return join(this.root, ...stack);
  }

  private applyMeta(path: string, header: TarHeader, isSymlink: boolean, fd?: number): void {
    // Order matters: chown clears setuid bits and file capabilities, so it goes first.
    if (this.chown) {
      try {
        if (fd === undefined) fs.lchownSync(path, header.uid, header.gid);
        else fs.fchownSync(fd, header.uid, header.gid);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EINVAL' || code === 'EPERM') throw chownFailed(path, header.uid, header.gid, e);
        throw e;
      }
    }
    if (fd !== undefined) fs.fchmodSync(fd, header.mode & 0o7777);
    else if (!isSymlink) fs.chmodSync(path, header.mode & 0o7777);
    if (header.xattrs) for (const [key, value] of header.xattrs) this.setXattr(path, key, value, isSymlink);
    if (header.type === 'directory') this.dirTimes.set(path, header.mtime);
    else if (fd !== undefined) fs.futimesSync(fd, header.mtime, header.mtime);
    else fs.lutimesSync(path, header.mtime, header.mtime);
  }

  private setXattr(path: string, key: string, value: Buffer, isSymlink = false): void {
    try {
      setAttributeSync(path, key, value);
    } catch (e) {
      // user.* xattrs are not allowed on symlinks; some filesystems refuse some namespaces.
      if (isSymlink && key.startsWith('user.')) return;
      if (!this.warned.has(key)) {
        this.warned.add(key);
        this.log.warn(
          { path, xattr: key, err: String((e as Error).message) },
          'extended attribute could not be set; skipped',
        );
      }
    }
  }
}

/** Path components of a tar name: leading slashes dropped, `..` refused. */
function safeParts(name: string): string[] {
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw unsafePath(name, 'it has a ".." component');
    if (part.includes('\0')) throw unsafePath(name, 'it contains a NUL byte');
    parts.push(part);
  }
  return parts;
}

async function writeFile(
  path: string,
  body: AsyncIterable<Buffer>,
  size: number,
  then: (fd: number) => void,
): Promise<void> {
  // Synchronous writes: one syscall each, no thread-pool round trip per chunk.
  const fd = fs.openSync(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  try {
    let written = 0;
    for await (const chunk of body) {
      let off = 0;
      while (off < chunk.length) off += fs.writeSync(fd, chunk, off, chunk.length - off);
      written += chunk.length;
    }
    if (written !== size) throw badTar(`${path} is shorter than its header says`);
    then(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function lstatOrNull(path: string) {
  try {
    return fs.lstatSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw e;
  }
}
