import { Readable } from 'node:stream';
import {
  type BlobStore,
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  type Logger,
  MEDIA_TYPES,
  silentLogger,
} from '@stacker/plugin-api';
import {
  formatBytes,
  type ProgressListener,
  type PushResult,
  type RawManifest,
  type RegistryClient,
} from './client.js';
import { publishError } from './errors.js';
import { isIndexMediaType } from './media-types.js';

/** Where images are read from when pushing: any blob store (an OCI layout fits). */
export type BlobSource = Pick<BlobStore, 'open'>;

/** A local OCI layout images can be copied into (OciLayout from @stacker/oci fits). */
export interface LayoutTarget extends Pick<BlobStore, 'has' | 'putStream'> {
  tag(name: string, descriptor: Descriptor): Promise<void>;
}

export interface PulledImage {
  manifest: ImageManifest;
  manifestDigest: string;
  manifestMediaType: string;
  manifestSize: number;
  config: ImageConfig;
  /** Blobs that were downloaded (the others were in the store already). */
  pulled: string[];
}

/**
 * Pull the image `reference` names (for `platform` when it is an index) into `store`:
 * config and layers by digest, skipping those the store has, then the manifest bytes as
 * they came, so the manifest keeps its digest. Nothing is converted or recompressed.
 */
export async function pullImage(
  client: RegistryClient,
  repository: string,
  reference: string,
  store: BlobStore,
  opts: {
    platform?: { os: string; architecture: string };
    log?: Logger;
    concurrency?: number;
    /** Byte progress of each blob downloaded. */
    onProgress?: ProgressListener;
  } = {},
): Promise<PulledImage> {
  const log = opts.log ?? silentLogger;
  const image = await client.getImage(repository, reference, opts.platform);
  const { manifest, raw } = image;
  const blobs = uniqueBlobs([manifest.config, ...manifest.layers]);
  const pulled: string[] = [];
  await forEachLimited(blobs, opts.concurrency ?? 3, async (d) => {
    if ((await client.pullBlob(repository, d, store, { onProgress: opts.onProgress })) === 'pulled') {
      pulled.push(d.digest);
      log.info(
        `copied blob ${d.digest} (${d.size} bytes, ${formatBytes(d.size)}) from ${client.registry}/${repository}`,
      );
    }
  });
  if (!(await store.has(raw.digest))) {
    await store.putStream(bufferStream(raw.bytes), raw.mediaType, {
      digest: raw.digest,
      size: raw.bytes.length,
    });
  }
  const config = await store.readJson<ImageConfig>(manifest.config.digest);
  return {
    manifest,
    manifestDigest: raw.digest,
    manifestMediaType: raw.mediaType,
    manifestSize: raw.bytes.length,
    config,
    pulled,
  };
}

export interface PushSummary {
  digest: string;
  pushed: string[];
  mounted: string[];
  existing: string[];
}

/**
 * Push the image or index `descriptor` of `source` to `repository` and point `tags` at it.
 * Only blobs the repository lacks travel; the manifest is sent byte for byte, so its
 * digest is the same on both sides.
 */
export async function pushImage(
  source: BlobSource,
  descriptor: Descriptor,
  client: RegistryClient,
  repository: string,
  tags: string[],
  opts: { log?: Logger; onProgress?: ProgressListener } = {},
): Promise<PushSummary> {
  const summary: PushSummary = { digest: descriptor.digest, pushed: [], mounted: [], existing: [] };
  const log = opts.log ?? silentLogger;
  const note = (r: PushResult, d: Descriptor) => {
    if (r === 'uploaded') summary.pushed.push(d.digest);
    else if (r === 'mounted') summary.mounted.push(d.digest);
    else {
      summary.existing.push(d.digest);
      log.info(`blob ${d.digest} already in ${client.registry}/${repository}, skipped`);
    }
  };
  const pushManifest = async (d: Descriptor, depth: number): Promise<RawManifest> => {
    const bytes = await readBlob(source, d.digest);
    const parsed = JSON.parse(bytes.toString('utf8')) as {
      mediaType?: string;
      manifests?: Descriptor[];
      config?: Descriptor;
      layers?: Descriptor[];
    };
    const mediaType = parsed.mediaType ?? d.mediaType ?? MEDIA_TYPES.manifest;
    if (isIndexMediaType(mediaType)) {
      if (depth > 2) throw publishError(`${d.digest}: image indexes nest too deeply to publish`);
      for (const child of parsed.manifests ?? []) {
        const raw = await pushManifest(child, depth + 1);
        await client.putManifest(repository, raw.digest, raw.bytes, raw.mediaType);
      }
    } else {
      for (const blob of uniqueBlobs([parsed.config!, ...(parsed.layers ?? [])])) {
        note(
          await client.pushBlob(repository, blob, () => source.open(blob.digest), {
            onProgress: opts.onProgress,
          }),
          blob,
        );
      }
    }
    return { bytes, mediaType, digest: d.digest };
  };
  const raw = await pushManifest(descriptor, 0);
  for (const tag of tags) await client.putManifest(repository, tag, raw.bytes, raw.mediaType);
  return summary;
}

/**
 * Copy the image or index `descriptor` of `source` into the layout `target` (blobs by
 * digest, those it has are skipped) and tag it `tag` there.
 */
export async function copyToLayout(
  source: BlobSource,
  descriptor: Descriptor,
  target: LayoutTarget,
  tag: string,
): Promise<{ copied: string[] }> {
  const copied: string[] = [];
  const copyBlob = async (d: Descriptor) => {
    if (await target.has(d.digest)) return;
    await target.putStream(await source.open(d.digest), d.mediaType, { digest: d.digest, size: d.size });
    copied.push(d.digest);
  };
  const visit = async (d: Descriptor, depth: number): Promise<void> => {
    const parsed = JSON.parse((await readBlob(source, d.digest)).toString('utf8')) as {
      mediaType?: string;
      manifests?: Descriptor[];
      config?: Descriptor;
      layers?: Descriptor[];
    };
    if (isIndexMediaType(parsed.mediaType ?? d.mediaType)) {
      if (depth > 2) throw publishError(`${d.digest}: image indexes nest too deeply to copy`);
      for (const child of parsed.manifests ?? []) await visit(child, depth + 1);
    } else {
      for (const blob of uniqueBlobs([parsed.config!, ...(parsed.layers ?? [])])) await copyBlob(blob);
    }
    await copyBlob(d);
  };
  await visit(descriptor, 0);
  const { annotations, ...rest } = descriptor;
  const kept = Object.fromEntries(
    Object.entries(annotations ?? {}).filter(([k]) => k !== 'org.opencontainers.image.ref.name'),
  );
  await target.tag(tag, Object.keys(kept).length ? { ...rest, annotations: kept } : rest);
  return { copied };
}

function uniqueBlobs(list: Descriptor[]): Descriptor[] {
  const seen = new Set<string>();
  return list.filter((d) => d && !seen.has(d.digest) && seen.add(d.digest));
}

async function readBlob(source: BlobSource, digest: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await source.open(digest)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function bufferStream(bytes: Buffer): Readable {
  return Readable.from([bytes]);
}

async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const item = items[next++];
      try {
        await fn(item);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed !== undefined) throw failed;
}
