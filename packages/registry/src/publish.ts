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
  /** Publish what is there, skipping stanzas that were never built. */
  force?: boolean;
  /** Say what would be published; push nothing. */
  showOnly?: boolean;
  username?: string;
  password?: string;
  /** Plain http to the registry. */
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

/**
 * `stacker publish`: every stanza of the files that is not build_only (or only those in
 * `images`) is read from the local layout by its tag and sent, for every tag, to
 * `URL/NAME:TAG` (docker destinations) or `URL:NAME_TAG` (oci destinations). Stanzas not
 * in the layout stop everything before anything is pushed, unless `force`.
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
  const done: Published[] = [];

  // every stanza to publish, checked before anything travels
  const work: Array<{ file: string; name: string; descriptor: Descriptor }> = [];
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
      work.push({ file: file.path, name: layer.name, descriptor });
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
    if (dest.kind === 'docker') {
      // every tag names the same repository: the blobs travel once, the manifest per tag
      const refs = opts.tags.map((tag) => {
        const url = `${dest.base}/${item.name}:${tag}`;
        return { url, ref: parseImageReference(url) };
      });
      for (const { url } of refs) {
        log.info(
          opts.showOnly
            ? `would publish: ${item.file} ${item.name} to ${url}`
            : `publishing ${item.file} ${item.name} to ${url}`,
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
        `published ${item.name} to ${refs.map((r) => formatReference(r.ref)).join(', ')} (${s.digest}): ${s.pushed.length} blobs pushed, ${s.mounted.length} mounted, ${s.existing.length} already there`,
      );
      for (const { url } of refs) done.push({ file: item.file, name: item.name, destination: url, ...s });
      continue;
    }
    for (const tag of opts.tags) {
      const destTag = `${item.name}_${tag}`;
      const destUrl = `${dest.url}:${destTag}`;
      if (opts.showOnly) {
        log.info(`would publish: ${item.file} ${item.name} to ${destUrl}`);
        continue;
      }
      log.info(`publishing ${item.file} ${item.name} to ${destUrl}`);
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
