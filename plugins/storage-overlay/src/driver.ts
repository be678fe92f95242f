import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, realpath, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { Change, Cleaner, DriverContext, StorageDriver, Viewer } from '@stacker/plugin-api';
import {
  type ActiveMeta,
  type CommittedMeta,
  ID_LENGTH,
  readActiveMetaSync,
  readCommittedMeta,
  snapshotId,
} from '@stacker/plugin-api/snapshot-meta';

// the id scheme is shared by the directory-based drivers; re-exported for tests and tools
export { ID_LENGTH, snapshotId };

import type { Options } from 'execa';

/** execa, imported on first use: loading it costs a quarter second, and a cached build runs nothing. */
const execa = async <O extends Options = Options>(file: string, args: readonly string[], options?: O) =>
  (await import('execa')).execa(file, args, options as O);

import { chainTooLong, snapshotInUse } from './errors.js';
import { isMountPoint, unmount, unmountBelow } from './mounts.js';
import { removeTree } from './rmrf.js';
import { dropUnchangedCopyUps, walkUpper } from './upper.js';

/**
 * On-disk layout, all below `<rootsDir>/overlay/`:
 *
 *   snapshots/<id>/fs          committed snapshot: an overlay upper dir, now read-only
 *   snapshots/<id>/meta.json   {name, parent}
 *   active/<id>/fs             upper dir of an active snapshot
 *   active/<id>/work           overlay's work dir
 *   active/<id>/rootfs         where the overlay is mounted (when there is a parent)
 *   active/<id>/meta.json      {key, parent}
 *
 * `<id>` is the start of sha256(name or key): short and free of characters that mean
 * something in overlay's option string (`:` `,` `=`).
 */
/**
 * The flags of every build overlay. `userxattr`: the overlay's own metadata in `user.overlay.*`
 * (what an unprivileged mount can write). `volatile`: no sync of the upper filesystem. Without
 * it, every unmount (each commit) runs syncfs on the filesystem holding the roots dir, which
 * writes out everything dirty there, the base just unpacked included: about half a second
 * per stanza with 300 MB pending on this machine's disk. stacker never relied on it (the OCI
 * layout's own files are fsynced where it matters; snapshots are a cache that `stacker clean`
 * rebuilds), and fsync inside a `run` step (dpkg's, say) costs nothing either. After a kernel
 * crash an active snapshot's overlay would refuse to mount again: active snapshots are never
 * remounted after a restart, cleanup() deletes them.
 */
export const OVERLAY_FLAGS = 'userxattr,volatile';

/**
 * Empty an overlay work dir before it is mounted again: one that was mounted `volatile`
 * holds `incompat/volatile`, and overlayfs refuses to mount it until that is gone (what
 * unpacking a second layer onto an active snapshot with a parent does: unmount, write the
 * upper dir, mount again).
 */
export async function freshWorkDir(work: string): Promise<void> {
  await removeTree(work);
  await mkdir(work, { mode: 0o700 });
}

/** Legacy mount(2) takes at most one page of options, the terminating NUL included. */
export const MAX_MOUNT_OPTIONS = 4095;

// The mount runs with its cwd in snapshots/, so each lower layer costs `<id>/fs:` only.
const PER_LAYER = ID_LENGTH + '/fs:'.length;
const FIXED =
  `lowerdir=,upperdir=../active/${'x'.repeat(ID_LENGTH)}/fs,workdir=../active/${'x'.repeat(ID_LENGTH)}/work,${OVERLAY_FLAGS}`
    .length + 1;

/** The deepest parent chain a snapshot can sit on (199 layers with 16-character ids). */
export const MAX_CHAIN = Math.floor((MAX_MOUNT_OPTIONS - FIXED) / PER_LAYER);

export class OverlayDriver implements StorageDriver, Cleaner, Viewer {
  readonly name = 'overlay';
  readonly dir: string;
  readonly snapshotsDir: string;
  readonly activeDir: string;

  private constructor(
    private readonly ctx: DriverContext,
    dir: string,
  ) {
    this.dir = dir;
    this.snapshotsDir = join(dir, 'snapshots');
    this.activeDir = join(dir, 'active');
  }

