import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { availableParallelism, hostname, release, userInfo } from 'node:os';
import { dirname, join, posix, resolve as resolvePath } from 'node:path';
import {
  canonicalJson,
  type ImageIndex,
  isDigest,
  OciLayout,
  putLayer,
  REF_NAME,
  sortChanges,
  unpackLayer,
} from '@stacker/oci';
import {
  type BaseImage,
  type BlobStore,
  type Change,
  type Descriptor,
  type DriverContext,
  type ImageConfig,
  isUserError,
  type Logger,
  MEDIA_TYPES,
  type Source,
  type SourceContext,
  type StorageDriver,
  UserError,
  type Viewer,
} from '@stacker/plugin-api';
import {
  cleanupContainers,
  createInRoot,
  makeBundle,
  RUN_SCRIPT_PATH,
  runContainer,
  writeRunScript,
} from '@stacker/runtime';
import type { Layer, StackerFile } from '@stacker/stackerfile';
import { rememberBuildOnly } from './build-only.js';
import { BuildCache, type CacheEntry, hashLocalPath, stanzaKey } from './cache.js';
import { chainIds } from './chain.js';
import { planBuild } from './dag.js';
import { computeDiffId, diffIdAwareBlobs } from './diffid.js';
import { buildImageConfig, buildManifest, hostPlatform, isoTime } from './image-config.js';
import {
  checkRequiredHash,
  destinationOf,
  HttpDownloads,
  isHttp,
  placeImport,
  type StagedImport,
  stageImports,
} from './imports.js';
import { extraFlavours } from './layer-types.js';
import { DirLock } from './lock.js';
import type { PluginRegistry } from './registry.js';
import { runEnvironment } from './run-env.js';
import { SnapshotStore, shortId } from './snapshots.js';

export interface BuildSettings {
  stackerDir: string;
  ociDir: string;
  rootsDir: string;
  storageType: string;
  runtime: string;
  sourceDateEpoch?: number;
}

export interface BuildOptions {
  /** Parsed stacker files, prerequisites first. */
  files: StackerFile[];
  settings: BuildSettings;
  registry: PluginRegistry;
  log: Logger;
  requireHash?: boolean;
  /** Command run in the failed container when a `run` step fails (`--on-run-failure`). */
  onRunFailure?: string;
  annotationsNamespace?: string;
  stackerVersion: string;
  /** Concurrent stanzas (default: number of cores). */
  jobs?: number;
  signal?: AbortSignal;
  /** `user@host` for the config's author (default: this process's user and host). */
  author?: string;
  /** Ignore the build cache (`--no-cache`): rebuild every stanza. */
  noCache?: boolean;
  /** Progress callback for the live view. */
  onEvent?: (e: BuildEvent) => void;
  /** Byte progress of a source's transfers (downloads), for the live view. */
  onProgress?: (p: TransferProgress) => void;
  /** `--layer-type`s to tag (default `['tar']`): `tar` tags NAME, others NAME-TYPE. */
  layerTypes?: string[];
}

/** `done` of `total` bytes of `label` (a source's download) for `stanza`. */
export type TransferProgress = { stanza: string; label: string; done: number; total: number };

export type BuildEvent = {
  stanza: string;
  state: 'queued' | 'resolving' | 'running' | 'diffing' | 'writing' | 'done' | 'cached' | 'failed';
};

export interface BuiltStanza {
  name: string;
  image: BaseImage;
  /** Committed snapshot name of the image's top layer (undefined for an empty image). */
  snapshot?: string;
  buildOnly: boolean;
  /** The cache key it was built (or found) under; children built from it use it. */
  cacheKey: string;
  cached: boolean;
  /** The index.json descriptor its tag gets. */
  tag: Descriptor;
  /** The other layer types' images, by the tag they get (`NAME-squashfs`). */
  flavours?: Record<string, Descriptor>;
}

/** A stanza not started because an earlier one failed or the build was interrupted. */
class Skipped extends Error {
  constructor() {
    super('skipped');
  }
}

export interface BuildResult {
  built: Map<string, BuiltStanza>;
}

async function gitVersion(dir: string): Promise<string | undefined> {
  // no repository for git to find: no git to run
  if (!process.env.GIT_DIR && !(await mayBeInGitRepo(dir))) return undefined;
  // As stacker: the nearest tag (`describe --tags`), else the full commit hash, plus
  // `-dirty` when tracked files changed. Inside the user namespace a checkout owned by
  // someone else fails git's safe.directory check; these queries only read, so trust it.
  const git = (...args: string[]) =>
    // child_process, not execa: loading execa costs more than git takes here
    new Promise<string | undefined>((resolve) => {
      execFile('git', ['-c', 'safe.directory=*', '-C', dir, ...args], (err, stdout) =>
        resolve(err ? undefined : stdout),
      );
    });
  const version = (await git('describe', '--tags')) ?? (await git('rev-parse', 'HEAD'));
  if (version === undefined) return undefined;
  const status = await git('status', '--porcelain', '--untracked-files=no');
  if (status === undefined) return undefined;
  return status.length === 0 ? version.trim() : `${version.trim()}-dirty`;
}

