import type { Readable } from 'node:stream';
import type { z } from 'zod';
import type { Logger } from './logger.js';
import type { Descriptor, ImageConfig, ImageManifest } from './oci-types.js';

/**
 * A source turns a stanza's `from:` into a base image whose blobs are in the build's blob
 * store (the output OCI layout). The engine then unpacks the base layers into storage,
 * runs the stanza on top and writes a new image that reuses the base layers by digest.
 *
 * Lifecycle: the host validates `from:` with `schema` (errors point at file:line:col),
 * computes the DAG from `dependencies(from)`, and calls `resolve(from, ctx)` once every
 * dependency of the stanza is built. `resolve` must be idempotent and cheap when nothing
 * changed (download once, verify by digest).
 *
 * Worked example: a source for `from: {type: tar, url: ./rootfs.tar.gz}`
 *
 *     const tar: Source = {
 *       type: 'tar',
 *       schema: z.object({ type: z.literal('tar'), url: z.string() }),
 *       async resolve(from, ctx) {
 *         const layer = await ctx.blobs.putFile(ctx.resolvePath(from.url), MEDIA_TYPES.layerGzip);
 *         return ctx.imageFromLayers([layer], `tar:${layer.digest}`);
 *       },
 *     };
 */
export interface Source<From extends { type: string } = any> {
  /** The `from.type` value this source handles. */
  type: string;
  /** zod schema of the whole `from:` mapping, including `type`. */
  schema: z.ZodType<From>;
  /** Names of other stanzas this `from:` needs built first (e.g. `built`). */
  dependencies?(from: From): string[];
  /** A short, stable string that changes when the resolved base would change; used for
   * the build cache without resolving (e.g. a tar file's sha256, a manifest digest). */
  identity?(from: From, ctx: SourceContext): Promise<string>;
  resolve(from: From, ctx: SourceContext): Promise<BaseImage>;
}

/** The base image a source resolved: all blobs it names are present in `ctx.blobs`. */
export interface BaseImage {
  manifest: ImageManifest;
  manifestDigest: string;
  config: ImageConfig;
  /** Stable identity of this base for caching (manifest digest, tar sha256, ...). */
  identity: string;
  /** Layers that must not be reused as blobs but re-derived (e.g. foreign media types). */
  layers: Descriptor[];
}

/** What a source may do with the output layout: put and read verified blobs. */
export interface BlobStore {
  has(digest: string): Promise<boolean>;
  /** Stream a blob in; the digest is computed while writing and checked when given. */
  putStream(
    stream: Readable,
    mediaType: string,
    expected?: { digest?: string; size?: number },
  ): Promise<Descriptor>;
  /** Put a file as a blob, by hard link or copy when it is not already there. */
  putFile(
    path: string,
    mediaType: string,
    expected?: { digest?: string; size?: number },
  ): Promise<Descriptor>;
  putJson(value: unknown, mediaType: string): Promise<Descriptor>;
  open(digest: string): Promise<Readable>;
  readJson<T>(digest: string): Promise<T>;
  path(digest: string): string;
}

export interface SourceContext {
  /** The stanza (layer name) being built. */
  stanza: string;
  /** Absolute path of the stacker file the stanza comes from. */
  stackerFile: string;
  /** Resolve a path written in the stacker file (relative to the file's directory). */
  resolvePath(p: string): string;
  /** Directory the source may use to cache downloads across builds. */
  cacheDir: string;
  /** The output layout's blob store. */
  blobs: BlobStore;
  /** Platform wanted by the stanza (`os`/`arch` keys, default the host). */
  platform: { os: string; architecture: string };
  log: Logger;
  /** The image another stanza of this build produced (for `built`). */
  builtImage(name: string): Promise<BaseImage>;
  /** Make a base image (config + manifest) from plain layers, e.g. for tarballs. */
  imageFromLayers(layers: Descriptor[], identity: string): Promise<BaseImage>;
  /** Abort signal of the build: long downloads should stop when it fires. */
  signal: AbortSignal;
  /**
   * Byte progress of a long transfer (a download), shown by the host's live view on a
   * terminal: `label` names the thing (e.g. `blob sha256:0123…`) and stays the same for it;
   * call it as bytes arrive (it is cheap, the host throttles drawing) and once with
   * `done === total` at the end. Absent when nobody watches (and in hosts that predate it).
   */
  progress?(label: string, done: number, total: number): void;
}

/** What a plugin module exports for sources. */
export interface SourceModule {
  sources: Source[];
}
