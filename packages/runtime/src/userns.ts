import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants, userInfo } from 'node:os';
import { idmapHelperMissing, idmapHelperNotPrivileged, noSubidRange, unshareMissing } from './errors.js';
import { which } from './which.js';

/**
 * Set in the environment of the re-executed process, so it never re-executes again.
 * Its value says what was unshared: `userns` (user + mount namespace, the unprivileged
 * path) or `mountns` (only a mount namespace: real root needs no id mapping).
 */
export const REEXEC_ENV = '_STACKER_REEXEC';

export type ReexecMode = 'userns' | 'mountns';

const IDENTITY_MAP = ['0', '0', '4294967295'];

/** Is /proc/self/uid_map anything but the initial namespace's identity map? */
export function uidMapIsIdentity(uidMap?: string): boolean {
  let text = uidMap;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/uid_map', 'utf8');
    } catch {
      return true;
    }
  }
  const lines = text.trim().split('\n');
  return lines.length === 1 && lines[0].trim().split(/\s+/).join(' ') === IDENTITY_MAP.join(' ');
}

/**
 * Are we inside a user namespace? True when the uid map is not the identity map, or
 * when our own re-exec marker says we entered one.
 */
export function inUserNamespace(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[REEXEC_ENV] === 'userns' || !uidMapIsIdentity();
}

/** Does this process still have to re-exec itself (it is not the re-executed child)? */
export function needsReexec(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[REEXEC_ENV] !== 'userns' && env[REEXEC_ENV] !== 'mountns';
}

/**
 * What a re-exec has to unshare: root (uid 0, on the host or already root of some user
 * namespace) only needs a private mount namespace; anyone else needs a user namespace too.
 */
export function reexecMode(euid: number = process.geteuid?.() ?? 0): ReexecMode {
  return euid === 0 ? 'mountns' : 'userns';
}

export interface SubidRange {
  start: number;
  count: number;
}

export interface SubidOptions {
  /** Override the file read (default /etc/subuid or /etc/subgid). */
  file?: string;
  /** Override /etc/passwd (to turn a name into a uid and back). */
  passwdFile?: string;
}

/**
 * The first subordinate id range of `user` (a name or a numeric uid) in /etc/subuid
 * (`kind` 'uid') or /etc/subgid ('gid'); lines may name the user or give the uid.
 */
export function subidRange(
  user: string | number,
  kind: 'uid' | 'gid' = 'uid',
  opts: SubidOptions = {},
): SubidRange | undefined {
  const file = opts.file ?? (kind === 'uid' ? '/etc/subuid' : '/etc/subgid');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const { name, uid } = resolveUser(user, opts.passwdFile);
  const owners = new Set<string>();
  if (name !== undefined) owners.add(name);
  if (uid !== undefined) owners.add(String(uid));
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [owner, start, count] = line.split(':');
    if (!owners.has(owner)) continue;
    const s = Number(start);
    const c = Number(count);
    if (Number.isInteger(s) && Number.isInteger(c) && c > 0) return { start: s, count: c };
  }
  return undefined;
}

function resolveUser(user: string | number, passwdFile = '/etc/passwd'): { name?: string; uid?: number } {
  const me = userInfo();
  if (user === me.username || user === me.uid) return { name: me.username, uid: me.uid };
  let passwd = '';
  try {
    passwd = readFileSync(passwdFile, 'utf8');
  } catch {
    // no passwd: match the given form only
  }
  for (const line of passwd.split('\n')) {
    const [name, , uid] = line.split(':');
    if (name === user || (typeof user === 'number' && Number(uid) === user)) {
      return { name, uid: Number(uid) };
    }
  }
  return typeof user === 'number' ? { uid: user } : { name: user };
}

/** The current user as /etc/subuid names it. */
export function currentUser(): { name: string; uid: number } {
  const me = userInfo();
  return { name: me.username, uid: me.uid };
}

/** Is `path` an id-mapping helper that can do its job (setuid root, or file capabilities)? */
export function idmapHelperPrivileged(path: string): boolean {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch {
    return false;
  }
  if ((st.mode & 0o4000) !== 0 && st.uid === 0) return true;
  // the native module is loaded only here: a setuid helper (the usual case) needs none
  const { getAttributeSync } = createRequire(import.meta.url)(
    '@napi-rs/xattr',
  ) as typeof import('@napi-rs/xattr');
  try {
    return getAttributeSync(path, 'security.capability') !== null;
  } catch {
    return false;
  }
}

