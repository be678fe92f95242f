import * as fsp from 'node:fs/promises';
import { join, posix } from 'node:path';
import { UserError } from '@stacker/plugin-api';
import { resolveInRoot } from './engine.js';
import type { Workspace } from './workspace.js';

/** `TAG:PATH` as `stacker grab` takes it (the first colon separates). */
export function parseGrabArgument(arg: string | undefined): { tag: string; path: string } {
  const i = arg?.indexOf(':') ?? -1;
  if (!arg || i <= 0 || i === arg.length - 1) {
    throw new UserError(
      'grab-argument',
      `invalid grab argument: ${arg ?? ''}; expected TAG:PATH, e.g. app:/etc/os-release`,
    );
  }
  return { tag: arg.slice(0, i), path: arg.slice(i + 1) };
}

/**
 * Copy `path` (a file or a directory, recursively) out of the image tagged `tag` into
 * `destDir`, under its own base name, as stacker's grab does. The copy belongs to whoever
 * runs stacker (root of the user namespace = the caller); modes, times and symlinks are
 * kept. Nothing else changes: no tag, no cache entry.
 */
export async function grab(ws: Workspace, tag: string, path: string, destDir: string): Promise<string> {
  const name = posix.basename(posix.normalize(`/${path}`));
  if (!name) throw new UserError('grab-argument', `grab needs a path below /, not ${path}`);
  const target = join(destDir, name);
  await ws.withThrowawaySnapshot(tag, async (rootfs) => {
    const source = await resolveFully(rootfs, path);
    if (!source) throw new UserError('grab-missing', `${path} does not exist in ${tag}`);
    await fsp.cp(source, target, {
      recursive: true,
      preserveTimestamps: true,
      verbatimSymlinks: true,
      force: true,
      errorOnExist: false,
    });
  });
  return target;
}

/** The host path of in-image `path`, following symlinks (the last one too) inside the root. */
async function resolveFully(rootfs: string, path: string): Promise<string | undefined> {
  let p = posix.normalize(`/${path}`);
  for (let hops = 0; hops < 40; hops++) {
    const host = await resolveInRoot(rootfs, p);
    const st = await fsp.lstat(host).catch(() => undefined);
    if (!st) return undefined;
    if (!st.isSymbolicLink()) return host;
    const target = await fsp.readlink(host);
    p = target.startsWith('/') ? posix.normalize(target) : posix.join(posix.dirname(p), target);
  }
  throw new UserError('symlink-loop', `too many symlinks resolving ${path}`);
}
