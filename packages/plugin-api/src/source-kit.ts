import { deepStrictEqual } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, link, mkdir, mkdtemp, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, type ZlibOptions } from 'node:zlib';
import { type Logger, silentLogger } from './logger.js';
import { baseImageShape, pluginModuleShape } from './manifest.js';
import { type Descriptor, type ImageConfig, type ImageManifest, MEDIA_TYPES } from './oci-types.js';
import { hostPlatform } from './platform.js';
import type { BaseImage, BlobStore, Source, SourceContext } from './source.js';

/**
 * A source test kit: checks a `Source` the way the host will use it, with node builtins
 * only (no test framework, no stacker core):
 *
 *     import { checkSource } from '@stacker/plugin-api/source-kit';
 *     const report = await checkSource(mySource, {
 *       valid: [{ type: 'mytype', url: './rootfs.tar.gz' }],
 *       invalid: [{ type: 'mytype' }],
 *       context: { stackerFile: join(fixtures, 'stacker.yaml') },
 *     });
 *
 * It checks the object's shape (what the host's contract check accepts), that the schema
 * accepts every `valid` and rejects every `invalid` mapping, that `dependencies()` gives
 * layer names, then resolves the first valid mapping (twice) against a blob store in a temp
 * directory and checks the base image: every blob it names is there with the right digest
 * and size, the stored manifest and config are the ones returned, there is one diff id per
 * layer and it is the digest of the uncompressed layer, `identity()` is stable, and a second
 * resolve gives the same identity. The first failure throws an Error saying what is wrong.
 */
export interface SourceKitOptions {
  /** `from:` mappings the schema must accept; the first one is resolved. */
  valid: Array<{ type: string; [key: string]: unknown }>;
  /** `from:` mappings the schema must reject. */
  invalid?: unknown[];
  /** Resolve the first valid mapping (default true). */
  resolve?: boolean;
  /** Directory for the blob store and the source's cache (default: a temp dir, removed after). */
  workDir?: string;
  /** Fields of the SourceContext to set (stackerFile, builtImage, platform, log, signal…). */
  context?: Partial<SourceContext>;
}

export interface SourceKitReport {
  /** What the checks covered, one line each. */
  checks: string[];
  /** The resolved base image (when resolved). */
  base?: BaseImage;
  /** Where the blobs went (only kept when `workDir` was given). */
  workDir: string;
}

class KitError extends Error {
  constructor(message: string) {
    super(`source kit: ${message}`);
    this.name = 'SourceKitError';
  }
}

function fail(message: string): never {
  throw new KitError(message);
}

async function sha256File(path: string): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  await pipeline(
    createReadStream(path),
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        h.update(chunk);
        size += chunk.length;
        cb();
      },
    }),
  );
  return { digest: `sha256:${h.digest('hex')}`, size };
}

async function sha256Stream(stream: Readable): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of stream) h.update(chunk as Buffer);
  return `sha256:${h.digest('hex')}`;
}

/**
 * A `BlobStore` on a directory laid out like an OCI layout's `blobs/` (`blobs/sha256/HEX`):
 * enough for testing a source, not a full layout (no index.json, no locking).
 */
export class DirectoryBlobStore implements BlobStore {
  constructor(readonly dir: string) {}

  path(digest: string): string {
    const [alg, hex] = digest.split(':');
    if (!alg || !hex || !/^[a-f0-9]+$/.test(hex)) throw new KitError(`${digest} is not a digest`);
    return join(this.dir, 'blobs', alg, hex);
  }

  async has(digest: string): Promise<boolean> {
    try {
      await stat(this.path(digest));
      return true;
    } catch {
      return false;
    }
  }

  private check(got: { digest: string; size: number }, expected?: { digest?: string; size?: number }) {
    if (expected?.digest && expected.digest !== got.digest)
      throw new Error(`blob digest ${got.digest} is different than the expected ${expected.digest}`);
    if (expected?.size !== undefined && expected.size !== got.size)
      throw new Error(`blob size ${got.size} is different than the expected ${expected.size}`);
  }

  async putStream(
    stream: Readable,
    mediaType: string,
    expected?: { digest?: string; size?: number },
  ): Promise<Descriptor> {
    await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
    const tmp = join(this.dir, 'blobs', `.tmp-${randomBytes(6).toString('hex')}`);
    const h = createHash('sha256');
    let size = 0;
    try {
      await pipeline(
        stream,
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            h.update(chunk);
            size += chunk.length;
            yield chunk;
          }
        },
        createWriteStream(tmp),
      );
      const got = { digest: `sha256:${h.digest('hex')}`, size };
      this.check(got, expected);
      await rename(tmp, this.path(got.digest));
      return { mediaType, ...got };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  async putFile(
    path: string,
    mediaType: string,
    expected?: { digest?: string; size?: number },
  ): Promise<Descriptor> {
    const got = await sha256File(path);
    this.check(got, expected);
    const dest = this.path(got.digest);
    if (!(await this.has(got.digest))) {
      await mkdir(join(this.dir, 'blobs', 'sha256'), { recursive: true });
      const tmp = `${dest}.tmp-${randomBytes(6).toString('hex')}`;
      try {
        await link(path, tmp);
      } catch {
        await copyFile(path, tmp);
      }
      await rename(tmp, dest).catch(async (e) => {
        await unlink(tmp).catch(() => {});
        throw e;
      });
    }
    return { mediaType, ...got };
  }

