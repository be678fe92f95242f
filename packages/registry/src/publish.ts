import { type Descriptor, type Logger, silentLogger } from '@stacker/plugin-api';
import { type ProgressListener, RegistryClient, type RegistryClientOptions } from './client.js';
import { type BlobSource, copyToLayout, type LayoutTarget, pushImage } from './copy.js';
import { credentialsError, publishError } from './errors.js';
import { formatReference, parseImageReference } from './reference.js';

/** What publish needs of a stacker file: its path and its stanzas in file order. */
export interface PublishFile {
  path: string;
  layers: Array<{ name: string; buildOnly: boolean }>;
}

/** The local layout images are read from (OciLayout from @stacker/oci fits). */
export interface PublishSource extends BlobSource {
  dir: string;
  findTag(name: string): Promise<Descriptor | undefined>;
}

export interface PublishOptions {
  files: PublishFile[];
  source: PublishSource;
  /** `docker://host[:port]/path` or `oci:DIR`. */
  url: string;
  tags: string[];
  /** Only these stanzas (all when empty). */
  images?: string[];
  /**
   * Publish what is there: stanzas that were never built are skipped, stale ones (see
   * `check`) are published as they were built, with a warning.
   */
  force?: boolean;
  /**
   * The layer types to publish (default `tar`): a stanza's `squashfs` image is the layout's
   * `NAME-squashfs` and goes to tags `TAG-squashfs`, as stacker names them.
   */
  layerTypes?: string[];
  /**
   * Says why the image of a stanza in the layout is not what a build would make now (its
   * definition changed since, its base was rebuilt, no build cache entry), or undefined
   * when it is current. Stale stanzas stop everything before anything is pushed, unless
   * `force`.
   */
  check?: (stanza: {
    file: string;
    name: string;
    /** `tar` (the stanza's image, checked first), or another type's image of it. */
    layerType: string;
    descriptor: Descriptor;
  }) => Promise<string | undefined>;
  /** Say what would be published; push nothing. */
  showOnly?: boolean;
  username?: string;
  password?: string;
  /** Don't verify the registry's certificate; plain http when it has no TLS. */
  skipTls?: boolean;
  /** Opens (creating when needed) the layout of an `oci:DIR` destination. */
  openLayout?: (dir: string) => Promise<LayoutTarget>;
  log?: Logger;
  signal?: AbortSignal;
  /** Passed to the registry client (chunk sizes, credential files, retries). */
  client?: Partial<RegistryClientOptions>;
  /** Byte progress of every blob uploaded. */
  onProgress?: ProgressListener;
}

export interface Published {
  file: string;
  name: string;
  destination: string;
  digest: string;
  /** Blobs that travelled (uploaded or copied); empty when the destination had them all. */
  pushed: string[];
  mounted: string[];
  existing: string[];
}

type Destination = { kind: 'docker'; base: string } | { kind: 'oci'; dir: string; url: string };

function parseDestination(url: string): Destination {
  if (url.startsWith('docker://')) {
    const base = url.replace(/\/+$/, '');
    // validate the prefix now, so a typo fails before anything is pushed
    parseImageReference(`${base}/x`, { allowBare: true });
    return { kind: 'docker', base };
  }
  if (url.startsWith('oci:')) {
    const dir = url.slice('oci:'.length);
    if (!dir) throw publishError(`--url ${url} names no directory; use oci:DIR`);
    return { kind: 'oci', dir, url };
  }
  throw publishError(
    `can't save layers to destination ${JSON.stringify(url)}: --url must be docker://HOST[:PORT]/PATH or oci:DIR`,
  );
}

/** stacker's `LayerName`: a tag or layer name for a layer type (`tar` keeps it, others get `-TYPE`). */
export function layerTypeName(name: string, layerType: string): string {
  return layerType === 'tar' ? name : `${name}-${layerType}`;
}

/**
 * `stacker publish`: every stanza of the files that is not build_only (or only those in
 * `images`) is read from the local layout by its tag and sent, for every tag and layer
 * type, to `URL/NAME:TAG` (docker destinations) or `URL:NAME_TAG` (oci destinations), with
 * `-TYPE` after the layout tag and the destination tag for types other than tar. Stanzas
 * not in the layout, or stale (`check`), stop everything before anything is pushed,
 * unless `force`.
 */
