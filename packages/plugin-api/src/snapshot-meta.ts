import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Bookkeeping a directory-based storage driver needs (overlay and btrfs both use it):
 * every snapshot lives in `<dir>/<id>` with a `meta.json` naming it, `<id>` being the start
 * of sha256(name or key) — short, and free of characters that mean something in mount
 * option strings (`:` `,` `=`). A meta.json naming another snapshot (an id collision, or a
 * damaged file) counts as absent.
 */
export const ID_LENGTH = 16;

export function snapshotId(nameOrKey: string): string {
  return createHash('sha256').update(nameOrKey).digest('hex').slice(0, ID_LENGTH);
}

/** `meta.json` of a committed snapshot. */
export interface CommittedMeta {
  name: string;
  parent?: string;
}

/** `meta.json` of an active snapshot. */
export interface ActiveMeta {
  key: string;
  parent?: string;
}

/** The meta.json of committed snapshot `name` kept in `snapshotsDir`, if it is there. */
export async function readCommittedMeta(
  snapshotsDir: string,
  name: string,
): Promise<CommittedMeta | undefined> {
  const text = await readFile(join(snapshotsDir, snapshotId(name), 'meta.json'), 'utf8').catch(
    () => undefined,
  );
  if (text === undefined) return undefined;
  const meta = JSON.parse(text) as CommittedMeta;
  return meta.name === name ? meta : undefined;
}

/** The meta.json of active snapshot `key` kept in `activeDir`, if it is there. */
export function readActiveMetaSync(activeDir: string, key: string): ActiveMeta | undefined {
  try {
    const meta = JSON.parse(
      readFileSync(join(activeDir, snapshotId(key), 'meta.json'), 'utf8'),
    ) as ActiveMeta;
    return meta.key === key ? meta : undefined;
  } catch {
    return undefined;
  }
}