  static async open(ctx: DriverContext): Promise<OverlayDriver> {
    await mkdir(ctx.rootsDir, { recursive: true });
    // mountinfo shows real paths: compare against the real one.
    const dir = join(await realpath(ctx.rootsDir), 'overlay');
    const driver = new OverlayDriver(ctx, dir);
    await mkdir(driver.snapshotsDir, { recursive: true });
    await mkdir(driver.activeDir, { recursive: true });
    return driver;
  }

  private committedPath(name: string): string {
    return join(this.snapshotsDir, snapshotId(name));
  }

  private activePath(key: string): string {
    return join(this.activeDir, snapshotId(key));
  }

  private committedMeta(name: string): Promise<CommittedMeta | undefined> {
    return readCommittedMeta(this.snapshotsDir, name);
  }

  private activeMetaSync(key: string): ActiveMeta | undefined {
    return readActiveMetaSync(this.activeDir, key);
  }

  async exists(name: string): Promise<boolean> {
    return (await this.committedMeta(name)) !== undefined;
  }

  /** Committed snapshot ids from `parent` down to the base, nearest first. */
  private async chain(parent: string): Promise<string[]> {
    const ids: string[] = [];
    let name: string | undefined = parent;
    while (name !== undefined) {
      const meta = await this.committedMeta(name);
      if (!meta) throw new Error(`overlay: parent snapshot ${name} does not exist`);
      ids.push(snapshotId(name));
      if (ids.length > MAX_CHAIN) throw chainTooLong(parent, ids.length, MAX_CHAIN);
      name = meta.parent;
    }
    return ids;
  }

  async prepare(key: string, parent: string | undefined): Promise<string> {
    const path = this.activePath(key);
    if (existsSync(path)) throw new Error(`overlay: active snapshot ${key} already exists`);
    if (parent !== undefined) await this.chain(parent); // fail before creating anything
    const tmp = `${path}.tmp-${randomBytes(4).toString('hex')}`;
    await mkdir(join(tmp, 'fs'), { recursive: true, mode: 0o755 });
    await mkdir(join(tmp, 'work'), { mode: 0o700 });
    await mkdir(join(tmp, 'rootfs'), { mode: 0o755 });
    const meta: ActiveMeta = parent === undefined ? { key } : { key, parent };
    await writeFile(join(tmp, 'meta.json'), `${JSON.stringify(meta)}\n`);
    await rename(tmp, path);
    try {
      await this.mount(key, meta);
    } catch (e) {
      await removeTree(path);
      throw e;
    }
    this.ctx.log.debug({ key, parent }, 'overlay: prepared');
    return this.rootfs(key) as string;
  }

  rootfs(key: string): string | undefined {
    const meta = this.activeMetaSync(key);
    if (!meta) return undefined;
    return join(this.activePath(key), meta.parent === undefined ? 'fs' : 'rootfs');
  }

  /** Mount the overlay of an active snapshot that has a parent (no-op without one). */
  private async mount(key: string, meta: ActiveMeta): Promise<void> {
    if (meta.parent === undefined) return;
    const id = snapshotId(key);
    const lowers = (await this.chain(meta.parent)).map((l) => `${l}/fs`);
    const options = `lowerdir=${lowers.join(':')},upperdir=../active/${id}/fs,workdir=../active/${id}/work,${OVERLAY_FLAGS}`;
    if (Buffer.byteLength(options) > MAX_MOUNT_OPTIONS)
      throw chainTooLong(meta.parent, lowers.length, MAX_CHAIN);
    const target = join(this.activePath(key), 'rootfs');
    const r = await execa('mount', ['-t', 'overlay', 'overlay', '-o', options, target], {
      cwd: this.snapshotsDir,
      reject: false,
    });
    if (r.exitCode !== 0) {
      throw new Error(
        `overlay: mounting ${key} on ${meta.parent} failed: ${r.stderr.trim() || `exit ${r.exitCode}`}`,
      );
    }
  }

