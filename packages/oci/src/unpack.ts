import { execFile } from 'node:child_process';
import { constants as fsc } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { setAttribute } from '@napi-rs/xattr';
import { type Logger, silentLogger, type UnpackOptions } from '@stacker/plugin-api';
import { badTar, chownFailed, unsafePath } from './errors.js';
import type { TarHeader } from './tar-header.js';
import { readTar } from './tar-reader.js';

const run = promisify(execFile);
const MAX_SYMLINKS = 40;
const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

export interface UnpackLayerOptions extends UnpackOptions {
  log?: Logger;
  /** Set owners from the tar (default: when running as uid 0, e.g. root of a user namespace). */
  chown?: boolean;
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
  for await (const entry of readTar(layerTar)) await unpacker.apply(entry.header, entry.body);
  await unpacker.finish();
}

class Unpacker {
  private readonly log: Logger;
  private readonly chown: boolean;
  /** Paths written by this layer: whiteouts and opaque markers leave them alone. */
  private readonly created = new Set<string>();
  /** Directory mtimes, set once everything inside them is written. */
  private readonly dirTimes = new Map<string, number>();
  private warned = new Set<string>();

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
      if (header.type === 'directory') await this.applyMeta(this.root, header, false);
      return;
    }
    const base = parts[parts.length - 1];
    const parentParts = parts.slice(0, -1);
    if (base.startsWith(WHITEOUT)) return this.whiteout(header.name, parentParts, base);

    if (header.type === 'char' || header.type === 'block') {
      this.log.debug({ path: header.name }, 'device node not created: mknod needs privilege');
      return;
    }
    const parent = (await this.resolveDir(header.name, parentParts, true)) as string;
    const target = join(parent, base);
    const existing = await lstatOrNull(target);

    if (header.type === 'directory') {
      if (!existing?.isDirectory()) {
        if (existing) await fsp.rm(target, { recursive: true, force: true });
        await fsp.mkdir(target, 0o700);
      }
    } else {
      if (existing) {
        await fsp.rm(target, { recursive: existing.isDirectory(), force: true });
        this.dirTimes.delete(target);
      }
      switch (header.type) {
        case 'file':
          await writeFile(target, body, header.size);
          break;
        case 'symlink':
          await fsp.symlink(header.linkname ?? '', target);
          break;
        case 'hardlink':
          await fsp.link(await this.linkTarget(header), target);
          break;
        case 'fifo':
          await run('mkfifo', ['-m', (header.mode & 0o777).toString(8), target]);
          break;
      }
    }
    this.created.add(target);
    if (header.type !== 'hardlink') await this.applyMeta(target, header, header.type === 'symlink');
  }

  async finish(): Promise<void> {
    for (const [path, mtime] of this.dirTimes) {
      try {
        await fsp.lutimes(path, mtime, mtime);
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
      if (overlay) await this.setXattr(parent, 'user.overlay.opaque', Buffer.from('y'));
      else await this.clearLower(parent);
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
      await fsp.rm(target, { recursive: true, force: true });
      await run('mknod', [target, 'c', '0', '0']);
      this.created.add(target);
    } else if (!this.created.has(target)) {
      await fsp.rm(target, { recursive: true, force: true });
    }
  }

  /** Remove what lower layers left in `dir`, keeping what this layer wrote. */
  private async clearLower(dir: string): Promise<void> {
    for (const name of await fsp.readdir(dir)) {
      const path = join(dir, name);
      if (!this.created.has(path)) await fsp.rm(path, { recursive: true, force: true });
      else if ((await fsp.lstat(path)).isDirectory()) await this.clearLower(path);
    }
  }

  private async linkTarget(header: TarHeader): Promise<string> {
    const parts = safeParts(header.linkname ?? '');
    if (parts.length === 0) throw unsafePath(header.name, 'a hard link must name a file in the layer');
    const parent = await this.resolveDir(header.name, parts.slice(0, -1), false);
    const target = parent === undefined ? undefined : join(parent, parts[parts.length - 1]);
    const st = target === undefined ? null : await lstatOrNull(target);
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
      const st = await lstatOrNull(path);
      if (st?.isDirectory()) {
        stack.push(part);
      } else if (st?.isSymbolicLink()) {
        if (++links > MAX_SYMLINKS)
          throw unsafePath(name, 'too many levels of symbolic links in its parents');
        const target = await fsp.readlink(path);
        if (target.startsWith('/')) stack = [];
        queue.unshift(...target.split('/'));
      } else if (!create) {
        return undefined;
      } else {
        if (st) await fsp.rm(path, { force: true });
        await fsp.mkdir(path, 0o755);
        stack.push(part);
      }
    }
    return join(this.root, ...stack);
  }

  private async applyMeta(path: string, header: TarHeader, isSymlink: boolean): Promise<void> {
    // Order matters: chown clears setuid bits and file capabilities, so it goes first.
    if (this.chown) {
      try {
        await fsp.lchown(path, header.uid, header.gid);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EINVAL' || code === 'EPERM') throw chownFailed(path, header.uid, header.gid, e);
        throw e;
      }
    }
    if (!isSymlink) await fsp.chmod(path, header.mode & 0o7777);
    if (header.xattrs)
      for (const [key, value] of header.xattrs) await this.setXattr(path, key, value, isSymlink);
    if (header.type === 'directory') this.dirTimes.set(path, header.mtime);
    else await fsp.lutimes(path, header.mtime, header.mtime);
  }

  private async setXattr(path: string, key: string, value: Buffer, isSymlink = false): Promise<void> {
    try {
      await setAttribute(path, key, value);
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

async function writeFile(path: string, body: AsyncIterable<Buffer>, size: number): Promise<void> {
  const fh = await fsp.open(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  try {
    let written = 0;
    for await (const chunk of body) {
      let off = 0;
      while (off < chunk.length) {
        const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
        off += bytesWritten;
      }
      written += chunk.length;
    }
    if (written !== size) throw badTar(`${path} is shorter than its header says`);
  } finally {
    await fh.close();
  }
}

async function lstatOrNull(path: string) {
  try {
    return await fsp.lstat(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw e;
  }
}