export async function publish(opts: PublishOptions): Promise<Published[]> {
  const log = opts.log ?? silentLogger;
  if (
    (opts.username === undefined || opts.username === '') !==
    (opts.password === undefined || opts.password === '')
  ) {
    throw credentialsError('supply both --username and --password, or neither of them');
  }
  const dest = parseDestination(opts.url);
  const layerTypes = [...new Set(opts.layerTypes?.length ? opts.layerTypes : ['tar'])];
  const done: Published[] = [];

  // every stanza to publish, checked before anything travels
  const work: Array<{ file: string; name: string; layerType: string; descriptor: Descriptor }> = [];
  for (const file of opts.files) {
    if (opts.tags.length === 0)
      throw publishError(`can't save OCI images in ${file.path} since list of tags is empty`);
    for (const layer of file.layers) {
      if (layer.buildOnly) {
        log.info(`will not publish: ${file.path} build_only ${layer.name}`);
        continue;
      }
      if (opts.images?.length && !opts.images.includes(layer.name)) continue;
      const descriptor = await opts.source.findTag(layer.name);
      if (!descriptor) {
        if (opts.force) {
          log.warn(
            `not publishing ${layer.name}: it is not in the OCI layout ${opts.source.dir} (never built)`,
          );
          continue;
        }
        throw publishError(
          `layer needs to be rebuilt before publishing: ${layer.name} is not in the OCI layout ${opts.source.dir}; run stacker build first`,
        );
      }
      const stale = async (layerType: string, d: Descriptor) => {
        const why = await opts.check?.({ file: file.path, name: layer.name, layerType, descriptor: d });
        if (why === undefined) return;
        const what = layerTypeName(layer.name, layerType);
        if (!opts.force) {
          throw publishError(
            `layer needs to be rebuilt before publishing: ${what} ${why}; run stacker build${layerType === 'tar' ? '' : ` --layer-type ${layerType}`} first, or publish it as it was built with --force`,
          );
        }
        log.warn(`publishing ${what} as it was built, though ${why} (--force)`);
      };
      await stale('tar', descriptor);
      for (const layerType of layerTypes) {
        const tag = layerTypeName(layer.name, layerType);
        const flavour = layerType === 'tar' ? descriptor : await opts.source.findTag(tag);
        if (!flavour) {
          if (opts.force) {
            log.warn(`not publishing ${tag}: it is not in the OCI layout ${opts.source.dir} (never built)`);
            continue;
          }
          throw publishError(
            `layer needs to be rebuilt before publishing: ${layer.name} has no ${layerType} image (${tag}) in the OCI layout ${opts.source.dir}; run stacker build --layer-type ${layerType} first`,
          );
        }
        if (layerType !== 'tar') await stale(layerType, flavour);
        work.push({ file: file.path, name: layer.name, layerType, descriptor: flavour });
      }
    }
  }
  for (const wanted of opts.images ?? []) {
    if (!opts.files.some((f) => f.layers.some((l) => l.name === wanted)))
      log.warn(`--image ${wanted}: no such layer in the stacker files`);
  }

  const clients = new Map<string, RegistryClient>();
  const clientFor = (registry: string, endpoint: string) => {
    let c = clients.get(registry);
    if (!c) {
      c = new RegistryClient({
        ...opts.client,
        registry,
        endpoint,
        insecure: opts.skipTls,
        username: opts.username || undefined,
        password: opts.password || undefined,
        log,
        signal: opts.signal,
      });
      clients.set(registry, c);
    }
    return c;
  };
  let layout: LayoutTarget | undefined;

  for (const item of work) {
    const layerName = layerTypeName(item.name, item.layerType);
    if (dest.kind === 'docker') {
      // every tag names the same repository: the blobs travel once, the manifest per tag
      const refs = opts.tags.map((tag) => {
        const url = `${dest.base}/${item.name}:${layerTypeName(tag, item.layerType)}`;
        return { url, ref: parseImageReference(url) };
      });
      for (const { url } of refs) {
        log.info(
          opts.showOnly
            ? `would publish: ${item.file} ${item.name} to ${url}`
            : `publishing ${item.file} ${layerName} to ${url}`,
        );
      }
      if (opts.showOnly) continue;
      const { ref } = refs[0];
      const client = clientFor(ref.registry, ref.endpoint);
      const s = await pushImage(
        opts.source,
        item.descriptor,
        client,
        ref.repository,
        refs.map((r) => r.ref.tag!),
        { log, onProgress: opts.onProgress },
      );
      log.info(
        `published ${layerName} to ${refs.map((r) => formatReference(r.ref)).join(', ')} (${s.digest}): ${s.pushed.length} blobs pushed, ${s.mounted.length} mounted, ${s.existing.length} already there`,
      );
      for (const { url } of refs) done.push({ file: item.file, name: item.name, destination: url, ...s });
      continue;
    }
    for (const tag of opts.tags) {
      const destTag = `${item.name}_${layerTypeName(tag, item.layerType)}`;
      const destUrl = `${dest.url}:${destTag}`;
      if (opts.showOnly) {
        log.info(`would publish: ${item.file} ${item.name} to ${destUrl}`);
        continue;
      }
      log.info(`publishing ${item.file} ${layerName} to ${destUrl}`);
      if (!opts.openLayout) throw publishError(`publishing to ${destUrl} needs a way to open OCI layouts`);
      layout ??= await opts.openLayout(dest.dir);
      const { copied } = await copyToLayout(opts.source, item.descriptor, layout, destTag);
      done.push({
        file: item.file,
        name: item.name,
        destination: destUrl,
        digest: item.descriptor.digest,
        pushed: copied,
        mounted: [],
        existing: [],
      });
    }
  }
  return done;
}
