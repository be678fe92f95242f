import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Options } from 'execa';

/** execa, imported on first use: loading it costs a quarter second, and a cached build runs nothing. */
const execa = async <O extends Options = Options>(file: string, args: readonly string[], options?: O) =>
  (await import('execa')).execa(file, args, options as O);

import {
  currentUser,
  idmapHelperPrivileged,
  reexecMode,
  spawnUnshared,
  subidRange,
  type UsernsHelper,
  unshareFlags,
  unshareHasMapAuto,
  usernsHelper,
} from './userns.js';
import { which } from './which.js';

/** One line of `stacker check`. */
export interface CheckItem {
  name: string;
  ok: boolean;
  detail: string;
  /** What to do when not ok. */
  fix?: string;
  /** Nice to have: when absent, `ok` stays true and `detail` says so. */
  optional?: boolean;
  /** For an optional item: is the thing there? */
  present?: boolean;
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
  // an unshare without --map-auto (util-linux < 2.38) is enough: newuidmap writes the maps
  let helper: UsernsHelper = 'unshare';
  let helperError: string | undefined;
  try {
    helper = usernsHelper(process.env, unshare);
  } catch (e) {
    helperError = (e as Error).message;
  }
  const mapAuto = unshare !== undefined && unshareHasMapAuto(unshare);
  items.push({
    name: 'unshare',
    ok: unshare !== undefined && (helperError === undefined || mode === 'mountns'),
    detail: !unshare
      ? 'not found'
      : `${unshare} (util-linux ${unshareVersion || 'unknown version'}${mapAuto ? '' : ', no --map-auto'})${
          mode === 'userns'
            ? `; id maps written by ${helper === 'unshare' ? 'unshare --map-auto' : 'newuidmap/newgidmap'}`
            : ''
        }`,
    fix: !unshare ? 'install util-linux' : helperError,
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

  items.push(...(await tryInNamespace(mode, helper, unshare, opts.dir ?? tmpdir())));
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
  helper: UsernsHelper,
  unshare: string | undefined,
  dirToTry: string,
): Promise<CheckItem[]> {
  let parent = dirToTry;
  const kernel = release();
  const kernelOk = versionAtLeast(kernel, [5, 11]);
  const nsName = mode === 'userns' ? 'user namespace' : 'mount namespace';
  if (!unshare) {
    return [{ name: nsName, ok: false, detail: 'unshare not found', fix: 'install util-linux' }];
  }
  // a directory we may not write to (the roots dir's parent, say): try the temp dir instead
  let dir: string;
  try {
    dir = await mkdtemp(join(parent, '.stacker-check-'));
  } catch {
    parent = tmpdir();
    dir = await mkdtemp(join(parent, '.stacker-check-'));
  }
  try {
    const r = await runUnshared(mode, helper, ['sh', '-c', TRIAL, 'sh', dir]);
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
          ? `unshare ${unshareFlags(mode, helper).join(' ')} works${mode === 'userns' && helper === 'newuidmap' ? ' (maps by newuidmap/newgidmap)' : ''}`
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

/** Run `argv` as a re-exec would, collecting its output (never throws). */
async function runUnshared(
  mode: 'userns' | 'mountns',
  helper: UsernsHelper,
  argv: string[],
): Promise<{ stdout: string; stderr: string; exitCode: number | null }> {
  let stdout = '';
  let stderr = '';
  try {
    const child = await spawnUnshared(argv, { mode, helper, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const exitCode = await new Promise<number | null>((resolve) => {
      child.once('error', (e) => {
        stderr += e.message;
        resolve(null);
      });
      child.once('close', (code) => resolve(code));
    });
    return { stdout, stderr, exitCode };
  } catch (e) {
    return { stdout, stderr: `${stderr}${(e as Error).message}`, exitCode: null };
  }
}

/**
 * Can this machine use the btrfs storage driver (optional: overlay is the default)?
 * btrfs-progs must be installed and the kernel must know btrfs, built in, loaded or as a
 * module it can load.
 */
export interface BtrfsSupportOptions {
  /** Find a tool (default: `which`). */
  lookup?: (tool: string) => string | undefined;
  /** Override /proc/filesystems. */
  procFilesystems?: string;
  /** Override /lib/modules/$(uname -r). */
  modulesDir?: string;
}

export async function btrfsSupport(required = false, opts: BtrfsSupportOptions = {}): Promise<CheckItem> {
  const lookup = opts.lookup ?? ((t: string) => which(t));
  const tools = ['btrfs', 'mkfs.btrfs'].map((t) => [t, lookup(t)] as const);
  const missing = tools.filter(([, p]) => !p).map(([t]) => t);
  const kernel = await kernelHasBtrfs(
    opts.procFilesystems ?? '/proc/filesystems',
    opts.modulesDir ?? join('/lib/modules', release()),
  );
  const present = missing.length === 0 && kernel !== undefined;
  const parts = [
    missing.length === 0 ? `btrfs-progs (${tools.map(([, p]) => p).join(', ')})` : `no ${missing.join(', ')}`,
    kernel ? `kernel btrfs ${kernel}` : `kernel ${release()} has no btrfs`,
  ];
  const fix = [
    ...(missing.length ? ['install btrfs-progs (e.g. `sudo apt-get install btrfs-progs`)'] : []),
    ...(kernel ? [] : ['use a kernel with btrfs (CONFIG_BTRFS_FS)']),
  ].join('; ');
  return {
    name: 'btrfs',
    ok: present || !required,
    optional: !required,
    present,
    detail: required
      ? parts.join('; ')
      : `${parts.join('; ')} (optional: only --storage-type=btrfs needs it)`,
    fix: fix || undefined,
  };
}

async function kernelHasBtrfs(procFilesystems: string, mods: string): Promise<string | undefined> {
  const filesystems = await readFile(procFilesystems, 'utf8').catch(() => '');
  if (/\sbtrfs$/m.test(filesystems)) return '(in /proc/filesystems)';
  const builtin = await readFile(join(mods, 'modules.builtin'), 'utf8').catch(() => '');
  if (/\/btrfs\.ko$/m.test(builtin)) return '(built in)';
  const dep = await readFile(join(mods, 'modules.dep'), 'utf8').catch(() => '');
  if (/\/btrfs\.ko(\.[a-z]+)?:/m.test(dep)) return '(module, loaded on first mount)';
  // some distributions ship no modules.dep: look for the module file itself
  const dir = await readdir(join(mods, 'kernel/fs/btrfs')).catch(() => [] as string[]);
  if (dir.some((f) => f.startsWith('btrfs.ko'))) return '(module, loaded on first mount)';
  return undefined;
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
