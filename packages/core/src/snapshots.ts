import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';

import { layerGunzip, type OciLayout } from '@stacker/oci';
import {
  type BaseImage,
  type Descriptor,
  type Logger,
  type StorageDriver,
  UserError,
} from '@stacker/plugin-api';
import { chainIds } from './chain.js';

/** A short random suffix for throwaway snapshot keys. */
export function shortId(): string {
  return randomBytes(6).toString('hex');
}

/** A layer blob as an uncompressed tar stream. */
export async function openLayerTar(layout: OciLayout, layer: Descriptor): Promise<Readable> {
  const s = await layout.open(layer.digest);
  if (layer.mediaType.endsWith('gzip') || layer.mediaType.endsWith('.gzip')) return s.pipe(layerGunzip());
  if (layer.mediaType.endsWith('+zstd')) {
    throw new UserError(
      'layer-type',
      `layer ${layer.digest} is zstd-compressed, which this stacker cannot unpack yet`,
    );
  }
  if (layer.mediaType.includes('squashfs')) {
    throw new UserError(
      'layer-type',
      `layer ${layer.digest} is a squashfs layer (${layer.mediaType}); build from the tar flavour of the image instead`,
    );
  }
  return s;
}

/**
 * The committed snapshots of images: every layer of an image becomes a committed snapshot
 * named by its chain id, so images that share lower layers share snapshots. Work on one
 * name is serialised (two stanzas on one base unpack it once).
 */
export class SnapshotStore {
  private locks = new Map<string, Promise<void>>();

  constructor(
    private readonly driver: StorageDriver,
    private readonly layout: OciLayout,
    private readonly log: Logger,
  ) {}

  /** Run `fn` while holding the lock of snapshot `name`. */
  async withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => {
      release = r;
    });
    this.locks.set(
      name,
      prev.then(() => mine),
    );
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Make sure every layer of `image` is a committed snapshot; returns the top one's name
   * (undefined for an image without layers). */
  async ensure(image: BaseImage): Promise<string | undefined> {
    const diffIds = image.config.rootfs.diff_ids;
    if (diffIds.length !== image.manifest.layers.length) {
      throw new UserError(
        'bad-image',
        `image ${image.identity} has ${image.manifest.layers.length} layers but ${diffIds.length} diff ids in its config`,
      );
    }
    const chains = chainIds(diffIds);
    let parent: string | undefined;
    for (let i = 0; i < chains.length; i++) {
      const name = chains[i];
      const layer = image.manifest.layers[i];
      const parentName = parent;
      await this.withLock(name, async () => {
        if (await this.driver.exists(name)) return;
        const key = `extract-${shortId()}`;
        await this.driver.prepare(key, parentName);
        try {
          this.log.debug(`unpacking layer ${layer.digest}`);
          await this.driver.unpackLayer(key, await openLayerTar(this.layout, layer));
          await this.driver.commit(name, key);
        } catch (e) {
          await this.driver.remove(key).catch(() => {});
          throw e;
        }
      });
      parent = name;
    }
    return parent;
  }
}
