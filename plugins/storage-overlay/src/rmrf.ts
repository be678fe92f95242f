import { chmod, lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * rm -rf that also works on trees with read-only directories (a rootfs has some, and
 * overlay leaves a mode 000 `work/work`) when we lack CAP_DAC_OVERRIDE over them.
 */
export async function removeTree(path: string): Promise<void> {
  try {
    await rm(path, { recursive: true, force: true });
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'ENOTEMPTY') throw e;
  }
  await makeWritable(path);
  await rm(path, { recursive: true, force: true });
}

async function makeWritable(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st?.isDirectory()) return;
  await chmod(path, (st.mode & 0o7777) | 0o700).catch(() => undefined);
  const names = await readdir(path).catch(() => [] as string[]);
  for (const n of names) await makeWritable(join(path, n));
}
