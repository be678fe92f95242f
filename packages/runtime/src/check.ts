import { mkdtemp, rm } from 'node:fs/promises';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Options } from 'execa';

/** execa, imported on first use: loading it costs a quarter second, and a cached build runs nothing. */
const execa = async <O extends Options = Options>(file: string, args: readonly string[], options?: O) =>
  (await import('execa')).execa(file, args, options as O);

import { currentUser, idmapHelperPrivileged, reexecMode, subidRange, unshareFlags } from './userns.js';
import { which } from './which.js';

/** One line of `stacker check`. */
export interface CheckItem {
  name: string;
  ok: boolean;
  detail: string;
  /** What to do when not ok. */
  fix?: string;
}

export interface CheckHostOptions {
  /** The OCI runtime to look for (default `runc`). */
  runtime?: string;
  /** Where to try overlay and whiteouts (default the temp dir); pass the roots dir to
   * test the filesystem builds will really use. */
  dir?: string;
}

const SETUP = 'run `sudo stacker setup`';

/**
 * Everything an unprivileged build needs from this machine, each tried rather than
 * guessed where it can be: user namespace entry, overlay with `userxattr`, whiteouts.
 */
export async function checkHost(opts: CheckHostOptions = {}): Promise<CheckItem[]> {
  const items: CheckItem[] = [];
  const mode = reexecMode();
  const me = currentUser();

  for (const kind of ['uid', 'gid'] as const) {
    const file = kind === 'uid' ? '/etc/subuid' : '/etc/subgid';
    const range = subidRange(me.name, kind);
    if (mode === 'mountns') {
      items.push({
        name: `sub${kind} range`,
        ok: true,
        detail: `not needed: running as root${range ? ` (${me.name}:${range.start}:${range.count})` : ''}`,
      });
    } else {
      items.push({
        name: `sub${kind} range`,
        ok: range !== undefined,
        detail: range
          ? `${me.name}:${range.start}:${range.count} in ${file}`
          : `no range for ${me.name} in ${file}`,
        fix: range ? undefined : `${SETUP}, or add "${me.name}:100000:65536" to ${file}`,
      });
    }
  }

  for (const tool of ['newuidmap', 'newgidmap']) {
    const p = which(tool);
    const ok = p !== undefined && idmapHelperPrivileged(p);
    items.push({
      name: tool,
      ok: ok || mode === 'mountns',
      detail: !p ? 'not found' : ok ? `${p} (setuid or file capabilities)` : `${p} is not setuid root`,
      fix: ok ? undefined : !p ? 'install the `uidmap` package' : `sudo chmod u+s ${p}`,
    });
  }

  const unshare = which('unshare');
  let unshareVersion = '';
  if (unshare) {
    const r = await execa(unshare, ['--version'], { reject: false });
    unshareVersion = (r.stdout.match(/\d+\.\d+(\.\d+)?/) ?? [''])[0];
  }
  const unshareNew = versionAtLeast(unshareVersion, [2, 38]);
  items.push({
    name: 'unshare',
    ok: unshare !== undefined && unshareNew,
    detail: unshare ? `${unshare} (util-linux ${unshareVersion || 'unknown version'})` : 'not found',
    fix:
      unshare && unshareNew
        ? undefined
        : 'install util-linux 2.38 or newer (it provides `unshare --map-auto`)',
  });

  const runtime = opts.runtime ?? 'runc';
  const runtimePath = which(runtime);
  let runtimeVersion = '';
  if (runtimePath) {
    const r = await execa(runtimePath, ['--version'], { reject: false });
    runtimeVersion = r.stdout.split('\n')[0] ?? '';
  }
  items.push({
    name: runtime,
    ok: runtimePath !== undefined && runtimeVersion !== '',
    detail: runtimePath ? `${runtimePath}: ${runtimeVersion || 'does not run'}` : 'not found',
    fix: runtimePath ? undefined : `install ${runtime} (e.g. \`sudo apt-get install ${runtime}\`)`,
  });

  items.push(...(await tryInNamespace(mode, unshare, opts.dir ?? tmpdir())));
  return items;
}

