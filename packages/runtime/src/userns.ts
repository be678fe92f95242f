import { type ChildProcess, execFile, type SpawnOptions, spawn, spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants, userInfo } from 'node:os';
import type { Duplex } from 'node:stream';
import {
  badUsernsHelper,
  idmapHelperFailed,
  idmapHelperMissing,
  idmapHelperNotPrivileged,
  namespaceNotEntered,
  noSubidRange,
  unshareMissing,
} from './errors.js';
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

/** Forces how the user namespace gets its id maps: `newuidmap` or `unshare` (default: probe). */
export const USERNS_HELPER_ENV = 'STACKER_USERNS_HELPER';

/**
 * Who writes the id maps of a new user namespace: util-linux `unshare --map-auto
 * --map-root-user` (2.38 and newer), or this process calling newuidmap/newgidmap on a
 * child that waits in an unmapped namespace (for older unshare).
 */
export type UsernsHelper = 'unshare' | 'newuidmap';

let mapAutoProbe: { unshare: string; ok: boolean } | undefined;

/**
 * Does this `unshare` know `--map-auto`? Asked once per process. The option's name is
 * looked for in the binary itself (its long-option table): a quarter of a millisecond,
 * where running `unshare --help` costs every start of stacker about ten; the help text is
 * asked only when the binary cannot be read.
 */
export function unshareHasMapAuto(unshare: string | undefined = which('unshare')): boolean {
  if (!unshare) return false;
  if (mapAutoProbe?.unshare !== unshare) {
    let ok: boolean;
    try {
      ok = readFileSync(unshare).includes('map-auto\0');
    } catch {
      const r = spawnSync(unshare, ['--help'], { encoding: 'utf8', timeout: 10_000 });
      ok = `${r.stdout ?? ''}`.includes('--map-auto');
    }
    mapAutoProbe = { unshare, ok };
  }
  return mapAutoProbe.ok;
}

/** The helper to use: the one STACKER_USERNS_HELPER names, else unshare when it has --map-auto. */
export function usernsHelper(env: NodeJS.ProcessEnv = process.env, unshare?: string): UsernsHelper {
  const forced = env[USERNS_HELPER_ENV];
  if (forced === 'newuidmap' || forced === 'unshare') return forced;
  if (forced) throw badUsernsHelper(forced);
  return unshareHasMapAuto(unshare ?? which('unshare')) ? 'unshare' : 'newuidmap';
}

export interface AssertReexecOptions {
  /** Override /etc/subuid. */
  subuidFile?: string;
  /** Override /etc/subgid. */
  subgidFile?: string;
  /** Override /etc/passwd. */
  passwdFile?: string;
  /** Override the user (default: the current one). */
  user?: string;
  /** Find a tool (default: `which`). */
  lookup?: (tool: string) => string | undefined;
}

/**
 * Throw a user error naming what is missing to enter a user namespace as this user;
 * for root (which needs no id mapping) only unshare is needed.
 */
export function assertCanReexec(mode: ReexecMode = reexecMode(), opts: AssertReexecOptions = {}): void {
  const lookup = opts.lookup ?? ((tool: string) => which(tool));
  if (!lookup('unshare')) throw unshareMissing();
  if (mode === 'mountns') return;
  const user = opts.user ?? currentUser().name;
  if (!subidRange(user, 'uid', { file: opts.subuidFile, passwdFile: opts.passwdFile }))
    throw noSubidRange(user, '/etc/subuid');
  if (!subidRange(user, 'gid', { file: opts.subgidFile, passwdFile: opts.passwdFile }))
    throw noSubidRange(user, '/etc/subgid');
  for (const tool of ['newuidmap', 'newgidmap']) {
    const p = lookup(tool);
    if (!p) throw idmapHelperMissing(tool);
    if (!idmapHelperPrivileged(p)) throw idmapHelperNotPrivileged(tool, p);
  }
}

export interface ReexecCommand {
  command: string;
  args: string[];
}

/**
 * The flags `unshare` needs for a mode (also used by `checkHost` to try things). With the
 * newuidmap helper, the user namespace starts without maps: the caller writes them.
 */
export function unshareFlags(mode: ReexecMode, helper: UsernsHelper = 'unshare'): string[] {
  if (mode === 'mountns') return ['--mount', '--fork'];
  return helper === 'unshare'
    ? ['--user', '--map-auto', '--map-root-user', '--mount', '--fork']
    : ['--user', '--mount', '--fork'];
}

/** The fd on which a child waiting for its id maps talks to its parent. */
const HANDSHAKE_FD = 3;

// Runs in the unmapped namespace: says its pid, waits for `go` (the maps are written),
// closes the handshake fd and becomes the real program, which thus starts as uid 0 with
// its capabilities (exec as an unmapped uid would drop them).
const WAIT_FOR_MAPS = `echo $$ >&${HANDSHAKE_FD} && read -r go <&${HANDSHAKE_FD} && [ "$go" = go ] || exit 125
exec ${HANDSHAKE_FD}<&-
exec "$0" "$@"`;

