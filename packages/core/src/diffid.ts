import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { layerGunzip, type OciLayout } from '@stacker/oci';
import { type BlobStore, type Descriptor, MEDIA_TYPES } from '@stacker/plugin-api';

/**
 * The diff id (sha256 of the uncompressed tar) of a layer blob, computed by streaming it
 * once and remembered in `cacheDir` by the blob's digest.
 */
export async function computeDiffId(layout: OciLayout, layer: Descriptor, cacheDir: string): Promise<string> {
  const known = await readDiffId(cacheDir, layer.digest);
  if (known) return known;
  const diffId = await diffIdOfStream(await layout.open(layer.digest), layer.mediaType.includes('gzip'));
  await rememberDiffId(cacheDir, layer.digest, diffId);
  return diffId;
}

/** The diff id of a (gzip or plain) tar stream. */
export async function diffIdOfStream(src: Readable, gzip: boolean): Promise<string> {
  const h = createHash('sha256');
  const sink = new Writable({
    write(chunk, _enc, cb) {
      h.update(chunk);
      cb();
    },
  });
  if (gzip) await pipeline(src, layerGunzip(), sink);
  else await pipeline(src, sink);
  return `sha256:${h.digest('hex')}`;
}

export async function readDiffId(cacheDir: string, digest: string): Promise<string | undefined> {
  try {
    const v = (await fsp.readFile(join(cacheDir, digest.replace(/^sha256:/, '')), 'utf8')).trim();
    if (/^sha256:[0-9a-f]{64}$/.test(v)) return v;
  } catch {
    /* not computed yet */
  }
  return undefined;
}

export async function rememberDiffId(cacheDir: string, digest: string, diffId: string): Promise<void> {
  const memo = join(cacheDir, digest.replace(/^sha256:/, ''));
  await fsp.mkdir(cacheDir, { recursive: true });
  // unique: two stanzas importing the same tarball at once both remember it
  const tmp = `${memo}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await fsp.writeFile(tmp, `${diffId}\n`);
  await fsp.rename(tmp, memo);
}

/**
 * Where a base tarball's layer can be unpacked while its diff id is computed (the storage
 * side of diffIdAwareBlobs): the engine's snapshot store.
 */
export interface LayerStager {
  /** Is there already a committed snapshot of the single layer with this diff id? */
  has(diffId: string): Promise<boolean>;
  /** Unpack an uncompressed layer tar into a new snapshot without a parent; its key. */
  stage(tar: Readable): Promise<string>;
  /** The snapshot `key` holds the layer of `diffId`: commit it when an image needs it. */
  offer(diffId: string, key: string): Promise<void>;
  /** Discard a staged snapshot. */
  drop(key: string): Promise<void>;
}

/** sha256 of a file, as a digest. */
async function fileDigest(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), h);
  return `sha256:${h.digest('hex')}`;
}

/**
 * Decompress a gzip layer file once: everything goes through the diff id's hash, and the
 * tar also into `stager` (until the unpacker stops reading at the end-of-archive blocks;
 * the hash still takes the rest). Returns the diff id and the staged snapshot's key.
 */
async function unpackWhileHashing(
  path: string,
  stager: LayerStager,
): Promise<{ diffId: string; key: string }> {
  const h = createHash('sha256');
  const tar = new PassThrough({ highWaterMark: 1 << 22 });
  const gz = layerGunzip();
  const file = createReadStream(path, { highWaterMark: 1 << 20 });
  file.on('error', (e) => gz.destroy(e));
  file.pipe(gz);
  let unpackFailed = false;
  let feedError: unknown;
  const staging = stager.stage(tar).catch((e: unknown) => {
    unpackFailed = true;
    gz.destroy();
    throw e;
  });
  const feed = (async () => {
    try {
      for await (const chunk of gz) {
        h.update(chunk as Buffer);
        if (tar.destroyed || tar.writableEnded) continue;
        if (!tar.write(chunk)) {
          await new Promise<void>((resolve) => {
            const done = () => {
              tar.off('drain', done);
              tar.off('close', done);
              resolve();
            };
            tar.on('drain', done);
            tar.on('close', done);
          });
        }
      }
      if (!tar.destroyed) tar.end();
    } catch (e) {
      // a failed unpack stops the decompression: its own error is the one to report
      if (!unpackFailed) feedError = e;
      tar.destroy(e as Error);
    } finally {
      file.destroy();
    }
  })();
  const [, staged] = await Promise.allSettled([feed, staging]);
  if (feedError !== undefined) {
    // a corrupt gzip (or an unreadable file) is what to say, even after a complete tar
    if (staged.status === 'fulfilled') await stager.drop(staged.value).catch(() => {});
    throw feedError;
  }
  if (staged.status === 'rejected') throw staged.reason;
  return { diffId: `sha256:${h.digest('hex')}`, key: staged.value };
}

/**
 * The output layout's blob store as sources see it: a gzip layer put from a file (a base
 * tarball) has its diff id computed from a second read of the same file at the same time
 * as the copy into the layout (on separate threads), instead of decompressing the blob
 * again afterwards. With a `stager`, that one decompression also unpacks the layer into a
 * snapshot (unless the diff id is remembered and its snapshot exists): a first build from a
 * tarball reads and decompresses it once, not once for the diff id and again to unpack.
 */
export function diffIdAwareBlobs(
  layout: OciLayout,
  cacheDir: string,
  found: (digest: string, diffId: Promise<string>) => void,
  stager?: LayerStager,
): BlobStore {
  // one unpack per tarball, however many stanzas resolve it at once
  const inflight = new Map<string, Promise<string>>();
  return {
    has: (d) => layout.has(d),
    putStream: (s, mt, exp) => layout.putStream(s, mt, exp),
    putJson: (v, mt) => layout.putJson(v, mt),
    open: (d) => layout.open(d),
    readJson: (d) => layout.readJson(d),
    path: (d) => layout.path(d),
    async putFile(path, mediaType, expected) {
      if (mediaType !== MEDIA_TYPES.layerGzip) return layout.putFile(path, mediaType, expected);
      let diffId: Promise<string>;
      if (stager) {
        const digest = await fileDigest(path);
        const known = await readDiffId(cacheDir, digest);
        // no await from here until `inflight` has it: a second stanza on the same tarball
        // must find this one's unpack, not start its own
        let p = inflight.get(digest);
        if (!p) {
          p =
            known && (await stager.has(known))
              ? Promise.resolve(known)
              : unpackWhileHashing(path, stager).then(async ({ diffId, key }) => {
                  await stager.offer(diffId, key);
                  return diffId;
                });
          inflight.set(digest, p);
          p.catch(() => inflight.delete(digest));
        }
        diffId = p;
      } else {
        diffId = diffIdOfStream(createReadStream(path), true);
      }
      // handled here so a failure is not an unhandled rejection while the copy runs; it is
      // reported where the diff id is awaited (imageFromLayers), as before this overlap
      diffId.catch(() => {});
      const desc = await layout.putFile(path, mediaType, expected);
      found(
        desc.digest,
        diffId.then(async (id) => {
          await rememberDiffId(cacheDir, desc.digest, id);
          return id;
        }),
      );
      return desc;
    },
  };
}
