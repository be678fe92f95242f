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

import {
  dropUnchangedCopyUps,
  freshWorkDir,
  isMountPoint,
  OVERLAY_FLAGS,
  removeTree,
  unmount,
  unmountBelow,
  walkUpper,
} from '@stacker/storage-overlay';
import type { Options } from 'execa';
import { applyUpper } from './apply-upper.js';
import { createSubvolume, deleteSubvolume, setReadOnly, snapshotSubvolume } from './btrfs.js';
import { addTree } from './diff.js';
import { snapshotInUse } from './errors.js';

/** execa, imported on first use: loading it costs a quarter second, and a cached build runs nothing. */
const execa = async <O extends Options = Options>(file: string, args: readonly string[], options?: O) =>
  (await import('execa')).execa(file, args, options as O);

/**
 * On-disk layout, all below `<rootsDir>/btrfs/` (which must be on a btrfs filesystem):
 *
 *   snapshots/<id>/sv          committed snapshot: a read-only subvolume
 *   snapshots/<id>/sv/fs       ... holding the root filesystem
 *   snapshots/<id>/meta.json   {name, parent}
 *   active/<id>/sv             active snapshot: a writable subvolume, a snapshot of its
 *                              parent's sv (or a new one, with an empty fs/)
 *   active/<id>/sv/upper       with a parent: the overlay upper dir and ...
 *   active/<id>/sv/work        ... its work dir, in the same subvolume as fs/
 *   active/<id>/mnt            with a parent: the overlay (lower = the parent's sv/fs)
 *   active/<id>/meta.json      {key, parent}
 *
 * Why an overlay on a btrfs snapshot: rootless btrfs cannot say what changed in a snapshot
 * (`btrfs subvolume find-new` and `btrfs send` need CAP_SYS_ADMIN in the initial
 * namespace), and comparing a snapshot with its parent means an lstat of every path of the
 * base, for every image. With the parent as the overlay's only lower, the upper dir is the
 * change set, whatever the size of the base. Commit then moves the upper's entries into
 * sv/fs by rename (same subvolume: no data copied), so each committed snapshot is a whole,
 * flat tree: a child always mounts one lower, however deep its chain of `built` parents,
 * and the base's data is shared by every snapshot.
 *
 * `<id>` is the start of sha256(name or key). Directories are published by rename from a
 * `.tmp-` name, so a killed build leaves either a whole snapshot or a leftover that
 * cleanup() deletes. Deleting subvolumes unprivileged needs the filesystem mounted with
 * `user_subvol_rm_allowed`.
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
    await mkdir(ctx.rootsDir, { recursive: true });
    // mountinfo shows real paths: compare against the real one.
    const driver = new BtrfsDriver(ctx, join(await realpath(ctx.rootsDir), 'btrfs'));
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

  /** The meta of committed `name`, if it is a whole snapshot in this layout. */
  private async committedMeta(name: string): Promise<CommittedMeta | undefined> {
    const meta = await readCommittedMeta(this.snapshotsDir, name);
    return meta && existsSync(join(this.committedPath(name), 'sv', 'fs')) ? meta : undefined;
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
      const sv = join(tmp, 'sv');
      if (parent === undefined) {
        await createSubvolume(sv);
        await mkdir(join(sv, 'fs'), { mode: 0o755 });
      } else {
        await snapshotSubvolume(join(this.committedPath(parent), 'sv'), sv);
        await mkdir(join(sv, 'upper'), { mode: 0o755 });
        await mkdir(join(sv, 'work'), { mode: 0o700 });
        await mkdir(join(tmp, 'mnt'), { mode: 0o755 });
      }
      const meta: ActiveMeta = parent === undefined ? { key } : { key, parent };
      await writeFile(join(tmp, 'meta.json'), `${JSON.stringify(meta)}\n`);
      await rename(tmp, path);
    } catch (e) {
      await removeSnapshotDir(tmp).catch(() => undefined);
      throw e;
    }
    if (parent !== undefined) {
      try {
        await this.mount(key, parent);
      } catch (e) {
        await removeSnapshotDir(path).catch(() => undefined);
        throw e;
      }
    }
    this.ctx.log.debug({ key, parent }, 'btrfs: prepared');
    return this.rootfs(key) as string;
  }

  rootfs(key: string): string | undefined {
    const meta = this.activeMetaSync(key);
    if (!meta) return undefined;
    return join(this.activePath(key), meta.parent === undefined ? join('sv', 'fs') : 'mnt');
  }

  /** Mount the overlay of active `key`: the parent's tree below, the snapshot's upper dir on top. */
  private async mount(key: string, parent: string): Promise<void> {
    const options = `lowerdir=../../snapshots/${snapshotId(parent)}/sv/fs,upperdir=sv/upper,workdir=sv/work,${OVERLAY_FLAGS}`;
    const r = await execa('mount', ['-t', 'overlay', 'overlay', '-o', options, 'mnt'], {
      cwd: this.activePath(key),
      reject: false,
    });
    if (r.exitCode !== 0) {
      throw new Error(
        `btrfs: mounting ${key} on ${parent} failed: ${r.stderr.trim() || `exit ${r.exitCode}`}`,
      );
    }
  }

  async unpackLayer(key: string, layerTar: Readable): Promise<void> {
    const meta = this.activeMetaSync(key);
    if (!meta) throw new Error(`btrfs: no active snapshot ${key}`);
    const sv = join(this.activePath(key), 'sv');
    if (meta.parent === undefined) {
      await this.ctx.unpack(layerTar, join(sv, 'fs'), { whiteouts: 'delete' });
      return;
    }
    // Changing an upper dir under a mounted overlay is undefined behaviour: unmount,
    // write the layer straight into the upper dir, mount again.
    await unmount(join(this.activePath(key), 'mnt'));
    await this.ctx.unpack(layerTar, join(sv, 'upper'), { whiteouts: 'overlay' });
    await freshWorkDir(join(sv, 'work'));
    await this.mount(key, meta.parent);
  }

  async *diff(key: string): AsyncIterable<Change> {
    const meta = this.activeMetaSync(key);
    if (!meta) throw new Error(`btrfs: no active snapshot ${key}`);
    const sv = join(this.activePath(key), 'sv');
    if (meta.parent === undefined) {
      yield* addTree(join(sv, 'fs'), '');
      return;
    }
    if (!(await this.committedMeta(meta.parent)))
      throw new Error(`btrfs: parent snapshot ${meta.parent} of ${key} is gone`);
    const lower = join(this.committedPath(meta.parent), 'sv', 'fs');
    yield* dropUnchangedCopyUps(walkUpper(join(sv, 'upper'), ''), [lower]);
  }

  async commit(name: string, key: string): Promise<void> {
    const meta = this.activeMetaSync(key);
    if (!meta) throw new Error(`btrfs: no active snapshot ${key}`);
    const active = this.activePath(key);
    const sv = join(active, 'sv');
    if (meta.parent !== undefined) await unmount(join(active, 'mnt'));
    const dest = this.committedPath(name);
    if (existsSync(dest)) {
      if (await this.committedMeta(name)) {
        this.ctx.log.debug({ name, key }, 'btrfs: already committed, dropping the active snapshot');
        await removeSnapshotDir(active);
        return;
      }
      if (!(await readCommittedMeta(this.snapshotsDir, name)))
        throw new Error(`btrfs: ${dest} is not the snapshot ${name} (id collision or damaged meta.json)`);
      // the same snapshot in an older layout (the subvolume was the rootfs): replace it
      await removeSnapshotDir(dest);
    }
    if (meta.parent !== undefined) {
      await applyUpper(join(sv, 'upper'), join(sv, 'fs'));
      await removeTree(join(sv, 'upper'));
      await removeTree(join(sv, 'work'));
    }
    const tmp = `${dest}${TMP}${randomBytes(4).toString('hex')}`;
    await mkdir(tmp);
    await rename(sv, join(tmp, 'sv'));
    // read-only once moved: a read-only subvolume cannot be renamed (its `..` is in it)
    await setReadOnly(join(tmp, 'sv'), true);
    const committed: CommittedMeta = meta.parent === undefined ? { name } : { name, parent: meta.parent };
    await writeFile(join(tmp, 'meta.json'), `${JSON.stringify(committed)}\n`);
    await rename(tmp, dest);
    await removeTree(active);
    this.ctx.log.debug({ name, key, parent: meta.parent }, 'btrfs: committed');
  }

  async remove(keyOrName: string): Promise<void> {
    const active = this.activePath(keyOrName);
    if (this.activeMetaSync(keyOrName)) {
      await unmount(join(active, 'mnt'));
      await removeSnapshotDir(active);
      return;
    }
    if (!(await readCommittedMeta(this.snapshotsDir, keyOrName))) return;
    // Committed children are whole subvolumes of their own; only an active child still
    // needs its parent (its overlay's lower).
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

  /** Unmount and delete every active snapshot and half-made directory (a killed build's leftovers). */
  async cleanup(): Promise<void> {
    const unmounted = await unmountBelow(this.dir);
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
    this.ctx.log.debug({ unmounted, removed }, 'btrfs: cleaned up');
  }

  /** Is the overlay of active snapshot `key` mounted now? (For tests and diagnostics.) */
  async isMounted(key: string): Promise<boolean> {
    return isMountPoint(join(this.activePath(key), 'mnt'));
  }
}

/**
 * Delete a snapshot directory: its subvolume (`sv`, or `fs` in the older layout where the
 * subvolume was the rootfs), then the directory itself.
 */
async function removeSnapshotDir(dir: string): Promise<void> {
  await deleteSubvolume(join(dir, 'sv'));
  await deleteSubvolume(join(dir, 'fs'));
  await removeTree(dir);
}