/** The command line that runs `argv` inside the namespaces of `mode` (see `spawnUnshared`). */
export function unsharedCommand(
  mode: ReexecMode,
  argv: readonly string[],
  helper: UsernsHelper = 'unshare',
): ReexecCommand {
  const pre = mode === 'userns' && helper === 'newuidmap' ? ['/bin/sh', '-c', WAIT_FOR_MAPS] : [];
  return {
    command: which('unshare') ?? 'unshare',
    args: [...unshareFlags(mode, helper), '--', ...pre, ...argv],
  };
}

/**
 * The command that re-runs this node program inside the namespaces: `argv` is a
 * process.argv (argv[0] node, argv[1] the script, then its arguments).
 */
export function reexecArgs(
  argv: readonly string[] = process.argv,
  opts: { mode?: ReexecMode; execPath?: string; execArgv?: readonly string[]; helper?: UsernsHelper } = {},
): ReexecCommand {
  const mode = opts.mode ?? reexecMode();
  const node = opts.execPath ?? process.execPath;
  const execArgv = opts.execArgv ?? process.execArgv;
  return unsharedCommand(mode, [node, ...execArgv, ...argv.slice(1)], opts.helper);
}

export interface UnsharedOptions extends Omit<SpawnOptions, 'stdio'> {
  mode: ReexecMode;
  helper?: UsernsHelper;
  stdio?: 'inherit' | 'pipe' | Array<'inherit' | 'pipe' | 'ignore'>;
}

/**
 * Spawn `argv` inside a new user + mount namespace (or only a mount namespace for root).
 * Resolves once the program runs with its id maps in place; with the newuidmap helper this
 * process writes them (caller -> 0, its subordinate ranges -> 1..count) while the child waits.
 */
export async function spawnUnshared(argv: readonly string[], opts: UnsharedOptions): Promise<ChildProcess> {
  const { mode, helper = 'unshare', stdio = 'inherit', ...rest } = opts;
  const { command, args } = unsharedCommand(mode, argv, helper);
  const waits = mode === 'userns' && helper === 'newuidmap';
  const base = typeof stdio === 'string' ? [stdio, stdio, stdio] : stdio.slice(0, 3);
  const child = spawn(command, args, { ...rest, stdio: waits ? [...base, 'pipe'] : base });
  if (!waits) return child;
  const channel = child.stdio[HANDSHAKE_FD] as Duplex;
  try {
    const pid = await new Promise<number>((resolve, reject) => {
      let text = '';
      const onData = (d: Buffer) => {
        text += d.toString();
        const nl = text.indexOf('\n');
        if (nl < 0) return;
        channel.off('data', onData);
        resolve(Number(text.slice(0, nl)));
      };
      channel.on('data', onData);
      child.once('error', reject);
      child.once('exit', () => reject(namespaceNotEntered(command)));
    });
    await writeIdMaps(pid);
    channel.end('go\n');
  } catch (e) {
    channel.destroy();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    throw e;
  }
  return child;
}

/** newuidmap/newgidmap PID: 0 -> the caller's id, 1..count -> its subordinate range. */
async function writeIdMaps(pid: number): Promise<void> {
  const me = currentUser();
  const ids = { uid: me.uid, gid: process.getgid?.() ?? me.uid };
  for (const kind of ['uid', 'gid'] as const) {
    const tool = `new${kind}map`;
    const range = subidRange(me.name, kind);
    if (!range) throw noSubidRange(me.name, kind === 'uid' ? '/etc/subuid' : '/etc/subgid');
    const path = which(tool);
    if (!path) throw idmapHelperMissing(tool);
    const args = [String(pid), '0', String(ids[kind]), '1', '1', String(range.start), String(range.count)];
    await new Promise<void>((resolve, reject) => {
      execFile(path, args, (err, _stdout, stderr) =>
        err
          ? reject(idmapHelperFailed(`${tool} ${args.join(' ')}`, `${stderr}`.trim() || err.message))
          : resolve(),
      );
    });
  }
}

export interface ReexecOptions {
  argv?: readonly string[];
  env?: NodeJS.ProcessEnv;
  mode?: ReexecMode;
  helper?: UsernsHelper;
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
  const helper = mode === 'userns' ? (opts.helper ?? usernsHelper(opts.env ?? process.env)) : 'unshare';
  const argv = opts.argv ?? process.argv;
  const env = { ...(opts.env ?? process.env), [REEXEC_ENV]: mode };

  // installed before the child exists, so a signal while the maps are written is not lost
  let pid: number | undefined;
  let pending: NodeJS.Signals | undefined;
  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const sig of FORWARDED) {
    const h = () => {
      if (sig === 'SIGINT' && process.stdin.isTTY) return;
      if (pid === undefined) pending = sig;
      else forwardSignal(pid, sig);
    };
    handlers.set(sig, h);
    process.on(sig, h);
  }
  try {
    const child = await spawnUnshared([process.execPath, ...process.execArgv, ...argv.slice(1)], {
      mode,
      helper,
      env,
      stdio: 'inherit',
    });
    const exited = new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => {
        if (code !== null) resolve(code);
        else resolve(128 + (signal ? signalNumber(signal) : 0));
      });
    });
    pid = child.pid;
    if (pending) forwardSignal(pid, pending);
    return await exited;
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
