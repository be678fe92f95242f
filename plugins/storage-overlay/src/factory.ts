import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
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
 * Try a real overlay mount with userxattr in a scratch dir under the roots dir (the
 * filesystem builds will use) and delete a lower file through it, which must leave a
 * whiteout in the upper dir.
 */
export async function checkOverlay(ctx: DriverContext): Promise<void> {
  if (process.geteuid?.() !== 0) throw notInNamespace();
  const base = join(ctx.rootsDir, 'overlay');
  await mkdir(base, { recursive: true });
  const dir = await mkdtemp(join(base, '.check-'));
  const merged = join(dir, 'm');
  try {
    for (const d of ['l', 'u', 'w', 'm']) await mkdir(join(dir, d));
    await writeFile(join(dir, 'l', 'f'), 'x');
    const r = await execa(
      'mount',
      ['-t', 'overlay', 'overlay', '-o', 'lowerdir=l,upperdir=u,workdir=w,userxattr', merged],
      {
        cwd: dir,
        reject: false,
      },
    );
    if (r.exitCode !== 0)
      throw overlayUnavailable(ctx.rootsDir, r.stderr.trim() || `mount exited ${r.exitCode}`);
    const rm = await execa('rm', [join(merged, 'f')], { reject: false });
    const wh = await execa('test', ['-c', join(dir, 'u', 'f')], { reject: false });
    if (rm.exitCode !== 0 || wh.exitCode !== 0) {
      throw overlayUnavailable(
        ctx.rootsDir,
        `deleting a lower file left no whiteout${rm.stderr ? `: ${rm.stderr.trim()}` : ''}`,
      );
    }
  } finally {
    await unmount(merged).catch(() => undefined);
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
