import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Change } from '@stacker/plugin-api';

function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * Everything below `dir` as adds: the change set of a snapshot that has no parent. Each
 * directory's names in byte order, parents before children (the order every driver gives).
 */
export async function* addTree(dir: string, rel: string): AsyncGenerator<Change> {
  const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => compareNames(a.name, b.name));
  for (const e of entries) {
    const path = rel ? `${rel}/${e.name}` : e.name;
    const source = join(dir, e.name);
    yield { kind: 'add', path, source };
    if (e.isDirectory()) yield* addTree(source, path);
  }
}
