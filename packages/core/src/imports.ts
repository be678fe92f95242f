import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { basename, join, posix } from 'node:path';
import { Readable } from 'node:stream';
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
  /** Path of the staged copy on the host. */
  staged: string;
  /** Name under /stacker (legacy) or /stacker/imports. */
  name: string;
}

export interface ImportContext {
  stanza: string;
  /** Resolve a relative path written in the stacker file. */
  resolvePath(p: string): string;
  /** `.stacker/imports/<stanza>`: emptied and refilled for each build of the stanza. */
  stageDir: string;
  /** Where http downloads are kept across builds. */
  downloadDir: string;
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

/** Download an http(s) import once into `downloadDir` (never trusting a partial file). */
async function download(url: string, ctx: ImportContext): Promise<string> {
  const key = createHash('sha256').update(url).digest('hex').slice(0, 32);
  const dir = join(ctx.downloadDir, key);
  const name = basename(new URL(url).pathname) || 'download';
  const dest = join(dir, name);
  try {
    await fsp.access(dest);
    return dest;
  } catch {
    /* not downloaded yet */
  }
  await fsp.mkdir(dir, { recursive: true });
  ctx.log.info(`downloading ${url}`);
  let res: Response;
  try {
    res = await fetch(url, { signal: ctx.signal });
  } catch (e) {
    throw new UserError(
      'import-download',
      `couldn't download ${url} for ${ctx.stanza}: ${(e as Error).message}`,
    );
  }
  if (!res.ok || !res.body) {
    throw new UserError(
      'import-download',
      `couldn't download ${url} for ${ctx.stanza}: HTTP ${res.status} ${res.statusText}`,
    );
  }
  const tmp = `${dest}.partial-${process.pid}`;
  await pipeline(Readable.fromWeb(res.body as any), createWriteStream(tmp));
  await fsp.rename(tmp, dest);
  return dest;
}

async function copyTree(src: string, dest: string): Promise<void> {
  await fsp.cp(src, dest, { recursive: true, force: true, preserveTimestamps: true, verbatimSymlinks: true });
}

/**
 * Stage a stanza's imports in its `.stacker/imports/<stanza>` directory: local files and
 * directories copied, http(s) downloads reused from the download cache, `stacker://` paths
 * copied out of the layer that built them. Hashes are checked here.
 */
export async function stageImports(imports: ImportSpec[], ctx: ImportContext): Promise<StagedImport[]> {
  await fsp.rm(ctx.stageDir, { recursive: true, force: true });
  await fsp.mkdir(ctx.stageDir, { recursive: true });
  const staged: StagedImport[] = [];
  const names = new Set<string>();
  for (const spec of imports) {
    let name: string;
    const target = () => join(ctx.stageDir, name);
    const m = /^stacker:\/\/([^/]+)(\/.*)$/.exec(spec.path);
    if (m) {
      // `..` never climbs above the layer's root; the path must still name something in it
      const inLayer = posix.normalize(m[2]);
      name = posix.basename(inLayer);
      if (name === '' || name === '.' || name === '..') {
        throw new UserError(
          'import-path',
          `import ${spec.path} of ${ctx.stanza} names the root of ${m[1]}; import a file or directory inside it`,
          { stanza: ctx.stanza, key: 'imports' },
        );
      }
      await ctx.copyFromLayer(m[1], inLayer, target());
    } else if (isHttp(spec.path)) {
      if (ctx.requireHash && spec.hash === undefined) {
        throw new UserError(
          'import-hash-required',
          `import ${spec.path} of ${ctx.stanza} has no hash, and --require-hash was given; add a hash: to it`,
          { stanza: ctx.stanza, key: 'imports' },
        );
      }
      const file = await download(spec.path, ctx);
      name = basename(file);
      await fsp.copyFile(file, target());
    } else {
      const src = ctx.resolvePath(spec.path.replace(/^file:\/\//, ''));
      let st: import('node:fs').Stats;
      try {
        st = await fsp.stat(src);
      } catch {
        throw new UserError('import-missing', `import ${spec.path} of ${ctx.stanza}: ${src} does not exist`, {
          stanza: ctx.stanza,
          key: 'imports',
        });
      }
      name = basename(src);
      if (st.isDirectory()) await copyTree(src, target());
      else await fsp.copyFile(src, target());
    }
    if (names.has(name)) {
      throw new UserError(
        'import-duplicate',
        `${ctx.stanza} imports two things named ${name}; rename one of them`,
        {
          stanza: ctx.stanza,
          key: 'imports',
        },
      );
    }
    names.add(name);
    if (spec.hash !== undefined) {
      const st = await fsp.stat(target());
      if (st.isDirectory()) {
        throw new UserError(
          'import-hash',
          `import ${spec.path} of ${ctx.stanza} is a directory: a hash can only be checked for a file`,
          {
            stanza: ctx.stanza,
            key: 'imports',
          },
        );
      }
      checkHash(spec, await sha256File(target()), ctx.stanza);
    }
    staged.push({ spec, staged: target(), name });
  }
  return staged;
}

/**
 * Where an import with `dest` lands in the rootfs, by stacker's rule: a `dest` ending in
 * `/` is a directory the import goes into; otherwise `dest` is the import's new path.
 */
export function destinationOf(imp: StagedImport): string | undefined {
  const d = imp.spec.dest;
  if (d === undefined) return undefined;
  // Normalised as an absolute path, `..` stops at the rootfs's `/`: a dest can never name
  // a host path. Symlinks on the way are resolved inside the rootfs by the caller.
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
