import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex, type OciLayout, unpackLayer } from '@stacker/oci';
import {
  type BaseImage,
  type Descriptor,
  type ImageConfig,
  type Logger,
  MEDIA_TYPES,
  UserError,
} from '@stacker/plugin-api';
import { buildManifest } from './image-config.js';
import { openLayerTar, shortId } from './snapshots.js';

/** execa, imported on first use: loading it is costly, and a cached build runs none of this. */
const loadExeca = () => import('execa');

/** The `--layer-type` values: `tar` (the OCI default) and stacker's `squashfs`. */
export const LAYER_TYPES = ['tar', 'squashfs'] as const;
export type LayerType = (typeof LAYER_TYPES)[number];

/** stacker's squashfs layer media types (atomfs): the compression is part of the name. */
export const SQUASHFS_MEDIA_TYPES = {
  zstd: 'application/vnd.stacker.image.layer.squashfs+zstd',
  gzip: 'application/vnd.stacker.image.layer.squashfs+gzip',
} as const;

/** The tag an image of `type` gets: stacker's `LayerName` (`name`, `name-squashfs`). */
export function tagForLayerType(name: string, type: string): string {
  return type === 'tar' ? name : `${name}-${type}`;
}

export function isSquashfsMediaType(mediaType: string): boolean {
  return mediaType.startsWith('application/vnd.stacker.image.layer.squashfs');
}

export interface ConvertContext {
  layout: OciLayout;
  /** Scratch space and the record of converted layers live below it. */
  stackerDir: string;
  log: Logger;
  sourceDateEpoch?: number;
}

let compressor: Promise<'zstd' | 'gzip'> | undefined;

/** zstd when this mksquashfs was built with it, else gzip (every mksquashfs has gzip). */
function squashfsCompression(): Promise<'zstd' | 'gzip'> {
  compressor ??= loadExeca()
    .then(({ execa }) => execa('mksquashfs', ['-help'], { reject: false, all: true }))
    .then((r) => {
      if ((r as { code?: string }).code === 'ENOENT') {
        throw new UserError(
          'mksquashfs-missing',
          'mksquashfs was not found on PATH; install squashfs-tools to build --layer-type squashfs',
        );
      }
      return /^\s*zstd\b/m.test(r.all ?? '') ? 'zstd' : 'gzip';
    });
  return compressor;
}

/**
 * Makes squashfs flavours of images, as stacker's `--layer-type squashfs` does: one
 * squashfs per layer, holding that layer's files with overlayfs-style whiteouts (a 0/0
 * character device for a deleted path, `user.overlay.opaque=y` on an opaque directory),
 * so that the layers can be mounted and stacked with overlayfs as they are. The config's
 * diff ids are the squashfs blobs' digests (the blobs are not compressed streams).
 *
 * Each tar layer is converted once: the result is remembered in `.stacker/squashfs/`.
 * Runs inside the user namespace (whiteouts are device nodes, files keep their owners).
 */
export class SquashfsConverter {
  constructor(private readonly ctx: ConvertContext) {}

  private recordPath(layer: Descriptor): string {
    return join(this.ctx.stackerDir, 'squashfs', `${digestHex(layer.digest)}.json`);
  }

  /** The squashfs flavour of one layer. */
  async layer(layer: Descriptor): Promise<Descriptor> {
    if (isSquashfsMediaType(layer.mediaType)) return layer;
    const record = this.recordPath(layer);
    try {
      const d = JSON.parse(await fsp.readFile(record, 'utf8')) as Descriptor;
      if (await this.ctx.layout.has(d.digest)) return d;
    } catch {
      /* not converted yet */
    }
    const comp = await squashfsCompression();
    const work = join(this.ctx.stackerDir, 'squashfs', `tmp-${shortId()}`);
    const root = join(work, 'root');
    const out = join(work, 'layer.squashfs');
    try {
      await fsp.mkdir(root, { recursive: true, mode: 0o755 });
      const before = (await fsp.stat(root)).mtimeMs;
      await unpackLayer(await openLayerTar(this.ctx.layout, layer), root, {
        whiteouts: 'overlay',
        log: this.ctx.log,
      });
      // a layer without a `./` entry says nothing of the root: give it fixed metadata
      const st = await fsp.stat(root);
      if (st.mtimeMs >= before) {
        const t = this.ctx.sourceDateEpoch ?? 0;
        await fsp.chmod(root, 0o755);
        await fsp.utimes(root, t, t);
      }
      const env = { ...process.env };
      delete env.SOURCE_DATE_EPOCH; // it would also reset every file's mtime
      const { execa } = await loadExeca();
      const r = await execa(
        'mksquashfs',
        [
          root,
          out,
          '-noappend',
          '-comp',
          comp,
          '-no-progress',
          '-quiet',
          '-mkfs-time',
          String(this.ctx.sourceDateEpoch ?? 0),
        ],
        { reject: false, all: true, env, extendEnv: false },
      );
      if (r.exitCode !== 0) {
        throw new UserError(
          'mksquashfs',
          `mksquashfs failed for layer ${layer.digest}: ${r.all ?? r.shortMessage}`,
        );
      }
      const d = await this.ctx.layout.putFile(out, SQUASHFS_MEDIA_TYPES[comp]);
      const desc: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
      await fsp.writeFile(record, JSON.stringify(desc));
      this.ctx.log.debug(`layer ${layer.digest} as squashfs is ${desc.digest}`);
      return desc;
    } finally {
      await fsp.rm(work, { recursive: true, force: true });
    }
  }

  /** The squashfs flavour of a whole image: same config and annotations, squashfs layers. */
  async image(image: BaseImage): Promise<Descriptor> {
    const layers: Descriptor[] = [];
    for (const l of image.manifest.layers) layers.push(await this.layer(l));
    const config: ImageConfig = {
      ...image.config,
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    };
    const cdesc = await this.ctx.layout.putJson(config, MEDIA_TYPES.config);
    const manifest = buildManifest(cdesc, layers, image.manifest.annotations ?? {});
    const mdesc = await this.ctx.layout.putJson(manifest, MEDIA_TYPES.manifest);
    return { ...mdesc, platform: { os: config.os, architecture: config.architecture } };
  }
}

/**
 * The images of `image` for each extra layer type (every type but `tar`, which is the
 * image itself), keyed by the tag they get.
 */
export async function extraFlavours(
  name: string,
  image: BaseImage,
  types: readonly string[],
  ctx: ConvertContext,
): Promise<Record<string, Descriptor>> {
  const out: Record<string, Descriptor> = {};
  for (const t of types) {
    if (t === 'tar') continue;
    if (t !== 'squashfs') throw new UserError('layer-type', `unknown layer type ${t}; use tar or squashfs`);
    out[tagForLayerType(name, t)] = await new SquashfsConverter(ctx).image(image);
  }
  return out;
}
