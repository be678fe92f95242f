import { opendir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Change } from '@stacker/plugin-api';

/**
 * `add` changes for everything below `root` (not the root itself), in layer order:
 * depth first, names bytewise within each directory. Streams: one directory's names are
 * held at a time per level.
 */
export async function* walkDirectory(root: string, rel = ''): AsyncGenerator<Change> {
  const names: Array<{ name: string; isDir: boolean }> = [];
  for await (const d of await opendir(join(root, rel))) names.push({ name: d.name, isDir: d.isDirectory() });
  names.sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
  for (const { name, isDir } of names) {
    const path = rel ? `${rel}/${name}` : name;
    yield { kind: 'add', path, source: join(root, path) };
    if (isDir) yield* walkDirectory(root, path);
  }
}
