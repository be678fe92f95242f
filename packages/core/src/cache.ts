import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
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
  private entries: Record<string, CacheEntry> = {};
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
    try {
      const f = JSON.parse(text) as CacheFile;
      if (f.format !== CACHE_FORMAT || f.stackerVersion !== stackerVersion || typeof f.entries !== 'object') {
        log.warn(`ignoring the build cache ${c.path}: it was written by another stacker version`);
        return c;
      }
      c.entries = f.entries;
    } catch {
      log.warn(`ignoring the build cache ${c.path}: it is corrupt; everything will be rebuilt`);
    }
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

export function cacheKey(parts: unknown): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

/**
 * A content identity of a local import: a file's sha256; for a directory, a manifest of
 * every entry's path, type, mode, ids, link target and content hash (not times: touching a
 * file does not rebuild).
 */
export async function hashLocalPath(path: string): Promise<string> {
  const st = await fsp.lstat(path);
  if (!st.isDirectory()) {
    if (st.isSymbolicLink()) return `link:${await fsp.readlink(path)}`;
    return `file:${st.mode}:${await sha256File(path)}`;
  }
  const lines: string[] = [];
  const walk = async (dir: string, rel: string) => {
    const names = (await fsp.readdir(dir)).sort();
    for (const n of names) {
      const p = join(dir, n);
      const r = rel ? `${rel}/${n}` : n;
      const s = await fsp.lstat(p);
      const meta = `${s.mode.toString(8)} ${s.uid}:${s.gid}`;
      if (s.isDirectory()) {
        lines.push(`d ${r} ${meta}`);
        await walk(p, r);
      } else if (s.isSymbolicLink()) {
        lines.push(`l ${r} ${meta} ${await fsp.readlink(p)}`);
      } else if (s.isFile()) {
        lines.push(`f ${r} ${meta} ${await sha256File(p)}`);
      } else {
        lines.push(`o ${r} ${meta} ${s.rdev}`);
      }
    }
  };
  await walk(path, '');
  return `dir:${createHash('sha256').update(lines.join('\n')).digest('hex')}`;
}
