import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, type Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { basename, join, posix } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type Logger, UserError } from '@stacker/plugin-api';

/** One import as the stackerfile model gives it. */
export interface ImportSpec {
  path: string;
  hash?: string;
  dest?: string;
  mode?: number;
  uid?: number;
  gid?: number;
}

export interface StagedImport {
  spec: ImportSpec;
  /**
   * Path of the staged copy on the host. For a directory imported with a trailing `/`
   * (`contents`), the directory whose entries are the import.
   */
  staged: string;
  /** Name under /stacker (legacy) or /stacker/imports; for a `dest` import, the copy's name. */
  name: string;
  /** `path: dir/`: the directory's entries are imported, not the directory itself. */
  contents: boolean;
}

export interface ImportContext {
  stanza: string;
  /** Resolve a relative path written in the stacker file. */
  resolvePath(p: string): string;
  /** `.stacker/imports/<stanza>`: emptied and refilled for each build of the stanza. */
  stageDir: string;
  /**
   * Where imports with a `dest` are staged (`.stacker/imports-copy/<stanza>`): as in
   * stacker, they land at their dest in the image and are not also under /stacker/imports.
   * Default: `<stageDir>.copy`.
   */
  copyDir?: string;
  /** Where http downloads are kept across builds. */
  downloadDir: string;
  /** The build's http downloads (one check per URL per build); made here when absent. */
  downloads?: HttpDownloads;
  requireHash: boolean;
  log: Logger;
  /** Copy `path` out of the built stanza `layer` into `dest` (for stacker:// imports). */
  copyFromLayer(layer: string, path: string, dest: string): Promise<void>;
  signal?: AbortSignal;
}

export function isHttp(p: string): boolean {
  return /^https?:\/\//i.test(p);
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

function checkHash(spec: ImportSpec, actual: string, stanza: string): void {
  if (spec.hash !== undefined && spec.hash.toLowerCase() !== actual) {
    throw new UserError(
      'import-hash',
      `import ${spec.path} of ${stanza}: the hash in the stacker file ${spec.hash.toLowerCase()} is different than the actual hash ${actual}; fix the hash or the file`,
      { stanza, key: 'imports' },
    );
  }
}

/** `--require-hash`: an http(s) import must say which content it expects. */
export function checkRequiredHash(spec: ImportSpec, stanza: string, requireHash: boolean): void {
  if (requireHash && isHttp(spec.path) && spec.hash === undefined) {
    throw new UserError(
      'import-hash-required',
      `import ${spec.path} of ${stanza} has no hash, and --require-hash was given; add a hash: to it`,
      { stanza, key: 'imports' },
    );
  }
}

/** What is known of a downloaded copy (`meta.json` beside it). */
interface DownloadMeta {
  url: string;
  sha256: string;
  size: number;
  etag?: string;
  lastModified?: string;
}

export interface Downloaded {
  /** The downloaded copy (never to be modified: it is shared across builds). */
  file: string;
  sha256: string;
  /** The name the URL gives the file. */
  name: string;
}

function validMeta(v: unknown, url: string): DownloadMeta | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const m = v as Record<string, unknown>;
  if (m.url !== url || typeof m.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(m.sha256)) return undefined;
  if (typeof m.size !== 'number') return undefined;
  if (m.etag !== undefined && typeof m.etag !== 'string') return undefined;
  if (m.lastModified !== undefined && typeof m.lastModified !== 'string') return undefined;
  return m as unknown as DownloadMeta;
}

/**
 * The http(s) imports of a build, kept in `<downloadDir>/<hash of the URL>/` across builds
 * (the content as `<sha256>`, what the server said of it in `meta.json`). A copy is reused
 * when a HEAD request says it is still current (same ETag, or same Last-Modified and
 * length, or the same `X-Checksum-Sha256`), or when the server cannot be reached; else the
 * URL is downloaded again. Each URL is checked once per build.
 */
export class HttpDownloads {
  private known = new Map<string, Promise<Downloaded>>();

  constructor(
    readonly dir: string,
    private log: Logger,
    private signal?: AbortSignal,
  ) {}

  /** The current content of `url` for `stanza`'s import (downloading it when needed). */
  get(url: string, stanza: string): Promise<Downloaded> {
    let p = this.known.get(url);
    if (!p) {
      p = this.fetch(url, stanza);
      this.known.set(url, p);
      // a failure is reported to this caller; a later one tries again
      p.catch(() => this.known.delete(url));
    }
    return p;
  }

