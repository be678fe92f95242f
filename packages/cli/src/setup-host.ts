import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { appendFile, chown, mkdir, open, readdir, readFile, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '@stacker/plugin-api';

/**
 * `stacker setup` (stacker's unpriv-setup): what root does once so that a user can build
 * unprivileged. Every step looks first and changes only what is missing, so running it
 * again does nothing.
 */

/** Size of the subordinate id range given to a user (what useradd gives by default). */
export const SUBID_COUNT = 65536;
/** Ranges start no lower than this (below are the system's own ids). */
export const SUBID_MIN = 100000;

export interface SetupHostOptions {
  username: string;
  uid: number;
  gid: number;
  stackerDir: string;
  rootsDir: string;
  /** Make a loop-mounted btrfs of this size (`truncate -s` syntax: 10G, 512M) on the roots dir. */
  btrfsSize?: string;
  /** For tests: the files to edit (default /etc/subuid, /etc/subgid). */
  subuidFile?: string;
  subgidFile?: string;
  /** For tests: the mount table to read (default /proc/self/mountinfo). */
  mountinfo?: string;
}

export function setupNeedsRoot(): UserError {
  return new UserError(
    'setup-needs-root',
    'stacker setup changes /etc/subuid, /etc/subgid and mounts, so it must run as root: run `sudo stacker setup`.',
  );
}

export function setupNoUser(): UserError {
  return new UserError(
    'setup-no-user',
    'stacker setup does not know which user to set up: run it through sudo (it reads SUDO_USER, SUDO_UID and SUDO_GID), or pass --username NAME --uid UID --gid GID.',
  );
}

export function setupRootsNotEmpty(rootsDir: string): UserError {
  return new UserError(
    'setup-roots-not-empty',
    `the roots dir ${rootsDir} is not empty, and mounting a btrfs on it would hide what it holds: remove it first (\`stacker clean\`) or pick another --roots-dir.`,
  );
}

export function setupBadSize(size: string): UserError {
  return new UserError(
    'setup-bad-size',
    `--btrfs ${JSON.stringify(size)} is not a size: give a number with an optional unit, like 10G or 512M.`,
  );
}

export interface SetupUser {
  username: string;
  uid: number;
  gid: number;
}

/** The user to set up: flags first, then sudo's environment, then the passwd entry. */
export function resolveSetupUser(
  flags: { username?: string; uid?: number; gid?: number },
  env: NodeJS.ProcessEnv = process.env,
  passwdFile = '/etc/passwd',
): SetupUser {
  const username = flags.username ?? env.SUDO_USER;
  if (!username) throw setupNoUser();
  let uid = flags.uid ?? (env.SUDO_USER === username && env.SUDO_UID ? Number(env.SUDO_UID) : undefined);
  let gid = flags.gid ?? (env.SUDO_USER === username && env.SUDO_GID ? Number(env.SUDO_GID) : undefined);
  if (uid === undefined || gid === undefined) {
    const entry = passwdEntry(username, passwdFile);
    uid ??= entry?.uid;
    gid ??= entry?.gid;
  }
  if (uid === undefined || gid === undefined || !Number.isInteger(uid) || !Number.isInteger(gid))
    throw setupNoUser();
  return { username, uid, gid };
}

function passwdEntry(name: string, file: string): { uid: number; gid: number } | undefined {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 4) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  return undefined;
}

interface SubidLine {
  owner: string;
  start: number;
  count: number;
}

function parseSubids(text: string): SubidLine[] {
  const out: SubidLine[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [owner, start, count] = line.split(':');
    const s = Number(start);
    const c = Number(count);
    if (owner && Number.isInteger(s) && Number.isInteger(c)) out.push({ owner, start: s, count: c });
  }
  return out;
}

/** The start of a free range of `count` ids: above every range in the file (and SUBID_MIN). */
export function nextSubidStart(text: string): number {
  let start = SUBID_MIN;
  for (const l of parseSubids(text)) start = Math.max(start, l.start + l.count);
  return start;
}

/** Give `user` a range in `file` unless it has one (by name or uid); returns what changed. */
export async function ensureSubidRange(file: string, user: SetupUser): Promise<string | undefined> {
  const text = existsSync(file) ? await readFile(file, 'utf8') : '';
  const has = parseSubids(text).some(
    (l) => (l.owner === user.username || l.owner === String(user.uid)) && l.count > 0,
  );
  if (has) return undefined;
  const start = nextSubidStart(text);
  const line = `${user.username}:${start}:${SUBID_COUNT}`;
  await appendFile(file, `${text === '' || text.endsWith('\n') ? '' : '\n'}${line}\n`, { mode: 0o644 });
  return `added ${line} to ${file}`;
}