// Every step prints `KEY ok` or `KEY error-text` on stdout; the script removes its own
// files because some (overlay's work dir) are only removable from inside the namespace.
const TRIAL = `
cd "$1" || exit 1
echo "entered ok"
mkdir l u w m && echo x > l/f
if e=$(mknod wh c 0 0 2>&1); then echo "whiteout ok"; else echo "whiteout $e"; fi
if e=$(mount -t overlay overlay -o lowerdir=l,upperdir=u,workdir=w,userxattr m 2>&1); then
  echo "mount ok"
  if e=$(rm m/f 2>&1) && [ -c u/f ]; then echo "ovwhiteout ok"; else echo "ovwhiteout no 0/0 device in upper dir $e"; fi
  umount m
else
  echo "mount $e"
fi
cd / && rm -rf "$1"
`;

async function tryInNamespace(
  mode: 'userns' | 'mountns',
  unshare: string | undefined,
  parent: string,
): Promise<CheckItem[]> {
  const kernel = release();
  const kernelOk = versionAtLeast(kernel, [5, 11]);
  const nsName = mode === 'userns' ? 'user namespace' : 'mount namespace';
  if (!unshare) {
    return [{ name: nsName, ok: false, detail: 'unshare not found', fix: 'install util-linux' }];
  }
  const dir = await mkdtemp(join(parent, '.stacker-check-'));
  try {
    const r = await execa(unshare, [...unshareFlags(mode), 'sh', '-c', TRIAL, 'sh', dir], { reject: false });
    const results = new Map<string, string>();
    for (const line of r.stdout.split('\n')) {
      const i = line.indexOf(' ');
      if (i > 0) results.set(line.slice(0, i), line.slice(i + 1).trim());
    }
    const entered = results.get('entered') === 'ok';
    const items: CheckItem[] = [
      {
        name: nsName,
        ok: entered,
        detail: entered
          ? `unshare ${unshareFlags(mode).join(' ')} works`
          : `unshare failed: ${oneLine(r.stderr) || `exit ${r.exitCode}`}`,
        fix: entered
          ? undefined
          : mode === 'userns'
            ? `${SETUP}; user namespaces must be enabled (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)`
            : 'the kernel must allow mount namespaces',
      },
    ];
    const wh = results.get('whiteout');
    items.push({
      name: 'whiteouts',
      ok: wh === 'ok',
      detail: wh === 'ok' ? 'can create 0/0 character devices' : `mknod c 0 0 failed: ${wh ?? 'not tried'}`,
      fix:
        wh === 'ok'
          ? undefined
          : 'use Linux 5.11 or newer, and keep the roots dir on a local filesystem (ext4, xfs, btrfs, tmpfs)',
    });
    const mount = results.get('mount');
    const ovwh = results.get('ovwhiteout');
    const good = mount === 'ok' && ovwh === 'ok';
    items.push({
      name: 'overlay (userxattr)',
      ok: good,
      detail:
        mount === 'ok'
          ? ovwh === 'ok'
            ? `overlay mounts with userxattr on ${parent} (kernel ${kernel})`
            : `overlay mounted but deleting a lower file failed: ${ovwh ?? 'not tried'}`
          : `mount -t overlay -o userxattr failed on ${parent} (kernel ${kernel}): ${mount ?? 'not tried'}`,
      fix: good
        ? undefined
        : kernelOk
          ? 'the filesystem must support user.* xattrs (ext4, xfs, btrfs, tmpfs on Linux 6.6+); use --storage-type=btrfs otherwise'
          : `Linux ${kernel} is too old: overlay needs 5.11 or newer for userxattr; upgrade the kernel or use --storage-type=btrfs`,
    });
    return items;
  } finally {
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

function oneLine(s: string): string {
  return s.trim().split('\n').filter(Boolean).join('; ');
}

/** Does a dotted version string reach `min`? */
export function versionAtLeast(version: string, min: number[]): boolean {
  const parts = (version.match(/\d+(\.\d+)*/) ?? [''])[0].split('.').map(Number);
  for (let i = 0; i < min.length; i++) {
    const v = parts[i] ?? 0;
    if (Number.isNaN(v)) return false;
    if (v !== min[i]) return v > min[i];
  }
  return true;
}
