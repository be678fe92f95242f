import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  Readable,
  pipeline as streamPipeline,
  Transform,
  type TransformCallback,
  Writable,
} from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  type BlobStore,
  type Descriptor,
  type ImageConfig,
  type ImageManifest,
  MEDIA_TYPES,
} from '@stacker/plugin-api';
import { canonicalJson, digestHex, HashingStream, isDigest, sha256Digest } from './digest.js';
import {
  badIndex,
  badJson,
  badManifest,
  badTag,
  blobMissing,
  digestMismatch,
  noSpace,
  notALayout,
  sizeMismatch,
  tagNotFound,
} from './errors.js';

/** The annotation that names a tag in index.json. */
export const REF_NAME = 'org.opencontainers.image.ref.name';

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
  [extra: string]: unknown;
}

export interface ReadImage {
  /** The descriptor the tag points at (as stored in index.json). */
  descriptor: Descriptor;
  manifest: ImageManifest;
  manifestDigest: string;
  config: ImageConfig;
}

export interface ValidationProblem {
  digest: string;
  problem: 'missing' | 'size' | 'digest' | 'json';
  message: string;
}

export interface GcResult {
  /** Digests of the blobs removed. */
  removed: string[];
  /** Names of the stale temporary files removed. */
  tempFiles: string[];
}

const TEMP_PREFIX = '.tmp-';
const LAYOUT_VERSION = '1.0.0';

// Writers of index.json inside this process wait for each other, keyed by the layout's
// absolute path, so that two OciLayout objects on one directory still serialize.
const indexLocks = new Map<string, Promise<unknown>>();

/**
 * An OCI image layout on disk: `oci-layout`, `index.json` and `blobs/sha256/`.
 * Blobs are written to a temporary file in `blobs/` and renamed once their digest checks;
 * index.json is replaced atomically; so an interrupted writer never leaves a broken layout.
 */
export class OciLayout implements BlobStore {
  /** Temp files this object is writing now (gc leaves them alone). */
  private readonly activeTemps = new Set<string>();

  private constructor(readonly dir: string) {}

  /** Create the layout if needed (an existing one is opened as it is). */
  static async init(dir: string): Promise<OciLayout> {
    const abs = resolve(dir);
    await fsp.mkdir(join(abs, 'blobs', 'sha256'), { recursive: true });
    // index.json first: oci-layout is what marks a complete layout, so a writer killed
    // between the two leaves a directory the next init finishes, never a half layout.
    const indexFile = join(abs, 'index.json');
    if (!(await exists(indexFile))) {
      await writeAtomic(
        indexFile,
        canonicalJson({ schemaVersion: 2, mediaType: MEDIA_TYPES.index, manifests: [] }),
      );
    }
    const layoutFile = join(abs, 'oci-layout');
    if (!(await exists(layoutFile))) {
      await writeAtomic(layoutFile, canonicalJson({ imageLayoutVersion: LAYOUT_VERSION }));
    }
    return OciLayout.open(abs);
  }

