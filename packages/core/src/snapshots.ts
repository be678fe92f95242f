import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';

import { layerGunzip, type OciLayout, overlayTarToOci } from '@stacker/oci';
import {
  type BaseImage,
  type Descriptor,
  type Logger,
  type StorageDriver,
  UserError,
} from '@stacker/plugin-api';
import { chainIds } from './chain.js';
import type { LayerStager } from './diffid.js';

/** A short random suffix for throwaway snapshot keys. */
export function shortId(): string {
  return randomBytes(6).toString('hex');
}

/** A layer blob as an uncompressed tar stream (in OCI's whiteout style). */
export async function openLayerTar(layout: OciLayout, layer: Descriptor): Promise<Readable> {
  // stacker's squashfs layers (overlay-style whiteouts inside): read by sqfs2tar
  if (layer.mediaType.includes('squashfs')) return squashfsAsTar(layout, layer);
  const s = await layout.open(layer.digest);
  if (layer.mediaType.endsWith('gzip') || layer.mediaType.endsWith('.gzip')) return s.pipe(layerGunzip());
  if (layer.mediaType.endsWith('+zstd')) {
    throw new UserError(
      'layer-type',
      `layer ${layer.digest} is zstd-compressed, which this stacker cannot unpack yet`,
    );
  }
  return s;
}

/**
 * A squashfs layer as an OCI tar: `sqfs2tar` (squashfs-tools-ng) streams its tree as a
 * tar, which `overlayTarToOci` turns into OCI whiteouts. A failure of sqfs2tar fails the
 * stream with what it said.
 */
async function squashfsAsTar(layout: OciLayout, layer: Descriptor): Promise<Readable> {
  if (!(await layout.has(layer.digest))) {
    throw new UserError('blob-missing', `layer ${layer.digest} is not in the OCI layout ${layout.dir}`);
  }
  const child = spawn('sqfs2tar', [layout.path(layer.digest)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4000) stderr += d;
  });
  const spawned = await new Promise<Error | undefined>((res) => {
    child.once('spawn', () => res(undefined));
    child.once('error', (e) => res(e));
  });
  if (spawned) {
    throw new UserError(
      'sqfs2tar-missing',
      (spawned as NodeJS.ErrnoException).code === 'ENOENT'
        ? `layer ${layer.digest} is a squashfs layer, and sqfs2tar is not on PATH; install squashfs-tools-ng to use squashfs images`
        : `could not run sqfs2tar for layer ${layer.digest}: ${spawned.message}`,
    );
  }
  // Read from now on: node resumes (and so drops) a child's unread output when it exits,
  // and a small layer's sqfs2tar exits before the caller starts reading
  const tar = child.stdout.pipe(new PassThrough({ highWaterMark: 1 << 20 }));
  const out = overlayTarToOci(tar);
  child.once('close', (code, signal) => {
    if (code === 0) return;
    out.destroy(
      new UserError(
        'sqfs2tar',
        `sqfs2tar could not read squashfs layer ${layer.digest} (${signal ?? `exit ${code}`}): ${stderr.trim()}`,
      ),
    );
  });
  out.once('close', () => {
    if (child.exitCode === null) child.kill();
  });
  return out;
}

/**
 * The committed snapshots of images: every layer of an image becomes a committed snapshot
 * named by its chain id, so images that share lower layers share snapshots. Work on one
 * name is serialised (two stanzas on one base unpack it once).
 */
export class SnapshotStore implements LayerStager {
  private locks = new Map<string, Promise<void>>();
  /** Snapshots unpacked while a base tarball's diff id was computed, by diff id. */
  private staged = new Map<string, string>();

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

  async has(diffId: string): Promise<boolean> {
    return this.driver.exists(chainIds([diffId])[0]);
  }

  stage(tar: Readable): Promise<string> {
    return this.unpackNew(tar, undefined);
  }

  /** A new active snapshot on `parent` with the layer `tar` unpacked in it (none is left
   * behind when that fails); its key. */
  private async unpackNew(tar: Readable, parent: string | undefined): Promise<string> {
    const key = `extract-${shortId()}`;
    try {
      await this.driver.prepare(key, parent);
    } catch (e) {
      tar.destroy();
      throw e;
    }
    try {
      this.log.debug(`unpacking a layer into snapshot ${key}`);
      await this.driver.unpackLayer(key, tar);
      this.log.debug(`unpacked snapshot ${key}`);
    } catch (e) {
      await this.driver.remove(key).catch(() => {});
      throw e;
    }
    return key;
  }

  async offer(diffId: string, key: string): Promise<void> {
    if (this.staged.has(diffId)) await this.drop(key);
    else this.staged.set(diffId, key);
  }

  async drop(key: string): Promise<void> {
    await this.driver.remove(key);
  }

  /** Remove staged snapshots no image took (a build that failed before needing them). */
  async dropStaged(): Promise<void> {
    for (const key of this.staged.values()) await this.drop(key).catch(() => {});
    this.staged.clear();
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
        // a first layer already unpacked while its diff id was computed
        const staged = i === 0 ? this.staged.get(diffIds[0]) : undefined;
        if (staged) this.staged.delete(diffIds[0]);
        if (await this.driver.exists(name)) {
          if (staged) await this.drop(staged).catch(() => {});
          return;
        }
        if (!staged) this.log.debug(`unpacking layer ${layer.digest}`);
        const key = staged ?? (await this.unpackNew(await openLayerTar(this.layout, layer), parentName));
        try {
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
