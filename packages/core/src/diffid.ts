import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { type Readable, Writable } from 'node:stream';
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
  const tmp = `${memo}.${process.pid}.tmp`;
  await fsp.writeFile(tmp, `${diffId}\n`);
  await fsp.rename(tmp, memo);
}

/**
 * The output layout's blob store as sources see it: a gzip layer put from a file (a base
 * tarball) has its diff id computed from a second read of the same file at the same time
 * (the copy into the layout and the decompression run on separate threads), instead of
 * decompressing the blob again afterwards.
 */
export function diffIdAwareBlobs(
  layout: OciLayout,
  cacheDir: string,
  found: (digest: string, diffId: Promise<string>) => void,
): BlobStore {
  return {
    has: (d) => layout.has(d),
    putStream: (s, mt, exp) => layout.putStream(s, mt, exp),
    putJson: (v, mt) => layout.putJson(v, mt),
    open: (d) => layout.open(d),
    readJson: (d) => layout.readJson(d),
    path: (d) => layout.path(d),
    async putFile(path, mediaType, expected) {
      if (mediaType !== MEDIA_TYPES.layerGzip) return layout.putFile(path, mediaType, expected);
      const diffId = diffIdOfStream(createReadStream(path), true);
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
