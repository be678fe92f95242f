import { readFile } from 'node:fs/promises';
import type { Options } from 'execa';

/** execa, imported on first use: loading it costs a quarter second, and a cached build runs nothing. */
const execa = async <O extends Options = Options>(file: string, args: readonly string[], options?: O) =>
  (await import('execa')).execa(file, args, options as O);

/** Mount points listed in /proc/self/mountinfo (octal escapes decoded). */
export async function mountPoints(mountinfo = '/proc/self/mountinfo'): Promise<string[]> {
  const text = await readFile(mountinfo, 'utf8');
  const points: string[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length > 4) points.push(unescapeMountinfo(fields[4]));
  }
  return points;
}

export function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

export async function isMountPoint(path: string): Promise<boolean> {
  return (await mountPoints()).includes(path);
}

/** Unmount `path` (and whatever is stacked on it); a busy mount is detached lazily. */
export async function unmount(path: string): Promise<void> {
  while (await isMountPoint(path)) {
    const r = await execa('umount', [path], { reject: false });
    if (r.exitCode !== 0) {
      const lazy = await execa('umount', ['-l', path], { reject: false });
      if (lazy.exitCode !== 0) throw new Error(`cannot unmount ${path}: ${lazy.stderr || r.stderr}`);
    }
  }
}

/** Unmount every mount point below `dir` (what a killed build left), deepest first; how many. */
export async function unmountBelow(dir: string): Promise<number> {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const mounted = (await mountPoints()).filter((p) => p.startsWith(prefix));
  // deepest first, so nothing is unmounted from under another mount
  mounted.sort((a, b) => b.length - a.length);
  for (const p of mounted) await unmount(p);
  return mounted.length;
}
