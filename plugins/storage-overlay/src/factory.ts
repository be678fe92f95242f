import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DriverContext, StorageDriverFactory } from '@stacker/plugin-api';
import type { Options } from 'execa';

/** execa, imported on first use: loading it costs a quarter second, and a cached build runs nothing. */
const execa = async <O extends Options = Options>(file: string, args: readonly string[], options?: O) =>
  (await import('execa')).execa(file, args, options as O);

import { OverlayDriver } from './driver.js';
import { notInNamespace, overlayUnavailable } from './errors.js';
import { unmount } from './mounts.js';
import { removeTree } from './rmrf.js';

/**
 * Mount an overlay (userxattr) at `mnt` with `lower`, `upper` and `work` (paths relative to
 * `cwd`, so the option string holds no `,` or `:` of the caller's directories) and delete
 * the lower file `f` through it, which must leave a 0/0 whiteout in the upper dir.
 * Undefined when it did; else what went wrong. The caller unmounts `mnt`.
 */
export async function probeOverlay(
  cwd: string,
  dirs: { lower: string; upper: string; work: string; mnt: string },
): Promise<string | undefined> {
  const r = await execa(
    'mount',
    [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${dirs.lower},upperdir=${dirs.upper},workdir=${dirs.work},userxattr`,
      dirs.mnt,
    ],
    { cwd, reject: false },
  );
  if (r.exitCode !== 0) return r.stderr.trim() || `mount exited ${r.exitCode}`;
  const removed = await rm(join(cwd, dirs.mnt, 'f')).then(
    () => '',
    (e: Error) => `: ${e.message}`,
  );
  const wh = await stat(join(cwd, dirs.upper, 'f')).catch(() => undefined);
  if (removed || !wh?.isCharacterDevice() || wh.rdev !== 0)
    return `deleting a lower file left no whiteout${removed}`;
  return undefined;
}

/**
 * Try a real overlay mount with userxattr in a scratch dir under the roots dir (the
 * filesystem builds will use) and delete a lower file through it, which must leave a
 * whiteout in the upper dir.
 */
export async function checkOverlay(ctx: DriverContext): Promise<void> {
  if (process.geteuid?.() !== 0) throw notInNamespace();
  const base = join(ctx.rootsDir, 'overlay');
  await mkdir(base, { recursive: true });
  const dir = await mkdtemp(join(base, '.check-'));
  try {
    for (const d of ['l', 'u', 'w', 'm']) await mkdir(join(dir, d));
    await writeFile(join(dir, 'l', 'f'), 'x');
    const failure = await probeOverlay(dir, { lower: 'l', upper: 'u', work: 'w', mnt: 'm' });
    if (failure !== undefined) throw overlayUnavailable(ctx.rootsDir, failure);
  } finally {
    await unmount(join(dir, 'm')).catch(() => undefined);
    await removeTree(dir);
  }
}

export const overlayFactory: StorageDriverFactory = {
  type: 'overlay',
  description:
    'rootless overlayfs (the default): Linux 5.11+ with userxattr, a roots dir on ext4, xfs, btrfs or tmpfs; no setup needed',
  check: checkOverlay,
  create: (ctx) => OverlayDriver.open(ctx),
};
