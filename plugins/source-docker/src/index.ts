import { join } from 'node:path';
import { OciLayout } from '@stacker/oci';
import { type BlobStore, isUserError, type Source, type SourceContext, UserError } from '@stacker/plugin-api';
import {
  type ImageReference,
  parseImageReference,
  pullImage,
  RegistryClient,
  referenceOf,
} from '@stacker/registry';
import { z } from 'zod';

const schema = z.looseObject({
  type: z.literal('docker'),
  url: z.string().min(1, 'url: docker://HOST[:PORT]/REPO[:TAG|@sha256:DIGEST]'),
  /** Don't verify the registry's certificate; plain http when it has no TLS. */
  insecure: z.boolean().optional(),
});
type DockerFrom = z.infer<typeof schema>;

// One client per registry for a build (its abort signal): bearer tokens and the knowledge
// of which repository holds which blob are shared by every stanza that pulls from it.
const clients = new WeakMap<AbortSignal, Map<string, RegistryClient>>();

function clientFor(ref: ImageReference, insecure: boolean, ctx: SourceContext): RegistryClient {
  let perBuild = clients.get(ctx.signal);
  if (!perBuild) {
    perBuild = new Map();
    clients.set(ctx.signal, perBuild);
  }
  const key = `${insecure ? 'insecure' : 'https'}://${ref.endpoint}`;
  let c = perBuild.get(key);
  if (!c) {
    c = RegistryClient.forReference(ref, { insecure, log: ctx.log, signal: ctx.signal });
    perBuild.set(key, c);
  }
  return c;
}

function parse(from: DockerFrom, ctx: SourceContext): ImageReference {
  try {
    return parseImageReference(from.url);
  } catch (e) {
    throw inStanza(e, ctx);
  }
}

/**
 * Pulled blobs are kept in an OCI layout of their own in the stacker dir
 * (`.stacker/sources/layer-bases`, as stacker keeps `.stacker/layer-bases`), so that a new
 * or removed output layout (`--oci-dir`) does not download them again.
 */
const bases = new Map<string, Promise<OciLayout>>();
function layerBases(ctx: SourceContext): Promise<OciLayout> {
  const dir = join(ctx.cacheDir, 'layer-bases');
  let p = bases.get(dir);
  if (!p) {
    p = OciLayout.init(dir);
    bases.set(dir, p);
    p.catch(() => bases.delete(dir));
  }
  return p;
}

/** Not a layer: putting a cached blob into the output must not look like a tarball import. */
const LINKED = 'application/octet-stream';

/**
 * The output layout's blob store, with every blob going through the layer-bases cache: a
 * blob the output lacks but the cache has is linked (or copied) across, a new one is
 * verified into the cache first. Both are addressed by digest, so a damaged or partial
 * file is never trusted: the layout checks the digest of what it links.
 */
function throughLayerBases(cache: OciLayout, out: BlobStore): BlobStore {
  const link = (digest: string, size?: number) => out.putFile(cache.path(digest), LINKED, { digest, size });
  return {
    async has(digest) {
      if (await out.has(digest)) return true;
      if (!(await cache.has(digest))) return false;
      await link(digest);
      return true;
    },
    async putStream(stream, mediaType, expected) {
      const d = await cache.putStream(stream, mediaType, expected);
      await link(d.digest, d.size);
      return d;
    },
    putFile: (path, mediaType, expected) => out.putFile(path, mediaType, expected),
    putJson: (value, mediaType) => out.putJson(value, mediaType),
    open: (digest) => out.open(digest),
    readJson: (digest) => out.readJson(digest),
    path: (digest) => out.path(digest),
  };
}

/** A registry error with the stanza in front, so the user knows which `from:` failed. */
function inStanza(e: unknown, ctx: SourceContext): unknown {
  if (!isUserError(e)) return e;
  return new UserError(
    e.code,
    `${ctx.stanza}: ${e.message}`,
    { ...e.place, stanza: ctx.stanza, key: 'from.url' },
    { cause: e },
  );
}

/**
 * `from: {type: docker, url: docker://HOST/REPO:TAG, insecure: true}`: an image in a
 * registry. The manifest (for the stanza's platform when the tag is an index), config and
 * layers are downloaded by digest, each verified, into the layer-bases layout in the stacker
 * dir and linked into the build's layout; blobs already in either are not downloaded again. Layers are used as they are, docker media types too.
 * Credentials come from the standard files (containers' auth.json, ~/.docker/config.json).
 */
export const dockerSource: Source<DockerFrom> = {
  type: 'docker',
  schema,
  async identity(from, ctx) {
    const ref = parse(from, ctx);
    try {
      const digest = await clientFor(ref, from.insecure === true, ctx).resolveDigest(
        ref.repository,
        referenceOf(ref),
        ctx.platform,
      );
      return digest;
    } catch (e) {
      throw inStanza(e, ctx);
    }
  },
  async resolve(from, ctx) {
    const ref = parse(from, ctx);
    const client = clientFor(ref, from.insecure === true, ctx);
    try {
      const progress = ctx.progress?.bind(ctx);
      const store = throughLayerBases(await layerBases(ctx), ctx.blobs);
      const img = await pullImage(client, ref.repository, referenceOf(ref), store, {
        platform: ctx.platform,
        log: ctx.log,
        // the host's live view shows each download as a byte bar
        onProgress: progress && ((p) => progress(`${p.digest.slice(0, 19)}`, p.done, p.total)),
      });
      ctx.log.debug(
        `${ctx.stanza}: ${from.url} is ${img.manifestDigest} (${img.pulled.length} blobs downloaded)`,
      );
      return {
        manifest: img.manifest,
        manifestDigest: img.manifestDigest,
        config: img.config,
        identity: img.manifestDigest,
        layers: img.manifest.layers,
      };
    } catch (e) {
      throw inStanza(e, ctx);
    }
  },
};

export const sources = [dockerSource];