  putJson(value: unknown, mediaType: string): Promise<Descriptor> {
    return this.putStream(Readable.from([Buffer.from(JSON.stringify(value))]), mediaType);
  }

  async open(digest: string): Promise<Readable> {
    if (!(await this.has(digest))) throw new Error(`blob ${digest} is not in the store`);
    return createReadStream(this.path(digest));
  }

  async readJson<T>(digest: string): Promise<T> {
    return JSON.parse(await readFile(this.path(digest), 'utf8')) as T;
  }
}

/** The digest of a layer's uncompressed tar (its diff id). */
export async function diffIdOf(blobs: BlobStore, layer: Descriptor): Promise<string> {
  const s = await blobs.open(layer.digest);
  if (/gzip$/.test(layer.mediaType))
    return sha256Stream(
      s.pipe(createGunzip({ chunkSize: 1 << 18, readableHighWaterMark: 1 << 22 } as ZlibOptions)),
    );
  if (/zstd$/.test(layer.mediaType)) {
    s.destroy();
    throw new KitError(`layer ${layer.digest} is zstd-compressed; the kit cannot compute its diff id`);
  }
  return sha256Stream(s);
}

/** What the host's `ctx.imageFromLayers` does, in short: a config with the layers' diff
 * ids and a manifest, both put in `blobs`. */
export async function imageFromLayers(
  blobs: BlobStore,
  layers: Descriptor[],
  identity: string,
  platform: { os: string; architecture: string },
): Promise<BaseImage> {
  const diffIds: string[] = [];
  for (const l of layers) diffIds.push(await diffIdOf(blobs, l));
  const config: ImageConfig = {
    architecture: platform.architecture,
    os: platform.os,
    config: {},
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: layers.map(() => ({ created_by: `import ${identity}` })),
  };
  const cdesc = await blobs.putJson(config, MEDIA_TYPES.config);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.manifest,
    config: cdesc,
    layers,
  };
  const mdesc = await blobs.putJson(manifest, MEDIA_TYPES.manifest);
  return { manifest, manifestDigest: mdesc.digest, config, identity, layers };
}

/** A SourceContext for tests: blobs in `dir`, cache in `dir/cache`, paths relative to the
 * stacker file's directory. */
export function testSourceContext(dir: string, overrides: Partial<SourceContext> = {}): SourceContext {
  const blobs = overrides.blobs ?? new DirectoryBlobStore(dir);
  const stackerFile = overrides.stackerFile ?? join(dir, 'stacker.yaml');
  const platform = overrides.platform ?? hostPlatform();
  const log: Logger = overrides.log ?? silentLogger;
  return {
    stanza: 'test',
    stackerFile,
    resolvePath: (p) => (p.startsWith('/') ? p : join(stackerFile, '..', p)),
    cacheDir: join(dir, 'cache'),
    blobs,
    platform,
    log,
    builtImage: async (name) => fail(`the source asked for the built image ${name}; pass context.builtImage`),
    imageFromLayers: (layers, identity) => imageFromLayers(blobs, layers, identity, platform),
    signal: new AbortController().signal,
    ...overrides,
  };
}

function issueText(error: { issues: Array<{ path: PropertyKey[]; message: string }> }): string {
  const i = error.issues[0];
  return `${i.path.map(String).join('.') || '(top)'}: ${i.message}`;
}