/**
 * Could git find a repository from `dir`? Not when neither `dir` (as git sees it, symlinks
 * resolved) nor a directory above it has a `.git` or looks like a bare repository (has a
 * `HEAD`): then git describe can only fail.
 */
async function mayBeInGitRepo(dir: string): Promise<boolean> {
  let d: string;
  try {
    d = await fsp.realpath(dir);
  } catch {
    return true;
  }
  for (;;) {
    if ((await exists(join(d, '.git'))) || (await exists(join(d, 'HEAD')))) return true;
    if (dirname(d) === d) return false;
    d = dirname(d);
  }
}

/**
 * The build engine: for every stanza of every file, in dependency order, resolve its base,
 * make sure the base layers are snapshots in storage, run its `run` steps under runc on a
 * writable snapshot, turn the changes into a layer and write the image to the OCI layout.
 */
export class Builder {
  private layout!: OciLayout;
  private driver!: StorageDriver & Partial<Viewer>;
  private built = new Map<string, BuiltStanza>();
  private snapshots!: SnapshotStore;
  private diffIdCache = new Map<string, Promise<string>>();
  private blobs!: BlobStore;
  private gitVersions = new Map<string, Promise<string | undefined>>();
  private log: Logger;
  private cache!: BuildCache;
  private sources = new Map<Layer, Promise<{ source: Source; from: unknown }>>();
  private downloads?: HttpDownloads;

  constructor(private opts: BuildOptions) {
    this.log = opts.log;
  }

  async run(): Promise<BuildResult> {
    const { settings } = this.opts;
    await fsp.mkdir(settings.stackerDir, { recursive: true });
    // 0700: an untrusted base's setuid files must not be reachable by other users of the host
    await fsp.mkdir(settings.rootsDir, { recursive: true, mode: 0o700 });
    // every file's dependencies are checked before anything is built
    for (const file of this.opts.files) this.planFile(file, this.namesBefore(file));
    // ... and every stanza's source type and `from:` keys
    for (const file of this.opts.files) for (const l of file.layers) await this.checkedSource(file, l);
    const locks = [DirLock.acquire(settings.stackerDir), DirLock.acquire(settings.rootsDir)];
    try {
      this.layout = await openOrInitLayout(settings.ociDir);
      this.cache = await BuildCache.load(settings.stackerDir, this.opts.stackerVersion, this.log);
      const factory = await this.opts.registry.storage(settings.storageType);
      const dctx: DriverContext = {
        rootsDir: settings.rootsDir,
        log: this.log,
        unpack: (tar, dir, o) => unpackLayer(tar, dir, { log: this.log, ...o }),
      };
      if (factory.check) await checkOnce(settings.rootsDir, factory.type, () => factory.check!(dctx));
      const driver = await factory.create(dctx);
      this.driver = driver;
      this.snapshots = new SnapshotStore(driver, this.layout, this.log);
      // containers of a killed build (we hold the lock: nobody else's) go before their mounts
      const stale = await cleanupContainers({
        runtime: settings.runtime,
        stateDir: join(settings.stackerDir, 'runc'),
      });
      if (stale.length) this.log.info(`removed ${stale.length} container(s) left by an interrupted build`);
      // and their bundles (a killed build never reached the removal after its step)
      await fsp.rm(join(settings.stackerDir, 'bundles'), { recursive: true, force: true });
      if (driver.cleanup) await driver.cleanup();
      // a base tarball imported for the first time is unpacked by the same decompression
      // that computes its diff id (the snapshot store takes it from there)
      this.blobs = diffIdAwareBlobs(
        this.layout,
        this.diffIdDir(),
        (digest, diffId) => {
          this.diffIdCache.set(digest, diffId);
        },
        this.snapshots,
      );
      try {
        for (const file of this.opts.files) await this.buildFile(file);
      } finally {
        await this.snapshots.dropStaged();
      }
      return { built: this.built };
    } finally {
      for (const l of locks) l.release();
    }
  }

  private planFile(file: StackerFile, available: ReadonlySet<string>) {
    return planBuild(
      file.layers.map((l) => ({
        name: l.name,
        baseTag: l.from.type === 'built' ? String(l.from.tag) : undefined,
        stackerImports: l.imports.map((i) => i.path).filter((p) => p.startsWith('stacker://')),
      })),
      { info: (m) => this.log.info(m) },
      available,
    );
  }

  /** Names built by the files before `file` (its prerequisites come first). */
  private namesBefore(file: StackerFile): Set<string> {
    const names = new Set<string>();
    for (const f of this.opts.files) {
      if (f === file) break;
      for (const l of f.layers) names.add(l.name);
    }
    return names;
  }