/**
 * Throw a user error naming what is missing to enter a user namespace as this user;
 * does nothing for root (which needs no id mapping).
 */
export function assertCanReexec(mode: ReexecMode = reexecMode()): void {
  if (!which('unshare')) throw unshareMissing();
  if (mode === 'mountns') return;
  const me = currentUser();
  if (!subidRange(me.name, 'uid')) throw noSubidRange(me.name, '/etc/subuid');
  if (!subidRange(me.name, 'gid')) throw noSubidRange(me.name, '/etc/subgid');
  for (const tool of ['newuidmap', 'newgidmap']) {
    const p = which(tool);
    if (!p) throw idmapHelperMissing(tool);
    if (!idmapHelperPrivileged(p)) throw idmapHelperNotPrivileged(tool, p);
  }
}

export interface ReexecCommand {
  command: string;
  args: string[];
}

/** The flags `unshare` needs for a mode (also used by `checkHost` to try things). */
export function unshareFlags(mode: ReexecMode): string[] {
  return mode === 'userns'
    ? ['--user', '--map-auto', '--map-root-user', '--mount', '--fork']
    : ['--mount', '--fork'];
}

/**
 * The command that re-runs this node program inside the namespaces: `argv` is a
 * process.argv (argv[0] node, argv[1] the script, then its arguments).
 */
export function reexecArgs(
  argv: readonly string[] = process.argv,
  opts: { mode?: ReexecMode; execPath?: string; execArgv?: readonly string[] } = {},
): ReexecCommand {
  const mode = opts.mode ?? reexecMode();
  const node = opts.execPath ?? process.execPath;
  const execArgv = opts.execArgv ?? process.execArgv;
  return {
    command: which('unshare') ?? 'unshare',
    args: [...unshareFlags(mode), '--', node, ...execArgv, ...argv.slice(1)],
  };
}

export interface ReexecOptions {
  argv?: readonly string[];
  env?: NodeJS.ProcessEnv;
  mode?: ReexecMode;
}

const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];

/**
 * Re-run this program inside a user + mount namespace (or only a mount namespace for
 * root) with stdio inherited; resolves to the exit code the caller should exit with
 * (128 + signal number if the child died of a signal).
 *
 * Signals sent to this process are passed on to the re-executed node process
 * (unshare itself blocks SIGINT/SIGTERM while it waits). A terminal's Ctrl-C already
 * reaches the whole foreground process group, so SIGINT is not passed on when stdin
 * is a terminal: the child would otherwise see it twice.
 */
export async function reexecInUserNamespace(opts: ReexecOptions = {}): Promise<number> {
  const mode = opts.mode ?? reexecMode();
  assertCanReexec(mode);
  const { command, args } = reexecArgs(opts.argv ?? process.argv, { mode });
  const env = { ...(opts.env ?? process.env), [REEXEC_ENV]: mode };
  const child = spawn(command, args, { env, stdio: 'inherit' });

  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const sig of FORWARDED) {
    const h = () => {
      if (sig === 'SIGINT' && process.stdin.isTTY) return;
      forwardSignal(child.pid, sig);
    };
    handlers.set(sig, h);
    process.on(sig, h);
  }
  try {
    return await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => {
        if (code !== null) resolve(code);
        else resolve(128 + (signal ? signalNumber(signal) : 0));
      });
    });
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
  }
}

/** Send `sig` to the children of unshare (the re-executed node), or to unshare itself. */
function forwardSignal(pid: number | undefined, sig: NodeJS.Signals): void {
  if (pid === undefined) return;
  let targets: number[] = [];
  try {
    targets = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    // no /proc children file: fall back to unshare
  }
  if (targets.length === 0) targets = [pid];
  for (const t of targets) {
    try {
      process.kill(t, sig);
    } catch {
      // already gone
    }
  }
}

export function signalNumber(sig: string): number {
  return (osConstants.signals as Record<string, number>)[sig] ?? 0;
}