  private async fetch(url: string, stanza: string): Promise<Downloaded> {
    const dir = join(this.dir, createHash('sha256').update(url).digest('hex').slice(0, 32));
    const name = basename(new URL(url).pathname) || 'download';
    const metaFile = join(dir, 'meta.json');
    let meta: DownloadMeta | undefined;
    try {
      meta = validMeta(JSON.parse(await fsp.readFile(metaFile, 'utf8')), url);
      if (meta && (await fsp.stat(join(dir, meta.sha256))).size !== meta.size) meta = undefined;
    } catch {
      meta = undefined;
    }
    if (meta && (await this.stillCurrent(url, meta))) {
      this.log.debug(`using the downloaded copy of ${url}`);
      return { file: join(dir, meta.sha256), sha256: meta.sha256, name };
    }
    const fresh = await this.download(url, stanza, dir);
    const tmp = `${metaFile}.${process.pid}.tmp`;
    await fsp.writeFile(tmp, JSON.stringify(fresh));
    await fsp.rename(tmp, metaFile);
    // older copies of this URL go once the new one is recorded
    for (const f of await fsp.readdir(dir)) {
      if (/^[0-9a-f]{64}$/.test(f) && f !== fresh.sha256) await fsp.rm(join(dir, f), { force: true });
    }
    return { file: join(dir, fresh.sha256), sha256: fresh.sha256, name };
  }

  private async stillCurrent(url: string, meta: DownloadMeta): Promise<boolean> {
    let res: Response;
    try {
      res = await fetch(url, { method: 'HEAD', signal: this.signal });
    } catch (e) {
      if (this.signal?.aborted) throw e;
      // offline: the copy downloaded before is the best there is (as stacker does)
      this.log.warn(
        `couldn't check ${url} for changes (${(e as Error).message}); using the copy downloaded before`,
      );
      return true;
    }
    if (!res.ok) return false; // the GET says what is wrong, or gets it anyway
    const h = res.headers;
    const sum = h.get('x-checksum-sha256')?.toLowerCase();
    if (sum) return sum === meta.sha256;
    const length = h.get('content-length');
    if (length !== null && Number(length) !== meta.size) return false;
    const etag = h.get('etag') ?? undefined;
    if (etag !== undefined) return etag === meta.etag;
    const lastModified = h.get('last-modified') ?? undefined;
    if (lastModified !== undefined) return lastModified === meta.lastModified && length !== null;
    return false; // nothing tells whether it changed: download it again
  }

  private async download(url: string, stanza: string, dir: string): Promise<DownloadMeta> {
    await fsp.mkdir(dir, { recursive: true });
    this.log.info(`downloading ${url}`);
    const fail = (why: string) =>
      new UserError(
        'import-download',
        `couldn't download ${url} for ${stanza}: ${why}; check the URL and the network`,
        { stanza, key: 'imports' },
      );
    let res: Response;
    try {
      res = await fetch(url, { signal: this.signal });
    } catch (e) {
      throw fail((e as Error).message);
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel().catch(() => {});
      throw fail(`HTTP ${res.status} ${res.statusText}`.trim());
    }
    const tmp = join(dir, `.partial-${process.pid}-${randomBytes(4).toString('hex')}`);
    const h = createHash('sha256');
    let size = 0;
    try {
      await pipeline(
        Readable.fromWeb(res.body as import('node:stream/web').ReadableStream),
        new Transform({
          transform(chunk: Buffer, _enc, cb) {
            h.update(chunk);
            size += chunk.length;
            cb(null, chunk);
          },
        }),
        createWriteStream(tmp, { mode: 0o644 }),
      );
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      if (this.signal?.aborted) throw e;
      throw fail((e as Error).message);
    }
    const sha256 = h.digest('hex');
    await fsp.rename(tmp, join(dir, sha256));
    return {
      url,
      sha256,
      size,
      etag: res.headers.get('etag') ?? undefined,
      lastModified: res.headers.get('last-modified') ?? undefined,
    };
  }
}

async function copyTree(src: string, dest: string): Promise<void> {
  await fsp.cp(src, dest, { recursive: true, force: true, preserveTimestamps: true, verbatimSymlinks: true });
}

/**
 * An import's `mode`, `uid` and `gid`, as stacker applies them to what it copies: ids to
 * every entry, the mode to every file (never to a directory or a symlink).
 */