  /**
   * Build a file's stanzas: each starts as soon as what it needs is built, at most `jobs`
   * at a time. After the first failure nothing new starts; running ones finish. Tags are
   * written at the end in the file's serial order, so index.json does not depend on
   * which stanza happened to finish first.
   */
  private async buildFile(file: StackerFile): Promise<void> {
    const plan = this.planFile(file, this.namesBefore(file));
    const byName = new Map(file.layers.map((l) => [l.name, l]));
    const limit = Math.max(1, this.opts.jobs ?? availableParallelism());
    let running = 0;
    const waiting: (() => void)[] = [];
    const slot = async () => {
      if (running >= limit) await new Promise<void>((r) => waiting.push(r));
      running++;
    };
    const release = () => {
      running--;
      waiting.shift()?.();
    };
    const failures: unknown[] = [];
    const started = new Map<string, Promise<void>>();
    const start = (name: string): Promise<void> => {
      let p = started.get(name);
      if (!p) {
        p = (async () => {
          await Promise.all((plan.needs.get(name) ?? []).map(start));
          if (failures.length || this.opts.signal?.aborted) throw new Skipped();
          await slot();
          try {
            if (this.opts.signal?.aborted) throw new Skipped();
            await this.buildStanza(file, byName.get(name)!);
          } catch (e) {
            if (!(e instanceof Skipped)) {
              failures.push(e);
              this.event(name, 'failed');
            }
            throw e;
          } finally {
            release();
          }
        })();
        p.catch(() => {});
        started.set(name, p);
      }
      return p;
    };
    for (const name of plan.order) this.event(name, 'queued');
    // git describe runs while the first stanzas resolve (every stanza's annotations wait for it)
    if (file.layers.length > 0) this.gitVersionOf(file.dir);
    await Promise.allSettled(plan.order.map(start));
    const tags: [string, Descriptor][] = [];
    for (const name of plan.order) {
      const b = this.built.get(name);
      if (!b || b.buildOnly || !b.tag) continue;
      if ((this.opts.layerTypes ?? ['tar']).includes('tar')) tags.push([name, b.tag]);
      for (const [tag, d] of Object.entries(b.flavours ?? {})) tags.push([tag, d]);
    }
    if (!(await tagsUnchanged(this.layout, tags))) {
      this.log.debug(`updating index.json: ${tags.map(([t]) => t).join(', ')}`);
      for (const [tag, d] of tags) await this.layout.tag(tag, d);
      this.log.debug('updated index.json');
    }
    if (failures.length === 0 && this.opts.signal?.aborted)
      throw new UserError('aborted', 'build interrupted');
    if (failures.length === 1) throw failures[0];
    if (failures.length > 1) {
      const first = failures[0] as Error;
      first.message = `${first.message} (and ${failures.length - 1} more: ${failures
        .slice(1)
        .map((e) => (e as Error).message)
        .join('; ')})`;
      throw first;
    }
  }

  private event(stanza: string, state: BuildEvent['state']) {
    this.opts.onEvent?.({ stanza, state });
  }

  private sourceContext(file: StackerFile, layer: Layer): SourceContext {
    return {
      stanza: layer.name,
      stackerFile: file.path,
      resolvePath: (p) => resolvePath(file.dir, p),
      cacheDir: join(this.opts.settings.stackerDir, 'sources'),
      blobs: this.blobs,
      platform: {
        os: layer.os ?? hostPlatform().os,
        architecture: layer.arch ?? hostPlatform().architecture,
      },
      log: this.log,
      builtImage: async (name) => {
        const b = this.built.get(name);
        if (!b)
          throw new UserError(
            'built-missing',
            `${layer.name} is built from ${name}, which has not been built`,
          );
        return b.image;
      },
      imageFromLayers: (layers, identity) => this.imageFromLayers(layers, identity),
      signal: this.opts.signal ?? new AbortController().signal,
      progress: this.opts.onProgress
        ? (label, done, total) => this.opts.onProgress?.({ stanza: layer.name, label, done, total })
        : undefined,
    };
  }

  /** A base image made of plain layers (a tarball, scratch): config with their diff ids. */
  async imageFromLayers(layers: Descriptor[], identity: string): Promise<BaseImage> {
    const diffIds: string[] = [];
    for (const l of layers) diffIds.push(await this.diffIdOf(l));
    const host = hostPlatform();
    const created = await this.importTime(identity);
    const config: ImageConfig = {
      architecture: host.architecture,
      os: host.os,
      config: {},
      rootfs: { type: 'layers', diff_ids: diffIds },
      // one history entry per layer, as the image-spec asks of non-empty layers
      history: layers.map(() => ({
        created,
        created_by: `stacker import ${identity}`,
        author: this.author(),
      })),
    };
    const cdesc = await this.layout.putJson(config, MEDIA_TYPES.config);
    const manifest = buildManifest(cdesc, layers, {});
    const mdesc = await this.layout.putJson(manifest, MEDIA_TYPES.manifest);
    return { manifest, manifestDigest: mdesc.digest, config, identity, layers };
  }

  /**
   * When a base was first imported (SOURCE_DATE_EPOCH when set): remembered per base, so
   * that rebuilding from the same tarball gives the same config bytes.
   */
  private async importTime(identity: string): Promise<string> {
    const sde = this.opts.settings.sourceDateEpoch;
    if (sde !== undefined) return isoTime(sde);
    const dir = join(this.opts.settings.stackerDir, 'bases');
    const file = join(dir, `${stanzaHash(identity).slice(0, 32)}.json`);
    try {
      const v = JSON.parse(await fsp.readFile(file, 'utf8')) as { created?: string };
      if (typeof v.created === 'string') return v.created;
    } catch {
      /* first import of this base */
    }
    const created = isoTime(undefined);
    await fsp.mkdir(dir, { recursive: true });
    // unique: stanzas on the same base may get here at the same time
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await fsp.writeFile(tmp, JSON.stringify({ identity, created }));
    await fsp.rename(tmp, file);
    return created;
  }

