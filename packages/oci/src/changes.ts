import type { Change } from '@stacker/plugin-api';
import { badChanges } from './errors.js';
import type { TarHeader } from './tar-header.js';

/**
 * An entry made up from a header (and content) rather than read from disk: device nodes
 * that cannot exist rootless, ids the filesystem cannot hold, test fixtures.
 */
export interface SyntheticEntry {
  kind: 'synthetic';
  header: TarHeader;
  /** Content of a regular file; its length must equal `header.size`. */
  content?: Buffer;
}

/** What the layer writer accepts: a storage driver's changes, plus synthetic entries. */
export type LayerEntry = Change | SyntheticEntry;

/**
 * Normalise a path of a change: '/'-separated, no leading `/` or `./`, no empty or `.`
 * components. `..` is refused. The root itself comes back as ''.
 */
export function cleanPath(path: string): string {
  const parts: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') throw badChanges(`path ${JSON.stringify(path)} has a ".." component`);
    parts.push(part);
  }
  return parts.join('/');
}

/** The path an entry occupies in the tar, without a trailing slash. */
export function entryTarPath(entry: LayerEntry): string {
  switch (entry.kind) {
    case 'synthetic':
      return cleanPath(entry.header.name);
    case 'delete': {
      const p = cleanPath(entry.path);
      const slash = p.lastIndexOf('/');
      return `${p.slice(0, slash + 1)}.wh.${p.slice(slash + 1)}`;
    }
    case 'opaque': {
      const p = cleanPath(entry.path);
      return p === '' ? '.wh..wh..opq' : `${p}/.wh..wh..opq`;
    }
    default:
      return cleanPath(entry.path);
  }
}

/** Order of a directory walk: component by component, bytewise within a directory. */
export function comparePaths(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  const n = Math.min(pa.length, pb.length);
  for (let i = 0; i < n; i++) {
    if (pa[i] !== pb[i]) return Buffer.compare(Buffer.from(pa[i]), Buffer.from(pb[i]));
  }
  return pa.length - pb.length;
}

/** Sort entries into layer order (parents before children) and check for duplicates. */
export function sortChanges<T extends LayerEntry>(entries: Iterable<T>): T[] {
  const list = [...entries].map((entry) => ({ entry, key: entryTarPath(entry) }));
  list.sort((a, b) => comparePaths(a.key, b.key));
  const sorted = list.map((x) => x.entry);
  checkChangeOrder(sorted);
  return sorted;
}

/** Throw unless entries are in layer order with no path given twice. */
export function checkChangeOrder(entries: Iterable<LayerEntry>): void {
  let previous: string | undefined;
  for (const entry of entries) {
    const key = entryTarPath(entry);
    if (previous !== undefined) {
      const order = comparePaths(previous, key);
      if (order === 0) throw badChanges(`${JSON.stringify(key || '/')} appears twice`);
      if (order > 0)
        throw badChanges(
          `${JSON.stringify(key)} comes after ${JSON.stringify(previous)}; sort with sortChanges`,
        );
    }
    previous = key;
  }
}