  async unpackLayer(key: string, layerTar: Readable): Promise<void> {
    const meta = this.activeMetaSync(key);
    if (!meta) throw new Error(`overlay: no active snapshot ${key}`);
    // Changing an upper dir under a mounted overlay is undefined behaviour: unmount,
    // write the layer straight into the upper dir, mount again.
    const target = join(this.activePath(key), 'rootfs');
    await unmount(target);
    await this.ctx.unpack(layerTar, join(this.activePath(key), 'fs'), { whiteouts: 'overlay' });
    if (meta.parent !== undefined) await freshWorkDir(join(this.activePath(key), 'work'));
    await this.mount(key, meta);
  }

  async *diff(key: string): AsyncIterable<Change> {
    const meta = this.activeMetaSync(key);
    if (!meta) throw new Error(`overlay: no active snapshot ${key}`);
    const lowers =
      meta.parent === undefined
        ? []
        : (await this.chain(meta.parent)).map((id) => join(this.snapshotsDir, id, 'fs'));
    yield* dropUnchangedCopyUps(walkUpper(join(this.activePath(key), 'fs'), ''), lowers);
  }

  async commit(name: string, key: string): Promise<void> {
    const meta = this.activeMetaSync(key);
    if (!meta) throw new Error(`overlay: no active snapshot ${key}`);
    const active = this.activePath(key);
    await unmount(join(active, 'rootfs'));
    const dest = this.committedPath(name);
    if (existsSync(dest)) {
      const existing = await this.committedMeta(name);
      if (!existing)
        throw new Error(`overlay: ${dest} is not the snapshot ${name} (id collision or damaged meta.json)`);
      this.ctx.log.debug({ name, key }, 'overlay: already committed, dropping the active snapshot');
      await removeTree(active);
      return;
    }
    const tmp = `${dest}.tmp-${randomBytes(4).toString('hex')}`;
    await mkdir(tmp);
    await rename(join(active, 'fs'), join(tmp, 'fs'));
    const committed: CommittedMeta = meta.parent === undefined ? { name } : { name, parent: meta.parent };
    await writeFile(join(tmp, 'meta.json'), `${JSON.stringify(committed)}\n`);
    try {
      await rename(tmp, dest);
    } catch (e) {
      // Another build committed the same name meanwhile: theirs is as good as ours.
      const code = (e as NodeJS.ErrnoException).code;
      if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || !(await this.committedMeta(name))) throw e;
      await removeTree(tmp);
    }
    await removeTree(active);
    this.ctx.log.debug({ name, key, parent: meta.parent }, 'overlay: committed');
  }

  async remove(keyOrName: string): Promise<void> {
    const active = this.activePath(keyOrName);
    if (this.activeMetaSync(keyOrName)) {
      await unmount(join(active, 'rootfs'));
      await removeTree(active);
      return;
    }
    if (!(await this.committedMeta(keyOrName))) return;
    const child = await this.childOf(keyOrName);
    if (child) throw snapshotInUse(keyOrName, child);
    await removeTree(this.committedPath(keyOrName));
  }

  /** The name of some snapshot (active or committed) whose parent is `name`. */
  private async childOf(name: string): Promise<string | undefined> {
    for (const dir of [this.snapshotsDir, this.activeDir]) {
      for (const id of await readdir(dir).catch(() => [] as string[])) {
        const text = await readFile(join(dir, id, 'meta.json'), 'utf8').catch(() => undefined);
        if (!text) continue;
        const meta = JSON.parse(text) as { name?: string; key?: string; parent?: string };
        if (meta.parent === name) return meta.name ?? meta.key;
      }
    }
    return undefined;
  }

  /** A view of committed `name` as active snapshot `key` (writable; discard it with remove). */
  async view(key: string, name: string): Promise<string> {
    return this.prepare(key, name);
  }

  async cleanup(): Promise<void> {
    const unmounted = await unmountBelow(this.dir);
    for (const id of await readdir(this.activeDir).catch(() => [] as string[])) {
      await removeTree(join(this.activeDir, id));
    }
    for (const id of await readdir(this.snapshotsDir).catch(() => [] as string[])) {
      if (id.includes('.tmp-')) await removeTree(join(this.snapshotsDir, id));
    }
    this.ctx.log.debug({ unmounted }, 'overlay: cleaned up');
  }

  /** Is the active snapshot `key` mounted now? (For tests and diagnostics.) */
  async isMounted(key: string): Promise<boolean> {
    return isMountPoint(join(this.activePath(key), 'rootfs'));
  }
}
