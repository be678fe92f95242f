import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout the tests run from (a bind mount the test user can read, when needed). */
export const REPO = process.env.STACKER_E2E_REPO ?? resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CLI = join(REPO, 'packages/cli/bin/run.js');
export const FIXTURES = join(REPO, 'build/fixtures');
export const BUSYBOX_TAR = join(FIXTURES, 'busybox.tar.gz');
export const TEST_USER = process.env.STACKER_TEST_USER ?? 'stacker-test';
export const IS_ROOT = process.getuid?.() === 0;

function userIds(): { uid: number; gid: number } {
  if (!IS_ROOT) return { uid: process.getuid!(), gid: process.getgid!() };
  const uid = Number(execFileSync('id', ['-u', TEST_USER]).toString().trim());
  const gid = Number(execFileSync('id', ['-g', TEST_USER]).toString().trim());
  return { uid, gid };
}
export const USER_IDS = userIds();

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout + stderr */
  output: string;
}

/**
 * Run a command as the unprivileged test user (as root: through runuser; otherwise as
 * ourselves, who must then have a subuid range). Environment: a clean one, plus `env`.
 */
export function asUser(
  cmd: string,
  args: string[],
  opts: { cwd: string; env?: Record<string, string>; input?: string; timeout?: number },
): Result {
  const env: Record<string, string> = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: IS_ROOT ? `/home/${TEST_USER}` : (process.env.HOME ?? '/tmp'),
    LANG: 'C.UTF-8',
    ...opts.env,
  };
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  const [file, argv] = IS_ROOT
    ? ['runuser', ['-u', TEST_USER, '--', 'env', '-i', ...envArgs, cmd, ...args]]
    : ['env', ['-i', ...envArgs, cmd, ...args]];
  const r = spawnSync(file, argv, {
    cwd: opts.cwd,
    encoding: 'utf8',
    input: opts.input,
    timeout: opts.timeout ?? 280_000,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  const stdout = r.stdout ?? '';
  const stderr = r.stderr ?? '';
  return { code: r.status ?? 128, stdout, stderr, output: stdout + stderr };
}

/** `stacker ARGS` as the test user in `cwd`. */
export function stacker(args: string[], opts: { cwd: string; env?: Record<string, string> }): Result {
  return asUser(process.execPath, [CLI, ...args], opts);
}

/** A fresh directory owned by the test user; `files` are copied in from the repo. */
export function workdir(prefix = 'stacker-e2e-', copyFrom?: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (copyFrom) cpSync(copyFrom, dir, { recursive: true });
  chownTree(dir);
  return dir;
}

export function chownTree(dir: string): void {
  if (!IS_ROOT) return;
  execFileSync('chown', ['-R', `${USER_IDS.uid}:${USER_IDS.gid}`, dir]);
}

/** Remove a work dir, including files owned by the test user's subuids. */
export function removeWorkdir(dir: string): void {
  if (IS_ROOT) {
    spawnSync('umount', ['-R', '-l', join(dir, 'roots')], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  } else {
    // files of mapped ids can only be removed from inside the user namespace
    spawnSync('unshare', ['--user', '--map-auto', '--map-root-user', 'rm', '-rf', dir], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  }
}

export function write(path: string, text: string): void {
  writeFileSync(path, text);
  if (IS_ROOT) chownSync(path, USER_IDS.uid, USER_IDS.gid);
}
