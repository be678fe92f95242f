import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Test helpers (not built): a real btrfs on a loop device, the test user, compiled code. */

const here = dirname(fileURLToPath(import.meta.url));
export const pkg = dirname(here);
export const repo = join(pkg, '..', '..');
export const isRoot = process.geteuid?.() === 0;
export const TEST_USER = 'stacker-test';
export const USERNS = ['--user', '--map-auto', '--map-root-user', '--mount', '--fork'];

export function haveTestUser(): boolean {
  return spawnSync('id', ['-u', TEST_USER]).status === 0;
}

export interface LoopBtrfs {
  /** The mounted filesystem (root-owned, mode 755). */
  mnt: string;
  /** A directory on it owned by `owner` (mode 755). */
  dirFor(owner: string, name: string): string;
  dispose(): void;
}

/** A sparse image, mkfs.btrfs, mounted with `options` (root only). */
export function makeLoopBtrfs(options = 'loop,user_subvol_rm_allowed', size = '512M'): LoopBtrfs {
  const dir = mkdtempSync(join(tmpdir(), 'stacker-btrfs-test-'));
  chmodSync(dir, 0o755);
  const img = join(dir, 'fs.img');
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  execFileSync('truncate', ['-s', size, img]);
  execFileSync('mkfs.btrfs', ['-q', img], { stdio: 'ignore' });
  execFileSync('mount', ['-o', options, img, mnt]);
  chmodSync(mnt, 0o755);
  return {
    mnt,
    dirFor(owner, name) {
      const p = join(mnt, name);
      mkdirSync(p, { recursive: true });
      execFileSync('chown', [`${owner}:`, p]);
      return p;
    },
    dispose() {
      if (spawnSync('umount', [mnt]).status !== 0) spawnSync('umount', ['-l', mnt]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Compile `dir` unless its dist is newer than every source file (nx builds before tests). */
export function buildIfStale(dir: string, onlyIfMissing = false): void {
  const out = join(dir, 'dist', 'index.js');
  const built = existsSync(out) ? statSync(out).mtimeMs : 0;
  if (onlyIfMissing && built) return;
  const src = join(dir, 'src');
  const stale = readdirSync(src).some(
    (f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && statSync(join(src, f)).mtimeMs > built,
  );
  if (stale)
    execFileSync('npx', ['tsc', '-p', join(dir, 'tsconfig.build.json')], { cwd: dir, stdio: 'inherit' });
}

/** Run `node script args…` as the test user inside a user namespace, or as root; parse its JSON. */
export function runFixture(script: string, args: string[], as: 'user' | 'root'): unknown {
  const cmd = [process.execPath, script, ...args];
  const argv = as === 'user' ? ['runuser', '-u', TEST_USER, '--', 'unshare', ...USERNS, ...cmd] : cmd;
  const out = execFileSync(argv[0], argv.slice(1), {
    cwd: '/tmp',
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return JSON.parse(out);
}
