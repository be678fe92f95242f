import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { readLayerXattrs } from '@stacker/oci';
import type { Descriptor, Logger } from '@stacker/plugin-api';

/** Bump when the meaning of a cache entry changes: older files are then ignored. */
export const CACHE_FORMAT = 1;

/** What is remembered of a built stanza. */
export interface CacheEntry {
  key: string;
  /** The stanza's own layer (absent when it changed nothing). */
  layer?: Descriptor;
  diffId?: string;
  /** Labels that `generate_labels` produced. */
  generatedLabels: Record<string, string>;
  /** The image config's `created`, so a cached rebuild gives the same config bytes. */
  created: string;
}

interface CacheFile {
  format: number;
  stackerVersion: string;
  entries: Record<string, CacheEntry>;
}

/**
 * The build cache at `.stacker/build.cache`: per stanza, the key of the inputs it was last
 * built from and what that build produced. A file from another version, or one that does
 * not parse, is ignored with a warning (never a crash); it is replaced atomically.
 */
export class BuildCache {
  private entries: Record<string, CacheEntry> = Object.create(null);
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    readonly path: string,
    private stackerVersion: string,
  ) {}

  static async load(stackerDir: string, stackerVersion: string, log: Logger): Promise<BuildCache> {
    const c = new BuildCache(join(stackerDir, 'build.cache'), stackerVersion);
    let text: string;
    try {
      text = await fsp.readFile(c.path, 'utf8');
    } catch {
      return c;
    }
    let f: unknown;
    try {
      f = JSON.parse(text);
    } catch {
      f = undefined;
    }
    const file = isRecord(f) ? f : undefined;
    if (file && (file.format !== CACHE_FORMAT || file.stackerVersion !== stackerVersion)) {
      log.warn(`ignoring the build cache ${c.path}: it was written by another stacker version`);
      return c;
    }
    const entries = file && validEntries(file.entries);
    if (!entries) {
      log.warn(`ignoring the build cache ${c.path}: it is corrupt; everything will be rebuilt`);
      return c;
    }
    c.entries = entries;
    return c;
  }

  get(name: string, key: string): CacheEntry | undefined {
    const e = this.entries[name];
    return e && e.key === key ? e : undefined;
  }

  async put(name: string, entry: CacheEntry): Promise<void> {
    this.entries[name] = entry;
    await this.flush();
  }

  async drop(name: string): Promise<void> {
    delete this.entries[name];
    await this.flush();
  }

  private flush(): Promise<void> {
    const run = async () => {
      const body: CacheFile = {
        format: CACHE_FORMAT,
        stackerVersion: this.stackerVersion,
        entries: this.entries,
      };
      const tmp = `${this.path}.${process.pid}.tmp`;
      await fsp.writeFile(tmp, JSON.stringify(body));
      await fsp.rename(tmp, this.path);
    };
    this.writing = this.writing.then(run, run);
    return this.writing;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isString = (v: unknown): v is string => typeof v === 'string';

function isDescriptor(v: unknown): v is Descriptor {
  return (
    isRecord(v) &&
    isString(v.mediaType) &&
    isString(v.digest) &&
    /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(v.digest) &&
    typeof v.size === 'number' &&
    Number.isSafeInteger(v.size) &&
    v.size >= 0
  );
}

function isCacheEntry(v: unknown): v is CacheEntry {
  return (
    isRecord(v) &&
    isString(v.key) &&
    (v.layer === undefined || isDescriptor(v.layer)) &&
    (v.diffId === undefined || isString(v.diffId)) &&
    // a layer and its diff id come together
    (v.layer === undefined) === (v.diffId === undefined) &&
    isRecord(v.generatedLabels) &&
    Object.values(v.generatedLabels).every(isString) &&
    isString(v.created)
  );
}

/** The entries of a cache file when every one of them has the shape a build writes; else undefined. */
function validEntries(v: unknown): Record<string, CacheEntry> | undefined {
  if (!isRecord(v)) return undefined;
  const out: Record<string, CacheEntry> = Object.create(null);
  for (const [name, e] of Object.entries(v)) {
    if (!isCacheEntry(e)) return undefined;
    out[name] = e;
  }
  return out;
}

export function cacheKey(parts: unknown): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

/** Everything a stanza's cache key is made of. */
export interface StanzaKeyParts {
  stackerVersion: string;
  /** The stanza's canonical form after substitution. */
  canonical: string;
  /** The parent's cache key for `built`, else the source's identity of the base. */
  base: string | undefined;
  /** One identity per import (content hashes and the import's own keys). */
  imports: string[];
  sourceDateEpoch: number | undefined;
}

/** A stanza's cache key: the same inputs give the same key; any change gives another. */
export function stanzaKey(p: StanzaKeyParts): string {
  return cacheKey({
    format: CACHE_FORMAT,
    stacker: p.stackerVersion,
    stanza: p.canonical,
    base: p.base,
    imports: p.imports,
    sde: p.sourceDateEpoch ?? null,
  });
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

/** `uid:gid` and the xattrs of an entry (not following a symlink), as a manifest line part. */
async function owners(path: string, st: import('node:fs').Stats): Promise<string> {
  const xattrs = await readLayerXattrs(path);
  const x = xattrs ? [...xattrs].map(([k, v]) => `${encodeURIComponent(k)}=${v.toString('base64')}`) : [];
  return [`${st.uid}:${st.gid}`, ...x].join(' ');
}

/**
 * A content identity of a local import, with what stacker's mtree walk looks at: a file's
 * mode, ids, xattrs and sha256; for a directory, a manifest of every entry's path, type,
 * mode, ids, xattrs, link target and content hash. Never times: touching a file does not
 * rebuild.
 */
export async function hashLocalPath(path: string): Promise<string> {
  const st = await fsp.lstat(path);
  if (!st.isDirectory()) {
    if (st.isSymbolicLink()) return `link:${await owners(path, st)}:${await fsp.readlink(path)}`;
    return `file:${st.mode.toString(8)}:${await owners(path, st)}:${await sha256File(path)}`;
  }
  const lines: string[] = [`. ${st.mode.toString(8)} ${await owners(path, st)}`];
  const walk = async (dir: string, rel: string) => {
    const names = (await fsp.readdir(dir)).sort();
    for (const n of names) {
      const p = join(dir, n);
      const r = rel ? `${rel}/${n}` : n;
      const s = await fsp.lstat(p);
      // the name is JSON-quoted: a newline or space in it cannot fake another line
      const meta = `${JSON.stringify(r)} ${s.mode.toString(8)} ${await owners(p, s)}`;
      if (s.isDirectory()) {
        lines.push(`d ${meta}`);
        await walk(p, r);
      } else if (s.isSymbolicLink()) {
        lines.push(`l ${meta} -> ${JSON.stringify(await fsp.readlink(p))}`);
      } else if (s.isFile()) {
        lines.push(`f ${meta} ${await sha256File(p)}`);
      } else {
        lines.push(`o ${meta} ${s.rdev}`);
      }
    }
  };
  await walk(path, '');
  return `dir:${createHash('sha256').update(lines.join('\n')).digest('hex')}`;
}