export async function applyOwnership(
  target: string,
  mode?: number,
  uid?: number,
  gid?: number,
): Promise<void> {
  if (mode === undefined && uid === undefined && gid === undefined) return;
  const st = await fsp.lstat(target);
  if (uid !== undefined || gid !== undefined) await fsp.lchown(target, uid ?? st.uid, gid ?? st.gid);
  // chown clears setuid/setgid: a file keeps its mode unless a new one is given
  if (st.isFile()) await fsp.chmod(target, mode ?? st.mode & 0o7777);
  if (st.isDirectory()) {
    for (const e of await fsp.readdir(target)) await applyOwnership(join(target, e), mode, uid, gid);
  }
}

function duplicate(stanza: string, name: string): UserError {
  return new UserError('import-duplicate', `${stanza} imports two things named ${name}; rename one of them`, {
    stanza,
    key: 'imports',
  });
}

/**
 * Stage a stanza's imports: local files and directories copied, http(s) downloads reused
 * from the download cache, `stacker://` paths copied out of the layer that built them.
 * Imports without a `dest` go to `.stacker/imports/<stanza>` (seen at /stacker/imports);
 * those with one to `.stacker/imports-copy/<stanza>/<n>/`, from where they are copied into
 * the image. A directory written with a trailing `/` imports its entries. `mode`, `uid` and
 * `gid` apply to the staged copy. Hashes are checked here.
 */