async function ensureDir(dir: string, changes: string[]): Promise<void> {
  if (existsSync(dir)) return;
  await mkdir(dir, { recursive: true, mode: 0o755 });
  changes.push(`created ${dir}`);
}

async function ensureOwner(dir: string, user: SetupUser, changes: string[]): Promise<void> {
  const st = await stat(dir);
  if (st.uid === user.uid && st.gid === user.gid) return;
  await chown(dir, user.uid, user.gid);
  changes.push(`changed the owner of ${dir} to ${user.username} (${user.uid}:${user.gid})`);
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(Number.parseInt(oct, 8)));
}

/** The filesystem type mounted exactly at `dir`, if something is. */
async function mountedAt(dir: string, mountinfo = '/proc/self/mountinfo'): Promise<string | undefined> {
  const real = await realpath(dir);
  let found: string | undefined;
  for (const line of (await readFile(mountinfo, 'utf8')).split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (f.length > 4 && sep > 0 && unescapeMountinfo(f[4]) === real) found = f[sep + 1]; // the last one wins
  }
  return found;
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (err, _stdout, stderr) => {
      if (!err) return resolve();
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return reject(
          new UserError(
            'setup-tool-missing',
            `${cmd} was not found; install it (mkfs.btrfs comes with btrfs-progs, mount with util-linux, truncate with coreutils).`,
          ),
        );
      }
      reject(new Error(`${cmd} ${args.join(' ')} failed: ${String(stderr).trim() || err.message}`));
    });
  });
}

/** Has the loop file been formatted (btrfs magic `_BHRfS_M` at 64 KiB + 0x40)? */
async function hasBtrfs(file: string): Promise<boolean> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(8);
    const { bytesRead } = await fh.read(buf, 0, 8, 0x10040);
    return bytesRead === 8 && buf.toString('latin1') === '_BHRfS_M';
  } finally {
    await fh.close();
  }
}

async function ensureBtrfs(opts: SetupHostOptions, size: string, changes: string[]): Promise<void> {
  if (!/^\d+(\.\d+)?[KMGTPE]?(i?B)?$/i.test(size)) throw setupBadSize(size);
  const current = await mountedAt(opts.rootsDir, opts.mountinfo);
  if (current !== undefined) {
    if (current !== 'btrfs') {
      throw new UserError(
        'setup-roots-mounted',
        `the roots dir ${opts.rootsDir} already has a ${current} filesystem mounted on it; unmount it first, or pick another --roots-dir.`,
      );
    }
    return;
  }
  if ((await readdir(opts.rootsDir)).length > 0) throw setupRootsNotEmpty(opts.rootsDir);
  const loop = join(opts.stackerDir, 'btrfs.loop');
  if (!existsSync(loop)) {
    await run('truncate', ['-s', size, loop]);
    changes.push(`created the sparse file ${loop} (${size})`);
  }
  if (!(await hasBtrfs(loop))) {
    await run('mkfs.btrfs', ['-q', loop]);
    changes.push(`made a btrfs filesystem in ${loop}`);
  }
  await run('mount', ['-o', 'loop,user_subvol_rm_allowed', loop, opts.rootsDir]);
  changes.push(
    `mounted ${loop} on ${opts.rootsDir} (loop,user_subvol_rm_allowed; add it to /etc/fstab to keep it after a reboot)`,
  );
}

/**
 * Everything `stacker setup` does, in order: subordinate id ranges, the stacker and roots
 * dirs, the btrfs loop mount (when asked), and the owners of the two dirs. Returns one line
 * per thing it changed (empty: nothing to do).
 */
export async function setupHost(opts: SetupHostOptions, euid = process.geteuid?.() ?? 0): Promise<string[]> {
  if (euid !== 0) throw setupNeedsRoot();
  const user: SetupUser = { username: opts.username, uid: opts.uid, gid: opts.gid };
  const changes: string[] = [];
  for (const file of [opts.subuidFile ?? '/etc/subuid', opts.subgidFile ?? '/etc/subgid']) {
    const line = await ensureSubidRange(file, user);
    if (line) changes.push(line);
  }
  await ensureDir(opts.stackerDir, changes);
  await ensureDir(opts.rootsDir, changes);
  if (opts.btrfsSize !== undefined) await ensureBtrfs(opts, opts.btrfsSize, changes);
  await ensureOwner(opts.stackerDir, user, changes);
  await ensureOwner(opts.rootsDir, user, changes);
  return changes;
}