  /** Open an existing layout; a user error if `dir` is not one. */
  static async open(dir: string): Promise<OciLayout> {
    const abs = resolve(dir);
    let text: string;
    try {
      text = await fsp.readFile(join(abs, 'oci-layout'), 'utf8');
    } catch (e) {
      throw notALayout(
        abs,
        (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no oci-layout file' : String(e),
      );
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw notALayout(abs, 'oci-layout is not JSON');
    }
    if (typeof (parsed as { imageLayoutVersion?: unknown })?.imageLayoutVersion !== 'string') {
      throw notALayout(abs, 'oci-layout has no imageLayoutVersion');
    }
    await fsp.mkdir(join(abs, 'blobs', 'sha256'), { recursive: true });
    const layout = new OciLayout(abs);
    await layout.readIndex();
    await layout.removeDeadWritersTemps();
    return layout;
  }

  /**
   * Remove the temp files of writers that died (a killed build): their names carry the
   * writer's pid, and a temp of a live process is left alone.
   */
  async removeDeadWritersTemps(): Promise<string[]> {
    const removed: string[] = [];
    for (const dir of [join(this.dir, 'blobs'), this.dir]) {
      let names: string[];
      try {
        names = await fsp.readdir(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        const m = /^(?:\.tmp-|index\.json\.tmp-|oci-layout\.tmp-)(\d+)-/.exec(name);
        if (!m || processAlive(Number(m[1]))) continue;
        await fsp.rm(join(dir, name), { force: true });
        removed.push(name);
      }
    }
    return removed;
  }

  // ---- blobs ----------------------------------------------------------------------------

  path(digest: string): string {
    return join(this.dir, 'blobs', 'sha256', digestHex(digest));
  }

  async has(digest: string): Promise<boolean> {
    return exists(this.path(digest));
  }

  async putStream(
    stream: Readable,
    mediaType: string,
    expected: { digest?: string; size?: number } = {},
  ): Promise<Descriptor> {
    if (expected.digest !== undefined) digestHex(expected.digest);
    const hasher = new HashingStream();
    const what = `blob${expected.digest ? ` ${expected.digest}` : ''}`;
    if (expected.digest && (await this.has(expected.digest))) {
      // Already stored: still consume the stream and check it is what the caller said.
      await pipeline(stream, hasher, sink());
      verify(what, expected, hasher);
      return { mediaType, digest: expected.digest, size: hasher.size };
    }
    const tmp = this.tempPath();
    this.activeTemps.add(tmp);
    try {
      await pipeline(stream, hasher, createWriteStream(tmp, { flags: 'wx', mode: 0o644, flush: true }));
      verify(what, expected, hasher);
      await fsp.rename(tmp, this.path(hasher.digest()));
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw isNoSpace(e) ? noSpace(this.dir, e) : e;
    } finally {
      this.activeTemps.delete(tmp);
    }
    return { mediaType, digest: hasher.digest(), size: hasher.size };
  }

  async putFile(
    path: string,
    mediaType: string,
    expected: { digest?: string; size?: number } = {},
  ): Promise<Descriptor> {
    if (expected.digest !== undefined) digestHex(expected.digest);
    if (expected.digest && (await this.has(expected.digest))) {
      return this.putStream(createReadStream(path), mediaType, expected);
    }
    // Hard link to a temp name first, then hash through the link: what we verify is the
    // very inode that becomes the blob.
    const tmp = this.tempPath();
    this.activeTemps.add(tmp);
    try {
      try {
        await fsp.link(path, tmp);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (
          code === 'EXDEV' ||
          code === 'EPERM' ||
          code === 'EMLINK' ||
          code === 'ENOTSUP' ||
          code === 'EACCES'
        ) {
          return await this.putStream(createReadStream(path), mediaType, expected);
        }
        throw e;
      }
      const hasher = new HashingStream();
      await pipeline(createReadStream(tmp), hasher, sink());
      verify(`file ${path}`, expected, hasher);
      await fsp.rename(tmp, this.path(hasher.digest()));
      return { mediaType, digest: hasher.digest(), size: hasher.size };
    } finally {
      await fsp.rm(tmp, { force: true });
      this.activeTemps.delete(tmp);
    }
  }

  async putJson(value: unknown, mediaType: string): Promise<Descriptor> {
    const bytes = Buffer.from(canonicalJson(value));
    const digest = sha256Digest(bytes);
    // a blob already stored with exactly these bytes is not written again (temp file, fsync,
    // rename): a cached rebuild makes the same configs and manifests every time
    const stored = await fsp.readFile(this.path(digest)).catch(() => undefined);
    if (stored?.equals(bytes)) return { mediaType, digest, size: bytes.length };
    return this.putStream(Readable.from([bytes]), mediaType);
  }

  async putConfig(config: ImageConfig, mediaType: string = MEDIA_TYPES.config): Promise<Descriptor> {
    return this.putJson(config, mediaType);
  }

  async putManifest(manifest: ImageManifest, mediaType: string = MEDIA_TYPES.manifest): Promise<Descriptor> {
    const value =
      manifest.mediaType === undefined && mediaType === MEDIA_TYPES.manifest
        ? { ...manifest, mediaType }
        : manifest;
    return this.putJson(value, mediaType);
  }

  /** A read stream of the blob that fails at its end if the content does not match. */
  async open(digest: string): Promise<Readable> {
    const path = this.path(digest);
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(path, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw blobMissing(digest, this.dir);
      throw e;
    }
    const hash = createHash('sha256');
    const verifier = new Transform({
      transform(chunk: Buffer, _e, cb: TransformCallback) {
        hash.update(chunk);
        cb(null, chunk);
      },
      flush(cb: TransformCallback) {
        const actual = `sha256:${hash.digest('hex')}`;
        cb(actual === digest ? null : digestMismatch(`blob ${digest}`, digest, actual));
      },
    });
    // pipeline (not pipe) so that a reader giving up early also closes the file.
    return streamPipeline(handle.createReadStream({ highWaterMark: 1 << 20 }), verifier, () => {});
  }

  async readJson<T>(digest: string): Promise<T> {
    const chunks: Buffer[] = [];
    for await (const chunk of await this.open(digest)) chunks.push(chunk as Buffer);
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8')) as T;
    } catch (e) {
      throw badJson(digest, (e as Error).message);
    }
  }

  // ---- index and tags -------------------------------------------------------------------

  async readIndex(): Promise<ImageIndex> {
    let text: string;
    try {
      text = await fsp.readFile(join(this.dir, 'index.json'), 'utf8');
    } catch (e) {
      throw notALayout(
        this.dir,
        (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no index.json' : String(e),
      );
    }
    let index: ImageIndex;
    try {
      index = JSON.parse(text);
    } catch (e) {
      throw badIndex(this.dir, (e as Error).message);
    }
    if (index === null || typeof index !== 'object' || !Array.isArray(index.manifests)) {
      throw badIndex(this.dir, 'it has no manifests list');
    }
    for (const d of index.manifests) {
      if (!d || !isDigest(d.digest) || typeof d.size !== 'number')
        throw badIndex(this.dir, 'a descriptor has no valid digest or size');
    }
    return index;
  }

  /** Point tag `name` at `descriptor` (replacing what it pointed at). */
  async tag(name: string, descriptor: Descriptor): Promise<void> {
    checkTag(name);
    digestHex(descriptor.digest);
    await this.updateIndex((index) => {
      const entry: Descriptor = {
        ...descriptor,
        annotations: { ...(descriptor.annotations ?? {}), [REF_NAME]: name },
      };
      // Keep the tag's place in the list when it moves; drop any duplicate of it.
      let placed = false;
      const next: Descriptor[] = [];
      for (const d of index.manifests) {
        if (d.annotations?.[REF_NAME] !== name) next.push(d);
        else if (!placed) {
          next.push(entry);
          placed = true;
        }
      }
      if (!placed) next.push(entry);
      index.manifests = next;
    });
  }

  /** Remove tag `name`; returns whether it existed. */
  async untag(name: string): Promise<boolean> {
    let found = false;
    await this.updateIndex((index) => {
      const kept = index.manifests.filter((d) => d.annotations?.[REF_NAME] !== name);
      found = kept.length !== index.manifests.length;
      index.manifests = kept;
    });
    return found;
  }

  async findTag(name: string): Promise<Descriptor | undefined> {
    const index = await this.readIndex();
    return index.manifests.find((d) => d.annotations?.[REF_NAME] === name);
  }

  async resolveTag(name: string): Promise<Descriptor> {
    const found = await this.findTag(name);
    if (!found) throw tagNotFound(name, this.dir);
    return found;
  }

  async listTags(): Promise<string[]> {
    const index = await this.readIndex();
    const tags: string[] = [];
    for (const d of index.manifests) {
      const name = d.annotations?.[REF_NAME];
      if (name !== undefined && !tags.includes(name)) tags.push(name);
    }
    return tags;
  }

  /**
   * The image a tag names. A tag on an image index picks the entry for `platform` (or the
   * first entry when none is given).
   */
  async readImage(tag: string, platform?: { os: string; architecture: string }): Promise<ReadImage> {
    const descriptor = await this.resolveTag(tag);
    let target = descriptor;
    for (let depth = 0; isIndexType(target.mediaType); depth++) {
      if (depth > 8) throw badManifest(target.digest, 'image indexes nest too deeply');
      const index = await this.readJson<ImageIndex>(target.digest);
      const list = Array.isArray(index?.manifests) ? index.manifests : [];
      const pick = platform
        ? list.find(
            (d) => d.platform?.os === platform.os && d.platform?.architecture === platform.architecture,
          )
        : list[0];
      if (!pick)
        throw badManifest(
          target.digest,
          platform ? `no entry for ${platform.os}/${platform.architecture}` : 'the index is empty',
        );
      target = pick;
    }
    const manifest = await this.readJson<ImageManifest>(target.digest);
    if (
      !manifest ||
      typeof manifest !== 'object' ||
      !manifest.config ||
      !isDigest(manifest.config.digest) ||
      !Array.isArray(manifest.layers)
    ) {
      throw badManifest(target.digest, 'it has no config or layers');
    }
    const config = await this.readJson<ImageConfig>(manifest.config.digest);
    return { descriptor, manifest, manifestDigest: target.digest, config };
  }

  // ---- maintenance ----------------------------------------------------------------------

  /**
   * Remove blobs nothing in index.json reaches, and temp files older than `tempGraceMs`
   * that no writer of this process is using. Do not run it while another process writes
   * to the layout: a blob put but not yet tagged would be removed.
   */
  async gc(options: { tempGraceMs?: number } = {}): Promise<GcResult> {
    const grace = options.tempGraceMs ?? 60_000;
    return this.withIndexLock(async () => {
      const reachable = await this.reachable();
      const removed: string[] = [];
      const tempFiles: string[] = [];
      const blobDir = join(this.dir, 'blobs', 'sha256');
      for (const name of await fsp.readdir(blobDir)) {
        const digest = `sha256:${name}`;
        const full = join(blobDir, name);
        if (isDigest(digest)) {
          if (!reachable.has(digest)) {
            await fsp.rm(full, { force: true });
            removed.push(digest);
          }
        } else if (name.startsWith(TEMP_PREFIX) && (await isStale(full, grace, this.activeTemps))) {
          await fsp.rm(full, { force: true });
          tempFiles.push(name);
        }
      }
      for (const dir of [join(this.dir, 'blobs'), this.dir]) {
        for (const name of await fsp.readdir(dir)) {
          const full = join(dir, name);
          if (name.startsWith(TEMP_PREFIX) || name.startsWith('index.json.tmp-')) {
            if (await isStale(full, grace, this.activeTemps)) {
              await fsp.rm(full, { force: true });
              tempFiles.push(name);
            }
          }
        }
      }
      return { removed: removed.sort(), tempFiles };
    });
  }

  /** Check every blob reachable from index.json: present, right size, right digest. */
  async validate(): Promise<ValidationProblem[]> {
    const problems: ValidationProblem[] = [];
    const seen = new Set<string>();
    const visit = async (d: Descriptor): Promise<void> => {
      if (seen.has(d.digest)) return;
      seen.add(d.digest);
      const path = this.path(d.digest);
      let size: number;
      try {
        size = (await fsp.stat(path)).size;
      } catch {
        problems.push({ digest: d.digest, problem: 'missing', message: `blob ${d.digest} is missing` });
        return;
      }
      if (size !== d.size) {
        problems.push({
          digest: d.digest,
          problem: 'size',
          message: `blob ${d.digest} has ${size} bytes, descriptor says ${d.size}`,
        });
      }
      const hasher = new HashingStream();
      await pipeline(createReadStream(path), hasher, sink());
      if (hasher.digest() !== d.digest) {
        problems.push({
          digest: d.digest,
          problem: 'digest',
          message: `blob ${d.digest} hashes to ${hasher.digest()}`,
        });
        return;
      }
      if (isIndexType(d.mediaType) || isManifestType(d.mediaType)) {
        let value: { manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
        try {
          value = JSON.parse(await fsp.readFile(path, 'utf8'));
        } catch (e) {
          problems.push({
            digest: d.digest,
            problem: 'json',
            message: `blob ${d.digest} is not JSON: ${(e as Error).message}`,
          });
          return;
        }
        for (const child of children(value)) {
          if (!isDigest(child.digest)) {
            problems.push({
              digest: d.digest,
              problem: 'json',
              message: `blob ${d.digest} names an invalid digest`,
            });
          } else await visit(child);
        }
      }
    };
    for (const d of (await this.readIndex()).manifests) await visit(d);
    return problems;
  }

  // ---- internals ------------------------------------------------------------------------

  private tempPath(): string {
    return join(this.dir, 'blobs', `${TEMP_PREFIX}${process.pid}-${randomBytes(8).toString('hex')}`);
  }

  private async reachable(): Promise<Set<string>> {
    const seen = new Set<string>();
    const visit = async (d: Descriptor): Promise<void> => {
      if (!isDigest(d?.digest) || seen.has(d.digest)) return;
      seen.add(d.digest);
      if (!(isIndexType(d.mediaType) || isManifestType(d.mediaType))) return;
      let value: unknown;
      try {
        value = JSON.parse(await fsp.readFile(this.path(d.digest), 'utf8'));
      } catch {
        return; // missing or corrupt: keep what we know, validate() reports it
      }
      for (const child of children(value as object)) await visit(child);
    };
    for (const d of (await this.readIndex()).manifests) await visit(d);
    return seen;
  }

  private async updateIndex(change: (index: ImageIndex) => void): Promise<void> {
    await this.withIndexLock(async () => {
      const index = await this.readIndex();
      change(index);
      try {
        await writeAtomic(join(this.dir, 'index.json'), canonicalJson(index));
      } catch (e) {
        throw isNoSpace(e) ? noSpace(this.dir, e) : e;
      }
    });
  }

  private async withIndexLock<T>(fn: () => Promise<T>): Promise<T> {
    const previous = indexLocks.get(this.dir) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const settled = run.catch(() => undefined);
    indexLocks.set(this.dir, settled);
    try {
      return await run;
    } finally {
      if (indexLocks.get(this.dir) === settled) indexLocks.delete(this.dir);
    }
  }
}

function isNoSpace(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function sink(): Writable {
  return new Writable({ write: (_chunk, _enc, cb) => cb() });
}

function verify(what: string, expected: { digest?: string; size?: number }, hasher: HashingStream): void {
  if (expected.size !== undefined && expected.size !== hasher.size)
    throw sizeMismatch(what, expected.size, hasher.size);
  if (expected.digest !== undefined && expected.digest !== hasher.digest())
    throw digestMismatch(what, expected.digest, hasher.digest());
}

function checkTag(name: string): void {
  if (typeof name !== 'string' || name.length === 0 || /[\s\x00-\x1f\x7f]/.test(name))
    throw badTag(String(name));
}

function isIndexType(mediaType: string | undefined): boolean {
  return mediaType === MEDIA_TYPES.index || mediaType === MEDIA_TYPES.dockerManifestList;
}

function isManifestType(mediaType: string | undefined): boolean {
  return mediaType === MEDIA_TYPES.manifest || mediaType === MEDIA_TYPES.dockerManifest;
}

function children(value: {
  manifests?: unknown;
  config?: unknown;
  layers?: unknown;
  subject?: unknown;
}): Descriptor[] {
  const out: Descriptor[] = [];
  if (!value || typeof value !== 'object') return out;
  if (Array.isArray(value.manifests)) out.push(...(value.manifests as Descriptor[]));
  if (value.config && typeof value.config === 'object') out.push(value.config as Descriptor);
  if (Array.isArray(value.layers)) out.push(...(value.layers as Descriptor[]));
  if (value.subject && typeof value.subject === 'object') out.push(value.subject as Descriptor);
  return out.filter((d) => d && typeof d === 'object');
}

async function exists(path: string): Promise<boolean> {
  try {
    await fsp.lstat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

async function isStale(path: string, graceMs: number, active: Set<string>): Promise<boolean> {
  if (active.has(path)) return false;
  try {
    const st = await fsp.lstat(path);
    return Date.now() - st.mtimeMs >= graceMs;
  } catch {
    return false;
  }
}

/** Write a small file by temp + fsync + rename, then fsync the directory. */
async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  const fh = await fsp.open(tmp, 'wx', 0o644);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  // test hook (e2e/src/crash.test.ts): hold a written temp index.json so a kill lands here
  const pause = Number(process.env._STACKER_TEST_INDEX_PAUSE_MS ?? 0);
  if (pause > 0 && path.endsWith('index.json')) {
    process.stderr.write(`test pause: ${tmp} written, not renamed yet\n`);
    await new Promise((r) => setTimeout(r, pause));
  }
  try {
    await fsp.rename(tmp, path);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  const dir = await fsp.open(join(path, '..'), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
