import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
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

import { createSubvolume, deleteSubvolume, setReadOnly, snapshotSubvolume } from './btrfs.js';
import { diffTrees } from './diff.js';
import { snapshotInUse } from './errors.js';

/**
 * On-disk layout, all below `<rootsDir>/btrfs/` (which must be on a btrfs filesystem):
 *
 *   snapshots/<id>/fs          committed snapshot: a read-only subvolume
 *   snapshots/<id>/meta.json   {name, parent}
 *   active/<id>/fs             active snapshot: a writable subvolume, a snapshot of its
 *                              parent's fs (or a new, empty subvolume)
 *   active/<id>/meta.json      {key, parent}
 *
 * `<id>` is the start of sha256(name or key). Nothing is ever mounted: a subvolume is a
 * directory, so the driver works the same as real root and as root of a user namespace
 * (deleting needs the filesystem mounted with `user_subvol_rm_allowed` there).
 * Directories are published by rename from a `.tmp-` name, so a killed build leaves
 * either a whole snapshot or a `.tmp-` leftover that cleanup() deletes.
 */
const TMP = '.tmp-';

export class BtrfsDriver implements StorageDriver, Cleaner, Viewer {
  readonly name = 'btrfs';
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

  static async open(ctx: DriverContext): Promise<BtrfsDriver> {
    const driver = new BtrfsDriver(ctx, join(ctx.rootsDir, 'btrfs'));
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

  async prepare(key: string, parent: string | undefined): Promise<string> {
    const path = this.activePath(key);
    if (existsSync(path)) throw new Error(`btrfs: active snapshot ${key} already exists`);
    if (parent !== undefined && !(await this.committedMeta(parent))) {
      throw new Error(`btrfs: parent snapshot ${parent} does not exist`);
    }
    const tmp = `${path}${TMP}${randomBytes(4).toString('hex')}`;
    await mkdir(tmp);
    try {
      if (parent === undefined) await createSubvolume(join(tmp, 'fs'));
      else await snapshotSubvolume(join(this.committedPath(parent), 'fs'), join(tmp, 'fs'));
      const meta: ActiveMeta = parent === undefined ? { key } : { key, parent };
      await writeFile(join(tmp, 'meta.json'), `${JSON.stringify(meta)}\n`);
      await rename(tmp, path);
    } catch (e) {
      await removeSnapshotDir(tmp).catch(() => undefined);
      throw e;
    }
    this.ctx.log.debug({ key, parent }, 'btrfs: prepared');
    return join(path, 'fs');
  }

  rootfs(key: string): string | undefined {
    return this.activeMetaSync(key) ? join(this.activePath(key), 'fs') : undefined;
  }

  async unpackLayer(key: string, layerTar: Readable): Promise<void> {
    const rootfs = this.rootfs(key);
    if (!rootfs) throw new Error(`btrfs: no active snapshot ${key}`);
    await this.ctx.unpack(layerTar, rootfs, { whiteouts: 'delete' });
  }

  async *diff(key: string): AsyncIterable<Change> {
    const meta = this.activeMetaSync(key);
    if (!meta) throw new Error(`btrfs: no active snapshot ${key}`);
    let lower: string | undefined;
    if (meta.parent !== undefined) {
      if (!(await this.committedMeta(meta.parent)))
        throw new Error(`btrfs: parent snapshot ${meta.parent} of ${key} is gone`);
      lower = join(this.committedPath(meta.parent), 'fs');
    }
    yield* diffTrees(join(this.activePath(key), 'fs'), lower);
  }

  async commit(name: string, key: string): Promise<void> {
    const meta = this.activeMetaSync(key);
    if (!meta) throw new Error(`btrfs: no active snapshot ${key}`);
    const active = this.activePath(key);
    const dest = this.committedPath(name);
    if (existsSync(dest)) {
      if (!(await this.committedMeta(name)))
        throw new Error(`btrfs: ${dest} is not the snapshot ${name} (id collision or damaged meta.json)`);
      this.ctx.log.debug({ name, key }, 'btrfs: already committed, dropping the active snapshot');
      await removeSnapshotDir(active);
      return;
    }
    const tmp = `${dest}${TMP}${randomBytes(4).toString('hex')}`;
    await mkdir(tmp);
    await rename(join(active, 'fs'), join(tmp, 'fs'));
    await setReadOnly(join(tmp, 'fs'), true);
    const committed: CommittedMeta = meta.parent === undefined ? { name } : { name, parent: meta.parent };
    await writeFile(join(tmp, 'meta.json'), `${JSON.stringify(committed)}\n`);
    await rename(tmp, dest);
    await rm(active, { recursive: true, force: true });
    this.ctx.log.debug({ name, key, parent: meta.parent }, 'btrfs: committed');
  }

  async remove(keyOrName: string): Promise<void> {
    if (this.activeMetaSync(keyOrName)) {
      await removeSnapshotDir(this.activePath(keyOrName));
      return;
    }
    if (!(await this.committedMeta(keyOrName))) return;
    // Committed children are whole subvolumes of their own; only an active child still
    // needs its parent (to diff against).
    const child = await this.activeChildOf(keyOrName);
    if (child) throw snapshotInUse(keyOrName, child);
    await removeSnapshotDir(this.committedPath(keyOrName));
  }

  private async activeChildOf(name: string): Promise<string | undefined> {
    for (const id of await readdir(this.activeDir).catch(() => [] as string[])) {
      const text = await readFile(join(this.activeDir, id, 'meta.json'), 'utf8').catch(() => undefined);
      if (!text) continue;
      const meta = JSON.parse(text) as ActiveMeta;
      if (meta.parent === name) return meta.key;
    }
    return undefined;
  }

  /** A view of committed `name` as active snapshot `key` (writable; discard it with remove). */
  async view(key: string, name: string): Promise<string> {
    return this.prepare(key, name);
  }

  /** Delete every active snapshot and half-made directory (a killed build's leftovers). */
  async cleanup(): Promise<void> {
    let removed = 0;
    for (const id of await readdir(this.activeDir).catch(() => [] as string[])) {
      await removeSnapshotDir(join(this.activeDir, id));
      removed++;
    }
    for (const id of await readdir(this.snapshotsDir).catch(() => [] as string[])) {
      if (!id.includes(TMP)) continue;
      await removeSnapshotDir(join(this.snapshotsDir, id));
      removed++;
    }
    this.ctx.log.debug({ removed }, 'btrfs: cleaned up');
  }
}

/** Delete a snapshot directory: its subvolume (if any), then the directory itself. */
async function removeSnapshotDir(dir: string): Promise<void> {
  await deleteSubvolume(join(dir, 'fs'));
  await rm(dir, { recursive: true, force: true });
}
