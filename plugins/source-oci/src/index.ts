import { OciLayout } from '@stacker/oci';
import { type Descriptor, MEDIA_TYPES, type Source, UserError } from '@stacker/plugin-api';
import { z } from 'zod';

const schema = z.looseObject({
  type: z.literal('oci'),
  url: z.string().min(1, 'url: PATH:TAG of a local OCI layout'),
});
type OciFrom = z.infer<typeof schema>;

/** `path:tag` as stacker reads it: the first colon separates (tags may contain colons),
 * so `oci:base` is the tag `base` of the layout `./oci`. */
export function splitOciUrl(url: string): { path: string; tag: string } | undefined {
  const u = url;
  const i = u.indexOf(':');
  if (i <= 0 || i === u.length - 1) return undefined;
  return { path: u.slice(0, i), tag: u.slice(i + 1) };
}

/**
 * `from: {type: oci, url: PATH:TAG}`: an image in a local OCI layout. Its blobs are linked
 * (or copied) into the build's layout by digest and verified; nothing is recompressed.
 */
export const ociSource: Source<OciFrom> = {
  type: 'oci',
  schema,
  async resolve(from, ctx) {
    const parts = splitOciUrl(from.url);
    if (!parts) {
      throw new UserError('oci-url', `${ctx.stanza}: from.url ${from.url} is not of the form PATH:TAG`, {
        stanza: ctx.stanza,
        key: 'from.url',
      });
    }
    const dir = ctx.resolvePath(parts.path);
    let src: OciLayout;
    try {
      src = await OciLayout.open(dir);
    } catch (e) {
      throw new UserError(
        'oci-layout',
        `${ctx.stanza}: ${dir} is not an OCI layout: ${(e as Error).message}`,
        {
          stanza: ctx.stanza,
          key: 'from.url',
        },
      );
    }
    const img = await src.readImage(parts.tag, ctx.platform);
    const copy = async (d: Descriptor) => {
      if (await ctx.blobs.has(d.digest)) return;
      await ctx.blobs.putFile(src.path(d.digest), d.mediaType, { digest: d.digest, size: d.size });
    };
    await copy(img.manifest.config);
    for (const l of img.manifest.layers) await copy(l);
    // the manifest itself, byte for byte, so its digest stays the same
    if (!(await ctx.blobs.has(img.manifestDigest))) {
      await ctx.blobs.putFile(src.path(img.manifestDigest), img.manifest.mediaType ?? MEDIA_TYPES.manifest, {
        digest: img.manifestDigest,
      });
    }
    return {
      manifest: img.manifest,
      manifestDigest: img.manifestDigest,
      config: img.config,
      identity: img.manifestDigest,
      layers: img.manifest.layers,
    };
  },
};

export const sources = [ociSource];