export async function stageImports(imports: ImportSpec[], ctx: ImportContext): Promise<StagedImport[]> {
  const copyDir = ctx.copyDir ?? `${ctx.stageDir}.copy`;
  const downloads = ctx.downloads ?? new HttpDownloads(ctx.downloadDir, ctx.log, ctx.signal);
  await fsp.rm(ctx.stageDir, { recursive: true, force: true });
  await fsp.rm(copyDir, { recursive: true, force: true });
  await fsp.mkdir(ctx.stageDir, { recursive: true });
  const staged: StagedImport[] = [];
  const names = new Set<string>();
  const claim = (name: string) => {
    if (names.has(name)) throw duplicate(ctx.stanza, name);
    names.add(name);
  };
  for (const [i, spec] of imports.entries()) {
    const hasDest = spec.dest !== undefined;
    // a file with a dest not ending in `/` is staged under the dest's name (as stacker does)
    const destName = hasDest && !spec.dest!.endsWith('/') ? posix.basename(spec.dest!) : undefined;
    const holder = hasDest ? join(copyDir, String(i)) : ctx.stageDir;
    if (hasDest) await fsp.mkdir(holder, { recursive: true });
    let name: string;
    let target: string;
    let contents = false;
    let verified = false;
    const m = /^stacker:\/\/([^/]+)(\/.*)$/.exec(spec.path);
    if (m) {
      // `..` never climbs above the layer's root; the path must still name something in it
      const inLayer = posix.normalize(m[2]);
      const base = posix.basename(inLayer);
      if (base === '' || base === '.' || base === '..') {
        throw new UserError(
          'import-path',
          `import ${spec.path} of ${ctx.stanza} names the root of ${m[1]}; import a file or directory inside it`,
          { stanza: ctx.stanza, key: 'imports' },
        );
      }
      name = base;
      if (!hasDest) claim(name);
      target = join(holder, name);
      await ctx.copyFromLayer(m[1], inLayer.replace(/\/+$/, ''), target);
      // stacker imports a directory's entries only when a dest is given
      contents = hasDest && spec.path.endsWith('/') && (await fsp.lstat(target)).isDirectory();
    } else if (isHttp(spec.path)) {
      checkRequiredHash(spec, ctx.stanza, ctx.requireHash);
      const got = await downloads.get(spec.path, ctx.stanza);
      name = destName ?? got.name;
      if (!hasDest) claim(name);
      target = join(holder, name);
      checkHash(spec, got.sha256, ctx.stanza);
      verified = true;
      await fsp.copyFile(got.file, target);
    } else {
      const src = ctx.resolvePath(spec.path.replace(/^file:\/\//, ''));
      let st: Stats;
      try {
        st = await fsp.stat(src);
      } catch {
        throw new UserError('import-missing', `import ${spec.path} of ${ctx.stanza}: ${src} does not exist`, {
          stanza: ctx.stanza,
          key: 'imports',
        });
      }
      contents = st.isDirectory() && spec.path.endsWith('/');
      if (contents && !hasDest) {
        // `path: dir/` without a dest: its entries appear directly under /stacker/imports
        if (spec.hash !== undefined) throw hashOfDirectory(spec, ctx.stanza);
        const entries = (await fsp.readdir(src)).sort();
        for (const e of entries) claim(e);
        for (const e of entries) await copyTree(join(src, e), join(ctx.stageDir, e));
        for (const e of entries) await applyOwnership(join(ctx.stageDir, e), spec.mode, spec.uid, spec.gid);
        staged.push({ spec, staged: ctx.stageDir, name: basename(src), contents });
        continue;
      }
      name = basename(src);
      if (destName !== undefined && !contents) name = destName;
      if (!hasDest) claim(name);
      target = join(holder, name);
      if (st.isDirectory()) await copyTree(src, target);
      else await fsp.copyFile(src, target);
    }
    if (spec.hash !== undefined && !verified) {
      const st = await fsp.lstat(target);
      if (st.isDirectory()) throw hashOfDirectory(spec, ctx.stanza);
      if (st.isSymbolicLink()) {
        // never followed: its target means something inside the layer, not on this host
        throw new UserError(
          'import-hash',
          `import ${spec.path} of ${ctx.stanza} is a symlink (to ${await fsp.readlink(target)}): a hash can only be checked for a regular file; import the file it points to`,
          { stanza: ctx.stanza, key: 'imports' },
        );
      }
      if (!st.isFile()) {
        throw new UserError(
          'import-hash',
          `import ${spec.path} of ${ctx.stanza} is not a regular file: a hash can only be checked for a regular file`,
          { stanza: ctx.stanza, key: 'imports' },
        );
      }
      checkHash(spec, await sha256File(target), ctx.stanza);
    }
    if (contents) {
      for (const e of await fsp.readdir(target))
        await applyOwnership(join(target, e), spec.mode, spec.uid, spec.gid);
    } else {
      await applyOwnership(target, spec.mode, spec.uid, spec.gid);
    }
    staged.push({ spec, staged: target, name, contents });
  }
  return staged;
}

function hashOfDirectory(spec: ImportSpec, stanza: string): UserError {
  return new UserError(
    'import-hash',
    `import ${spec.path} of ${stanza} is a directory: a hash can only be checked for a file`,
    { stanza, key: 'imports' },
  );
}

/**
 * Where an import with `dest` lands in the rootfs, by stacker's rules: a `dest` ending in
 * `/` is a directory the import goes into; otherwise `dest` is the import's new path. For
 * `path: dir/` (`contents`), `dest` is the directory the entries go into, `/` or not.
 */
export function destinationOf(imp: StagedImport): string | undefined {
  const d = imp.spec.dest;
  if (d === undefined) return undefined;
  // Normalised as an absolute path, `..` stops at the rootfs's `/`: a dest can never name
  // a host path. Symlinks on the way are resolved inside the rootfs by the caller.
  if (imp.contents) return posix.normalize(posix.join('/', d)).replace(/(.)\/$/, '$1');
  const dest = posix.normalize(posix.join('/', d.endsWith('/') ? posix.join(d, imp.name) : d));
  if (dest === '/') {
    throw new UserError(
      'import-dest',
      `import ${imp.spec.path}: dest ${JSON.stringify(d)} names the root of the image; give a path inside it such as "/${imp.name}"`,
      { key: 'imports' },
    );
  }
  return dest;
}

/**
 * Copy a staged import to `dst` (a host path inside the rootfs whose parent exists) the way
 * an overlay of it would look: a directory merges with a directory already there, anything
 * else replaces what was there. Existing entries are examined without following symlinks,
 * so nothing is ever written outside the rootfs. Modes, ids, times and link targets are kept.
 */
export async function placeImport(src: string, dst: string): Promise<void> {
  const s = await fsp.lstat(src);
  const d = await fsp.lstat(dst).catch(() => undefined);
  if (s.isDirectory()) {
    const merge = d?.isDirectory() === true;
    if (d && !merge) await fsp.rm(dst, { recursive: true, force: true });
    if (!merge) await fsp.mkdir(dst, { mode: 0o700 });
    for (const e of await fsp.readdir(src)) await placeImport(join(src, e), join(dst, e));
    // a directory that was already there keeps its own metadata
    if (!merge) await copyMeta(s, dst);
    return;
  }
  if (d) await fsp.rm(dst, { recursive: true, force: true });
  if (s.isSymbolicLink()) await fsp.symlink(await fsp.readlink(src), dst);
  else if (s.isFile()) await fsp.copyFile(src, dst);
  else {
    throw new UserError(
      'import-special',
      `can't import ${src}: it is not a regular file, directory or symlink; remove it from the import`,
    );
  }
  await copyMeta(s, dst);
}

async function copyMeta(s: Stats, dst: string): Promise<void> {
  await fsp.lchown(dst, s.uid, s.gid);
  if (!s.isSymbolicLink()) await fsp.chmod(dst, s.mode & 0o7777);
  await fsp.lutimes(dst, s.atime, s.mtime);
}
