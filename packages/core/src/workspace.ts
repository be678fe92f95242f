import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { OciLayout, unpackLayer } from '@stacker/oci';
import {
  type BaseImage,
  type Cleaner,
  type DriverContext,
  type ImageConfig,
  type ImageManifest,
  type Logger,
  type StorageDriver,
  UserError,
  type Viewer,
} from '@stacker/plugin-api';
import { buildOnlyManifest } from './build-only.js';
import type { BuildSettings } from './engine.js';
import { DirLock } from './lock.js';
import type { PluginRegistry } from './registry.js';
import { SnapshotStore, shortId } from './snapshots.js';

/**
 * What the commands that work on built images (grab, chroot) share: the OCI layout, the
 * storage driver and the snapshots of images, under stacker's locks (a running build and
 * a grab never touch the roots at the same time).
 */
export class Workspace {
  private constructor(
    private readonly stackerDir: string,
    readonly layout: OciLayout,
    readonly driver: StorageDriver & Partial<Cleaner & Viewer>,
    readonly snapshots: SnapshotStore,
    private readonly locks: DirLock[],
  ) {}

  static async open(settings: BuildSettings, registry: PluginRegistry, log: Logger): Promise<Workspace> {
    let layout: OciLayout;
    try {
      await fsp.access(join(settings.ociDir, 'oci-layout'));
      layout = await OciLayout.open(settings.ociDir);
    } catch {
      throw new UserError(
        'no-oci-layout',
        `${settings.ociDir} is not an OCI layout; run stacker build first (or pass --oci-dir)`,
      );
    }
    await fsp.mkdir(settings.rootsDir, { recursive: true, mode: 0o700 });
    const locks = [DirLock.acquire(settings.stackerDir), DirLock.acquire(settings.rootsDir)];
    try {
      const factory = await registry.storage(settings.storageType);
      const dctx: DriverContext = {
        rootsDir: settings.rootsDir,
        log,
        unpack: (tar, dir, o) => unpackLayer(tar, dir, o),
      };
      const driver = await factory.create(dctx);
      return new Workspace(
        settings.stackerDir,
        layout,
        driver,
        new SnapshotStore(driver, layout, log),
        locks,
      );
    } catch (e) {
      for (const l of locks) l.release();
      throw e;
    }
  }

  /** The image a tag of the layout names, or else the last build of a build_only stanza. */
  async image(tag: string): Promise<BaseImage> {
    const tags = await this.layout.listTags();
    if (!tags.includes(tag)) {
      const manifest = await buildOnlyManifest(this.stackerDir, tag);
      if (manifest && (await this.layout.has(manifest))) return this.imageOf(manifest);
      throw new UserError(
        'no-tag',
        `no image tagged ${tag} in ${this.layout.dir}${tags.length ? ` (it has: ${tags.join(', ')})` : ''}, and no build_only layer of that name was built with this stacker dir; build it first`,
      );
    }
    const img = await this.layout.readImage(tag);
    return {
      manifest: img.manifest,
      manifestDigest: img.manifestDigest,
      config: img.config,
      identity: img.manifestDigest,
      layers: img.manifest.layers,
    };
  }

  /** The image of manifest `digest` (an untagged one: a build_only stanza's). */
  private async imageOf(digest: string): Promise<BaseImage> {
    const manifest = await this.layout.readJson<ImageManifest>(digest);
    const config = await this.layout.readJson<ImageConfig>(manifest.config.digest);
    return { manifest, manifestDigest: digest, config, identity: digest, layers: manifest.layers };
  }

  /**
   * Run `fn` on a throwaway writable snapshot of the image tagged `tag`: whatever `fn`
   * changes there is dropped afterwards. The image's own snapshots are made from its
   * blobs when this machine has none yet (they stay, as after a build).
   */
  async withThrowawaySnapshot<T>(
    tag: string,
    fn: (rootfs: string, image: BaseImage) => Promise<T>,
  ): Promise<T> {
    const image = await this.image(tag);
    const top = await this.snapshots.ensure(image);
    const key = `throwaway-${tag.replace(/[^A-Za-z0-9_.-]/g, '_')}-${shortId()}`;
    const rootfs = await this.driver.prepare(key, top);
    try {
      return await fn(rootfs, image);
    } finally {
      await this.driver.remove(key);
    }
  }

  close(): void {
    for (const l of this.locks) l.release();
  }
}
