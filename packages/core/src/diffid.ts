import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import type { OciLayout } from '@stacker/oci';
import type { Descriptor } from '@stacker/plugin-api';

/**
 * The diff id (sha256 of the uncompressed tar) of a layer blob, computed by streaming it
 * once and remembered in `cacheDir` by the blob's digest.
 */
export async function computeDiffId(layout: OciLayout, layer: Descriptor, cacheDir: string): Promise<string> {
  const hex = layer.digest.replace(/^sha256:/, '');
  const memo = join(cacheDir, hex);
  try {
    const v = (await fsp.readFile(memo, 'utf8')).trim();
    if (/^sha256:[0-9a-f]{64}$/.test(v)) return v;
  } catch {
    /* not computed yet */
  }
  const h = createHash('sha256');
  const src = await layout.open(layer.digest);
  const gz = layer.mediaType.includes('gzip');
  const sink = new Writable({
    write(chunk, _enc, cb) {
      h.update(chunk);
      cb();
    },
  });
  if (gz) await pipeline(src, createGunzip(), sink);
  else await pipeline(src, sink);
  const diffId = `sha256:${h.digest('hex')}`;
  await fsp.mkdir(cacheDir, { recursive: true });
  const tmp = `${memo}.${process.pid}.tmp`;
  await fsp.writeFile(tmp, `${diffId}\n`);
  await fsp.rename(tmp, memo);
  return diffId;
}