  private diffIdDir(): string {
    return join(this.opts.settings.stackerDir, 'diffids');
  }

  private diffIdOf(layer: Descriptor): Promise<string> {
    let p = this.diffIdCache.get(layer.digest);
    if (!p) {
      p = computeDiffId(this.layout, layer, this.diffIdDir());
      this.diffIdCache.set(layer.digest, p);
    }
    return p;
  }

  /** Make sure every layer of `image` is a committed snapshot; returns the top one's name. */
  private ensureSnapshots(image: BaseImage): Promise<string | undefined> {
    return this.snapshots.ensure(image);
  }

  /**
   * The source plugin for a stanza's `from.type`, and its `from:` checked by the plugin's
   * schema; errors point at the stanza's keys. Done for every stanza of every file before
   * anything is built, so a typo in the last stanza does not wait for the first to build.
   */
  private checkedSource(file: StackerFile, layer: Layer): Promise<{ source: Source; from: unknown }> {
    let p = this.sources.get(layer);
    if (!p) {
      p = this.checkSource(file, layer);
      this.sources.set(layer, p);
    }
    return p;
  }

  private async checkSource(file: StackerFile, layer: Layer): Promise<{ source: Source; from: unknown }> {
    const name = layer.name;
    const source = await this.opts.registry.source(layer.from.type).catch((e: unknown) => {
      // unknown type, plugin that fails to load: point at the stanza's `type:`
      if (!isUserError(e) || e.place.file) throw e;
      const place = file.placeOf(name, ['from', 'type']);
      const where = place.file ? `${place.file}:${place.line}:${place.col}: ` : '';
      throw new UserError(e.code, `${where}${name}: ${e.message}`, { ...place, stanza: name }, { cause: e });
    });
    let parsed: ReturnType<typeof source.schema.safeParse>;
    try {
      parsed = source.schema.safeParse(layer.from);
    } catch (e) {
      const place = file.placeOf(name, ['from', 'type']);
      const where = place.file ? `${place.file}:${place.line}:${place.col}: ` : '';
      throw new UserError(
        'plugin',
        `${where}${name}: the schema of the source plugin for type "${layer.from.type}" failed: ${e instanceof Error ? e.message : String(e)}`,
        { ...place, stanza: name },
        { cause: e },
      );
    }
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const keyPath = ['from', ...issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p))];
      let message = `${name}: ${keyPath.join('.')}: ${issue.message}`;
      // a key the plugin's strict schema does not know: point at that key, as for core keys
      if (issue.code === 'unrecognized_keys' && issue.keys.length > 0) {
        keyPath.push(issue.keys[0]);
        const shape = (source.schema as { shape?: Record<string, unknown> }).shape;
        const known =
          shape && typeof shape === 'object' ? `; use one of: ${Object.keys(shape).join(', ')}` : '';
        message = `unknown key "${keyPath.slice(1).join('.')}" in the from of layer "${name}"${known}`;
      }
      const place = file.placeOf(name, keyPath as (string | number)[]);
      const where = place.file ? `${place.file}:${place.line}:${place.col}: ` : '';
      throw new UserError('from', `${where}${message}`, {
        ...place,
        stanza: name,
      });
    }
    return { source, from: parsed.data };
  }

  private async buildStanza(file: StackerFile, layer: Layer): Promise<BuiltStanza> {
    const name = layer.name;
    const log = this.log;
    this.event(name, 'resolving');
    log.info(`preparing image ${name}...`);
    const { source, from } = await this.checkedSource(file, layer);
    const ctx = this.sourceContext(file, layer);
    const base = await source.resolve(from, ctx);

    const sde = this.opts.settings.sourceDateEpoch;
    const key = stanzaKey({
      stackerVersion: this.opts.stackerVersion,
      canonical: layer.canonical,
      base: layer.from.type === 'built' ? this.built.get(String(layer.from.tag))?.cacheKey : base.identity,
      imports: await this.importIdentities(layer),
      sourceDateEpoch: sde,
    });
    let hit: CacheEntry | undefined;
    if (layer.binds.length > 0) {
      log.info('rebuilding cached layer due to use of binds in stacker file');
    } else if (!this.opts.noCache) {
      hit = this.cache.get(name, key);
      if (hit?.layer && !(await this.layout.has(hit.layer.digest))) hit = undefined;
    }

    let newLayer: { descriptor: Descriptor; diffId: string } | undefined;
    let snapshot: string | undefined;
    let created = isoTime(sde);
    const labels: Record<string, string> = {};
    if (hit) {
      log.info(`found cached layer ${name}`);
      this.event(name, 'cached');
      if (hit.layer && hit.diffId) newLayer = { descriptor: hit.layer, diffId: hit.diffId };
      Object.assign(labels, hit.generatedLabels);
      created = hit.created;
      const chain = chainIds([...base.config.rootfs.diff_ids, ...(newLayer ? [newLayer.diffId] : [])]);
      snapshot = chain.at(-1);
    } else {
      const built = await this.buildRootfs(file, layer, base);
      newLayer = built.layer;
      snapshot = built.snapshot;
      Object.assign(labels, built.labels);
      await this.cache.put(name, {
        key,
        layer: newLayer?.descriptor,
        diffId: newLayer?.diffId,
        generatedLabels: built.labels,
        created,
      });
    }

    const config = buildImageConfig(
      base.config,
      {
        environment: layer.environment,
        labels: { ...labels, ...layer.labels },
        volumes: layer.volumes,
        cmd: layer.cmd,
        entrypoint: layer.entrypoint,
        fullCommand: layer.fullCommand,
        workingDir: layer.workingDir,
        runtimeUser: layer.runtimeUser,
        os: layer.os,
        arch: layer.arch,
      },
      newLayer,
      { created, createdBy: `stacker build ${name}`, author: this.author() },
    );
    const ns = this.opts.annotationsNamespace ?? 'io.stackeroci';
    const annotations: Record<string, string> = {
      ...layer.annotations,
      [`${ns}.stacker.stacker_yaml`]: file.raw,
      [`${ns}.stacker.stacker_version`]: this.opts.stackerVersion,
    };
    const gitV = await this.gitVersionOf(file.dir);
    if (gitV) annotations[`${ns}.stacker.git_version`] = gitV;
    const cdesc = await this.layout.putJson(config, MEDIA_TYPES.config);
    const layers = newLayer ? [...base.manifest.layers, newLayer.descriptor] : [...base.manifest.layers];
    const manifest = buildManifest(cdesc, layers, annotations);
    const mdesc = await this.layout.putJson(manifest, MEDIA_TYPES.manifest);
    // untagged, but chroot and grab can still find it
    if (layer.buildOnly) await rememberBuildOnly(this.opts.settings.stackerDir, name, mdesc.digest);
    const image: BaseImage = {
      manifest,
      manifestDigest: mdesc.digest,
      config,
      identity: mdesc.digest,
      layers,
    };
    const result: BuiltStanza = {
      name,
      image,
      snapshot,
      buildOnly: layer.buildOnly,
      cacheKey: key,
      cached: Boolean(hit),
      tag: { ...mdesc, platform: { os: config.os, architecture: config.architecture } },
    };
    const types = this.opts.layerTypes ?? ['tar'];
    if (!layer.buildOnly && types.some((t) => t !== 'tar')) {
      this.event(name, 'writing');
      result.flavours = await extraFlavours(name, image, types, {
        layout: this.layout,
        stackerDir: this.opts.settings.stackerDir,
        log,
        sourceDateEpoch: sde,
      });
    }
    this.built.set(name, result);
    if (!hit) {
      this.event(name, 'done');
      log.info(`filesystem ${name} built successfully`);
    }
    return result;
  }

  private gitVersionOf(dir: string): Promise<string | undefined> {
    let git = this.gitVersions.get(dir);
    if (!git) {
      git = gitVersion(dir);
      this.gitVersions.set(dir, git);
    }
    return git;
  }

  /** stacker's author: `stacker` for reproducible builds, else user@host of who built it. */
  private author(): string {
    if (this.opts.settings.sourceDateEpoch !== undefined) return 'stacker';
    return this.opts.author ?? `${userInfo().username}@${hostname()}`;
  }

  /** The build's http(s) imports: each URL checked (and downloaded when changed) once. */
  private httpDownloads(): HttpDownloads {
    this.downloads ??= new HttpDownloads(
      join(this.opts.settings.stackerDir, 'downloads'),
      this.log,
      this.opts.signal,
    );
    return this.downloads;
  }

  /** What the cache key knows of each import: content hashes, not paths or times. */
  private async importIdentities(layer: Layer): Promise<string[]> {
    const out: string[] = [];
    for (const imp of layer.imports) {
      const m = /^stacker:\/\/([^/]+)(\/.*)$/.exec(imp.path);
      let id: string;
      if (m) id = `stacker:${this.built.get(m[1])?.cacheKey}:${m[2]}`;
      else if (isHttp(imp.path)) {
        // the content it has now: a changed remote file rebuilds (--require-hash refuses first)
        checkRequiredHash(imp, layer.name, Boolean(this.opts.requireHash));
        id = `http:${(await this.httpDownloads().get(imp.path, layer.name)).sha256}`;
      } else {
        try {
          id = await hashLocalPath(imp.path.replace(/^file:\/\//, ''));
        } catch {
          id = `missing:${imp.path}`; // staging reports it properly
        }
      }
      out.push(
        JSON.stringify([
          id,
          imp.hash ?? null,
          imp.dest ?? null,
          imp.mode ?? null,
          imp.uid ?? null,
          imp.gid ?? null,
        ]),
      );
    }
    return out;
  }

  /** Build the stanza's filesystem (imports, `run`) and its layer, then its `generate_labels`. */
  private async buildRootfs(
    file: StackerFile,
    layer: Layer,
    base: BaseImage,
  ): Promise<{
    layer?: { descriptor: Descriptor; diffId: string };
    snapshot?: string;
    labels: Record<string, string>;
  }> {
    const name = layer.name;
    const topSnapshot = await this.ensureSnapshots(base);
    const needsRootfs = layer.run.length > 0 || layer.imports.some((i) => i.dest !== undefined);
    let newLayer: { descriptor: Descriptor; diffId: string } | undefined;
    let snapshot = topSnapshot;
    const labels: Record<string, string> = {};
    if (!needsRootfs) {
      // imports are still fetched and their hashes checked, as stacker does
      if (layer.imports.length > 0) await this.stage(file, layer);
    } else {
      ({ layer: newLayer, snapshot } = await this.buildLayer(file, layer, base, topSnapshot));
    }
    // as stacker: in a throwaway snapshot of the result, so what the commands change on
    // disk is not part of the image, only the labels they write
    if (layer.generateLabels.length > 0) {
      const key = `labels-${name}-${shortId()}`;
      const rootfs = await this.driver.prepare(key, snapshot);
      try {
        Object.assign(labels, await this.generateLabels(file, layer, rootfs, base));
      } finally {
        await this.driver.remove(key).catch(() => {});
      }
    }
    return { layer: newLayer, snapshot, labels };
  }

  /** The stanza's imports with a dest and its `run`, in a new snapshot; its layer if anything changed. */
  private async buildLayer(
    file: StackerFile,
    layer: Layer,
    base: BaseImage,
    topSnapshot: string | undefined,
  ): Promise<{ layer?: { descriptor: Descriptor; diffId: string }; snapshot?: string }> {
    const name = layer.name;
    const sde = this.opts.settings.sourceDateEpoch;
    let newLayer: { descriptor: Descriptor; diffId: string } | undefined;
    let snapshot = topSnapshot;
    const key = `build-${name}-${shortId()}`;
    const rootfs = await this.driver.prepare(key, topSnapshot);
    let committed = false;
    try {
      const staged = await this.stage(file, layer);
      await this.copyImportsWithDest(rootfs, staged);
      if (layer.run.length > 0) {
        this.event(name, 'running');
        await this.runSteps(file, layer, rootfs, base, layer.run, 'run');
      }
      this.event(name, 'diffing');
      this.log.debug(`diffing ${name}`);
      // Sorted by tar name (a deletion of x sorts as .wh.x), whatever order the driver
      // walks in, so every driver gives the same bytes. Only paths are held, never content.
      const list: Change[] = [];
      for await (const c of this.driver.diff(key)) list.push(c);
      const changes = sortChanges(list);
      this.log.debug(`diffed ${name}: ${changes.length} changes`);
      if (changes.length > 0) {
        this.event(name, 'writing');
        this.log.debug(`writing the layer of ${name}`);
        const written = await putLayer(this.layout, changes, { compression: 'gzip', sourceDateEpoch: sde });
        this.log.debug(`wrote layer ${written.descriptor.digest} of ${name}`);
        newLayer = { descriptor: written.descriptor, diffId: written.diffId };
        const top = chainIds([...base.config.rootfs.diff_ids, written.diffId]).at(-1)!;
        snapshot = top;
        await this.snapshots.withLock(top, async () => {
          if (await this.driver.exists(top)) await this.driver.remove(key);
          else await this.driver.commit(top, key);
        });
        committed = true;
      }
    } finally {
      if (!committed) await this.driver.remove(key).catch(() => {});
    }
    return { layer: newLayer, snapshot };
  }

  private async stage(file: StackerFile, layer: Layer): Promise<StagedImport[]> {
    const { stackerDir } = this.opts.settings;
    return stageImports(layer.imports, {
      stanza: layer.name,
      resolvePath: (p) => resolvePath(file.dir, p),
      stageDir: join(stackerDir, 'imports', layer.name),
      copyDir: join(stackerDir, 'imports-copy', layer.name),
      downloadDir: join(stackerDir, 'downloads'),
      downloads: this.httpDownloads(),
      requireHash: Boolean(this.opts.requireHash),
      log: this.log,
      copyFromLayer: (from, path, dest) => this.copyFromLayer(layer.name, from, path, dest),
      signal: this.opts.signal,
    });
  }

  /** stacker://layer/path: copy a path out of a built layer's filesystem. */
  private async copyFromLayer(stanza: string, from: string, path: string, dest: string): Promise<void> {
    const b = this.built.get(from);
    if (!b)
      throw new UserError(
        'stacker-import',
        `${stanza} imports stacker://${from}${path}, but ${from} was not built`,
      );
    const key = `view-${from}-${shortId()}`;
    // a cached stanza may have no snapshot on this machine yet: make it from the blobs
    const snapshot = await this.ensureSnapshots(b.image);
    const rootfs = await this.driver.prepare(key, snapshot);
    try {
      const resolved = await resolveInRoot(rootfs, path);
      try {
        await fsp.lstat(resolved);
      } catch {
        throw new UserError(
          'stacker-import',
          `${stanza} imports stacker://${from}${path}, but ${path} does not exist in ${from}`,
          {
            stanza,
            key: 'imports',
          },
        );
      }
      await fsp.cp(resolved, dest, { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
    } finally {
      await this.driver.remove(key);
    }
  }

  private async copyImportsWithDest(rootfs: string, staged: StagedImport[]): Promise<void> {
    for (const imp of staged) {
      const dest = destinationOf(imp);
      if (dest === undefined) continue;
      // staged with its mode and ids applied; merged over what the image has, as an overlay
      if (imp.contents) {
        const dir = await createInRoot(rootfs, dest, true);
        if (!(await fsp.lstat(dir)).isDirectory()) {
          throw new UserError(
            'import-dest',
            `import ${imp.spec.path}: dest ${imp.spec.dest} is a file in the image, but the entries of a directory go there; give a directory as dest`,
            { key: 'imports' },
          );
        }
        for (const e of await fsp.readdir(imp.staged)) await placeImport(join(imp.staged, e), join(dir, e));
      } else {
        const parent = await createInRoot(rootfs, posix.dirname(dest), true);
        await placeImport(imp.staged, join(parent, posix.basename(dest)));
      }
    }
  }

  private buildEnv(layer: Layer, base: BaseImage): string[] {
    return runEnvironment(layer, base.config);
  }

  private async runSteps(
    file: StackerFile,
    layer: Layer,
    rootfs: string,
    base: BaseImage,
    script: string[],
    what: 'run' | 'generate_labels',
    extraBinds: { source: string; dest: string; readonly?: boolean }[] = [],
  ): Promise<void> {
    const { stackerDir } = this.opts.settings;
    const legacy = layer.importsForm === 'import';
    const importDir = join(stackerDir, 'imports', layer.name);
    // /stacker holds the run script (and, for the legacy form, the imports themselves)
    const stackerMount = legacy ? importDir : join(stackerDir, 'run', layer.name);
    if (!legacy) {
      await fsp.rm(stackerMount, { recursive: true, force: true });
      await fsp.mkdir(join(stackerMount, 'imports'), { recursive: true });
    }
    await writeRunScript(stackerMount, script);
    const hadStacker = await exists(join(rootfs, 'stacker'));
    const binds = [
      { source: stackerMount, dest: '/stacker', readonly: false },
      ...(legacy ? [] : [{ source: importDir, dest: '/stacker/imports', readonly: true }]),
      ...extraBinds,
      ...layer.binds.map((b) => ({ source: resolvePath(file.dir, b.source), dest: b.dest, readonly: false })),
    ];
    for (const b of layer.binds) {
      if (!(await exists(resolvePath(file.dir, b.source)))) {
        throw new UserError('bind', `${layer.name}: bind source ${b.source} does not exist on this machine`, {
          stanza: layer.name,
          key: 'binds',
        });
      }
    }
    const id = `stacker-${layer.name.replace(/[^A-Za-z0-9_.-]/g, '_')}-${shortId()}`;
    const bundle = join(stackerDir, 'bundles', id);
    const createdPaths = await missingMountpoints(
      rootfs,
      binds.map((b) => b.dest),
    );
    // their existing parents get their times back afterwards, so that creating and
    // removing a mount point leaves no trace in the layer
    const parentTimes = new Map<string, { atime: Date; mtime: Date }>();
    for (const p of [...createdPaths, join(rootfs, 'stacker')]) {
      const parent = dirname(p);
      if (parentTimes.has(parent) || createdPaths.includes(parent)) continue;
      const st = await fsp.lstat(parent).catch(() => undefined);
      if (st) parentTimes.set(parent, { atime: st.atime, mtime: st.mtime });
    }
    const stateDir = join(stackerDir, 'runc');
    try {
      await makeBundle({
        bundle,
        rootfs,
        args: [RUN_SCRIPT_PATH],
        env: this.buildEnv(layer, base),
        cwd: '/',
        hostname: layer.name.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 63) || 'stacker',
        binds,
      });
      const prefix = `${layer.name}: `;
      const code = await runContainer({
        runtime: this.opts.settings.runtime,
        stateDir,
        bundle,
        id,
        stdout: (line) => this.log.info(prefix + line),
        stderr: (line) => this.log.info(prefix + line),
        signal: this.opts.signal,
      });
      if (code !== 0) {
        if (this.opts.onRunFailure) {
          this.log.info(`running ${this.opts.onRunFailure} in the failed container of ${layer.name}`);
          await makeBundle({
            bundle,
            rootfs,
            // as stacker: the program itself (e.g. /bin/sh), not a shell command line
            args: [this.opts.onRunFailure],
            env: this.buildEnv(layer, base),
            cwd: '/',
            binds,
            terminal: Boolean(process.stdin.isTTY),
          });
          await runContainer({
            runtime: this.opts.settings.runtime,
            stateDir,
            bundle,
            id: `${id}-fail`,
            stdin: 'inherit',
            stdout: 'inherit',
            stderr: 'inherit',
          });
        }
        throw new UserError(
          'run-failed',
          `${what} commands failed for image "${layer.name}": exit status ${code}`,
          { stanza: layer.name, key: what },
        );
      }
    } finally {
      await fsp.rm(bundle, { recursive: true, force: true });
      // Mount points runc had to create are not part of the image, nor is /stacker.
      for (const p of createdPaths.reverse()) await removeIfEmpty(p);
      if (!hadStacker) await fsp.rm(join(rootfs, 'stacker'), { recursive: true, force: true });
      for (const [p, t] of parentTimes) await fsp.utimes(p, t.atime, t.mtime).catch(() => {});
    }
  }

  private async generateLabels(
    file: StackerFile,
    layer: Layer,
    rootfs: string,
    base: BaseImage,
  ): Promise<Record<string, string>> {
    const dir = join(this.opts.settings.stackerDir, 'oci-labels', layer.name);
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.mkdir(dir, { recursive: true });
    await this.runSteps(file, layer, rootfs, base, layer.generateLabels, 'generate_labels', [
      // stacker's scripts write label files to /oci-labels; /stacker/oci-labels works too
      { source: dir, dest: '/oci-labels', readonly: false },
      { source: dir, dest: '/stacker/oci-labels', readonly: false },
    ]);
    const out: Record<string, string> = {};
    for (const ent of await fsp.readdir(dir)) out[ent] = await fsp.readFile(join(dir, ent), 'utf8');
    await fsp.rm(dir, { recursive: true, force: true });
    return out;
  }
}

/**
 * A driver's check (it may mount things to try them) runs once per roots dir and kernel:
 * success is remembered in `<roots>/.<type>-checked`, so repeated builds start quickly.
 */
async function checkOnce(rootsDir: string, type: string, check: () => Promise<void>): Promise<void> {
  const marker = join(rootsDir, `.${type}-checked`);
  const stamp = `${release()}\n`;
  if ((await fsp.readFile(marker, 'utf8').catch(() => '')) === stamp) return;
  await check();
  await fsp.writeFile(marker, stamp).catch(() => {});
}

async function exists(p: string): Promise<boolean> {
  try {
    await fsp.lstat(p);
    return true;
  } catch {
    return false;
  }
}

/** Paths (host side) of the bind destinations that do not yet exist in the rootfs. */
async function missingMountpoints(rootfs: string, dests: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const d of ['/proc', '/sys', '/dev', '/etc/resolv.conf', ...dests]) {
    let p = rootfs;
    for (const c of d.split('/').filter(Boolean)) {
      p = join(p, c);
      if (!(await exists(p)) && !out.includes(p)) out.push(p);
    }
  }
  return out;
}

async function removeIfEmpty(p: string): Promise<void> {
  try {
    const st = await fsp.lstat(p);
    if (st.isDirectory()) await fsp.rmdir(p);
    else if (st.isFile() && st.size === 0) await fsp.unlink(p);
  } catch {
    /* not empty or gone: keep it */
  }
}

/** Resolve an absolute in-container path to its host path without leaving the root. */
export async function resolveInRoot(root: string, path: string): Promise<string> {
  const todo = path.split('/').filter((c) => c && c !== '.');
  const done: string[] = [];
  let hops = 0;
  while (todo.length) {
    const c = todo.shift()!;
    if (c === '..') {
      done.pop();
      continue;
    }
    const host = join(root, ...done, c);
    let st: import('node:fs').Stats | undefined;
    try {
      st = await fsp.lstat(host);
    } catch {
      st = undefined;
    }
    if (st?.isSymbolicLink() && todo.length > 0) {
      if (++hops > 40) throw new UserError('symlink-loop', `too many symlinks resolving ${path}`);
      const target = await fsp.readlink(host);
      if (target.startsWith('/')) done.length = 0;
      todo.unshift(...target.split('/').filter((x) => x && x !== '.'));
      continue;
    }
    done.push(c);
  }
  return join(root, ...done);
}

/**
 * Would tagging leave index.json as it is? So when every tag already names exactly its
 * descriptor, once, in a file as the layout writes it: a cached rebuild then does not
 * rewrite index.json (two fsyncs) once per tag.
 */
async function tagsUnchanged(layout: OciLayout, tags: [string, Descriptor][]): Promise<boolean> {
  let index: ImageIndex;
  try {
    const text = await fsp.readFile(join(layout.dir, 'index.json'), 'utf8');
    index = JSON.parse(text);
    if (!Array.isArray(index?.manifests) || canonicalJson(index) !== text) return false;
  } catch {
    return false;
  }
  if (!index.manifests.every((d) => d && isDigest(d.digest) && typeof d.size === 'number')) return false;
  return tags.every(([name, d]) => {
    const entries = index.manifests.filter((m) => m.annotations?.[REF_NAME] === name);
    const entry = { ...d, annotations: { ...(d.annotations ?? {}), [REF_NAME]: name } };
    return entries.length === 1 && canonicalJson(entries[0]) === canonicalJson(entry);
  });
}

async function openOrInitLayout(dir: string): Promise<OciLayout> {
  try {
    await fsp.access(join(dir, 'oci-layout'));
    return await OciLayout.open(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      await fsp.mkdir(dirname(dir), { recursive: true });
      return OciLayout.init(dir);
    }
    throw e;
  }
}

export function stanzaHash(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}