async function checkBase(base: unknown, blobs: BlobStore, what: string): Promise<BaseImage> {
  const shape = baseImageShape.safeParse(base);
  if (!shape.success) fail(`${what} returned something that is not a base image: ${issueText(shape.error)}`);
  const b = base as BaseImage;
  const blob = async (d: Descriptor, role: string) => {
    if (!(await blobs.has(d.digest))) fail(`${what}: the ${role} ${d.digest} is not in the blob store`);
    const got = await sha256File(blobs.path(d.digest));
    if (got.digest !== d.digest)
      fail(`${what}: the ${role} blob's content hashes to ${got.digest}, not ${d.digest}`);
    if (got.size !== d.size)
      fail(`${what}: the ${role} ${d.digest} is ${got.size} bytes, its descriptor says ${d.size}`);
  };
  if (!(await blobs.has(b.manifestDigest)))
    fail(`${what}: the manifest ${b.manifestDigest} is not in the blob store`);
  const storedManifest = await blobs.readJson<ImageManifest>(b.manifestDigest);
  try {
    deepStrictEqual(storedManifest, JSON.parse(JSON.stringify(b.manifest)));
  } catch {
    fail(`${what}: the stored manifest ${b.manifestDigest} differs from the manifest returned`);
  }
  await blob(b.manifest.config, 'config');
  const storedConfig = await blobs.readJson<ImageConfig>(b.manifest.config.digest);
  try {
    deepStrictEqual(storedConfig, JSON.parse(JSON.stringify(b.config)));
  } catch {
    fail(`${what}: the stored config ${b.manifest.config.digest} differs from the config returned`);
  }
  const layers = b.manifest.layers;
  if (b.config.rootfs.diff_ids.length !== layers.length)
    fail(`${what}: ${layers.length} layers but ${b.config.rootfs.diff_ids.length} diff ids in the config`);
  for (const [i, l] of layers.entries()) {
    await blob(l, `layer ${i}`);
    if (/zstd$/.test(l.mediaType)) continue;
    const diffId = await diffIdOf(blobs, l);
    if (diffId !== b.config.rootfs.diff_ids[i])
      fail(
        `${what}: layer ${i}'s uncompressed digest is ${diffId}, the config's diff id ${b.config.rootfs.diff_ids[i]}`,
      );
  }
  return b;
}

export async function checkSource(source: unknown, options: SourceKitOptions): Promise<SourceKitReport> {
  const checks: string[] = [];
  const shape = pluginModuleShape.safeParse({ sources: [source] });
  if (!shape.success) fail(`the source does not follow the contract: ${issueText(shape.error)}`);
  const s = source as Source;
  checks.push(`shape: type "${s.type}", a zod schema, resolve()`);

  if (options.valid.length === 0) fail('give at least one valid from: mapping');
  const parsed: Array<{ type: string }> = [];
  for (const from of options.valid) {
    if (from.type !== s.type) fail(`valid mapping ${JSON.stringify(from)} is not of type "${s.type}"`);
    const r = s.schema.safeParse(from);
    if (!r.success) fail(`the schema rejects ${JSON.stringify(from)}: ${issueText(r.error)}`);
    if ((r.data as { type?: unknown }).type !== s.type)
      fail(`the schema's output for ${JSON.stringify(from)} lost its type "${s.type}"`);
    parsed.push(r.data as { type: string });
  }
  checks.push(`schema accepts ${options.valid.length} valid mapping(s)`);
  for (const from of options.invalid ?? []) {
    const r = s.schema.safeParse(from);
    if (r.success) fail(`the schema accepts ${JSON.stringify(from)}, which should be rejected`);
    if (r.error.issues.length === 0)
      fail(`the schema rejects ${JSON.stringify(from)} without an issue to show`);
  }
  if (options.invalid?.length) checks.push(`schema rejects ${options.invalid.length} invalid mapping(s)`);

  if (s.dependencies) {
    for (const from of parsed) {
      const deps = s.dependencies(from);
      if (!Array.isArray(deps) || deps.some((d) => typeof d !== 'string'))
        fail(`dependencies(${JSON.stringify(from)}) must return a list of layer names`);
    }
    checks.push('dependencies() returns layer names');
  }

  const workDir = options.workDir ?? (await mkdtemp(join(tmpdir(), 'source-kit-')));
  await mkdir(workDir, { recursive: true });
  try {
    if (options.resolve === false) return { checks, workDir };
    const ctx = testSourceContext(workDir, options.context);
    const from = parsed[0];
    if (s.identity) {
      const a = await s.identity(from, ctx);
      if (typeof a !== 'string' || a === '') fail('identity() must return a non-empty string');
      const b = await s.identity(from, ctx);
      if (a !== b) fail(`identity() is not stable: "${a}" then "${b}"`);
      checks.push(`identity() is stable: ${a}`);
    }
    const base = await checkBase(await s.resolve(from, ctx), ctx.blobs, 'resolve()');
    checks.push(
      `resolve() gives a base image of ${base.manifest.layers.length} layer(s) whose blobs, config and diff ids check out`,
    );
    const again = await checkBase(await s.resolve(from, ctx), ctx.blobs, 'a second resolve()');
    if (again.identity !== base.identity)
      fail(`resolve() is not idempotent: identity "${base.identity}" then "${again.identity}"`);
    checks.push('a second resolve() gives the same identity');
    return { checks, base, workDir };
  } finally {
    if (!options.workDir) await rm(workDir, { recursive: true, force: true });
  }
}
