import type { Readable } from 'node:stream';
import type { Logger } from './logger.js';

/**
 * A storage driver keeps root filesystems as snapshots, modelled on containerd's
 * snapshotter. One vocabulary throughout:
 *
 * - `key`    names an *active* snapshot: writable, has a rootfs path, may not be a parent.
 * - `name`   names a *committed* snapshot: read-only, may be the parent of others.
 * - `parent` is the committed snapshot an active one starts from (none = empty).
 *
 * Lifecycle:  prepare(key, parent) -> active -> commit(name, key) -> committed
 *                                            \-> remove(key)        (discard)
 *
 * Worked example: importing a base layer, then running a stanza on top of it
 *
 *     // base layer L1 (chain id c1) on nothing:
 *     await driver.prepare('extract-c1', undefined);
 *     await driver.unpackLayer('extract-c1', openLayerTar());   // core supplies the tar
 *     await driver.commit('c1', 'extract-c1');
 *     // a stanza on top of c1:
 *     const rootfs = await driver.prepare('build-web', 'c1');   // mounted, writable
 *     // ... runc runs the `run` steps in `rootfs` ...
 *     for await (const change of driver.diff('build-web')) { ... } // core writes the tar
 *     await driver.commit('c2', 'build-web');                   // c2 = chain id of the new layer
 *
 * A driver never writes tar or OCI: core turns the change stream into a layer, and gives
 * the driver an `unpack` function (in `DriverContext`) that applies a layer tar onto a
 * directory in the whiteout style the driver asks for.
 */
export interface StorageDriver {
  readonly name: string;
  /** Does a committed snapshot `name` exist? */
  exists(name: string): Promise<boolean>;
  /** Create the active snapshot `key` on top of committed `parent`; returns its rootfs
   * path, ready to be written (mounted if the driver mounts). */
  prepare(key: string, parent: string | undefined): Promise<string>;
  /** Apply one layer (an uncompressed tar stream) onto the active snapshot `key`. */
  unpackLayer(key: string, layerTar: Readable): Promise<void>;
  /** The changes of active snapshot `key` against its parent, sorted by path, parents
   * before children. */
  diff(key: string): AsyncIterable<Change>;
  /** Make active `key` the committed snapshot `name`; `key` is gone afterwards. */
  commit(name: string, key: string): Promise<void>;
  /** Remove an active or committed snapshot (a committed one only if it has no children
   * that the driver needs it for). Unmounts first. Removing a missing one is not an error. */
  remove(keyOrName: string): Promise<void>;
  /** Path of the rootfs of an active snapshot (undefined if not active). */
  rootfs(key: string): string | undefined;
}

/** Optional ability: release everything (mounts, temp dirs) left by an interrupted build. */
export interface Cleaner {
  cleanup(): Promise<void>;
}

/** Optional ability: a read-only view of a committed snapshot (for grab, inspect, chroot). */
export interface Viewer {
  view(key: string, name: string): Promise<string>;
}

/**
 * One entry of a change set. `path` is relative to the rootfs, '/'-separated, without a
 * leading slash. For `add`/`modify`, `source` is the absolute path on disk to read the
 * entry's metadata and content from (lstat, readlink, xattrs).
 */
export type Change =
  | { kind: 'add' | 'modify'; path: string; source: string }
  | { kind: 'delete'; path: string }
  /** The directory replaces the parent's: its lower contents are hidden. It comes right
   * after the directory's own `add` entry (as `d/.wh..wh..opq` follows `d/` in a tar),
   * before the directory's new children. */
  | { kind: 'opaque'; path: string };

export type WhiteoutStyle =
  /** Deletions are applied: the path is removed (btrfs, plain directories). */
  | 'delete'
  /** Deletions are recorded as overlayfs does with `userxattr`: a 0/0 character device
   * for a deleted path, `user.overlay.opaque=y` on an opaque directory. */
  | 'overlay';

export interface UnpackOptions {
  whiteouts: WhiteoutStyle;
}

export interface DriverContext {
  /** The roots directory (`--roots-dir`): the driver keeps all its state below it. */
  rootsDir: string;
  log: Logger;
  /** Apply a layer tar onto `dir` (never writing outside it). Supplied by core. */
  unpack(layerTar: Readable, dir: string, options: UnpackOptions): Promise<void>;
}

export interface StorageDriverFactory {
  /** The `--storage-type` value. */
  type: string;
  /** Human sentence on what the driver needs (shown by `stacker check`). */
  description?: string;
  /** Check the machine can use this driver; throws a user error saying how to fix it. */
  check?(ctx: DriverContext): Promise<void>;
  create(ctx: DriverContext): Promise<StorageDriver & Partial<Cleaner & Viewer>>;
}

/** What a plugin module exports for storage drivers. */
export interface StorageModule {
  storage: StorageDriverFactory[];
}
