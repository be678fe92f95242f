import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nextSubidStart, resolveSetupUser, setupHost } from './setup-host.js';

const here = dirname(fileURLToPath(import.meta.url));
const bin = join(here, '..', 'bin', 'run.js');
const isRoot = process.geteuid?.() === 0;
const TEST_USER = 'stacker-test';
const testUser = spawnSync('id', ['-u', TEST_USER], { encoding: 'utf8' });
const haveTestUser = testUser.status === 0;
const testUid = haveTestUser ? Number(testUser.stdout.trim()) : 1001;
const testGid = haveTestUser
  ? Number(execFileSync('id', ['-g', TEST_USER], { encoding: 'utf8' }).trim())
  : 1001;

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'stacker-setup-test-'));
  await chmod(tmp, 0o755);
});
afterAll(async () => {
  if (!tmp) return;
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const p = line.split(' ')[4];
    if (p?.startsWith(`${tmp}/`)) spawnSync('umount', [p]);
  }
  await rm(tmp, { recursive: true, force: true });
});

describe('setup: who and which ids', () => {
  it('picks a subordinate range above every existing one', () => {
    expect(nextSubidStart('')).toBe(100000);
    expect(nextSubidStart('# comment\nalice:100000:65536\nbob:300000:1000\n')).toBe(301000);
    expect(nextSubidStart('low:1000:10')).toBe(100000);
  });

  it('takes the user from sudo, flags first, then /etc/passwd', async () => {
    const env = { SUDO_USER: 'alice', SUDO_UID: '1000', SUDO_GID: '1001' };
    expect(resolveSetupUser({}, env)).toEqual({ username: 'alice', uid: 1000, gid: 1001 });
    expect(resolveSetupUser({ uid: 7 }, env)).toEqual({ username: 'alice', uid: 7, gid: 1001 });
    const passwd = join(tmp, 'passwd');
    await writeFile(passwd, 'root:x:0:0::/root:/bin/sh\ncarol:x:1200:1300::/home/carol:/bin/sh\n');
    // another user than sudo's: sudo's ids are not theirs
    expect(resolveSetupUser({ username: 'carol' }, env, passwd)).toEqual({
      username: 'carol',
      uid: 1200,
      gid: 1300,
    });
    expect(() => resolveSetupUser({}, {}, passwd)).toThrow(/--username NAME --uid UID --gid GID/);
    expect(() => resolveSetupUser({ username: 'nobody-here' }, {}, passwd)).toThrow(
      expect.objectContaining({ code: 'setup-no-user' }),
    );
  });

  it('refuses to run as anyone but root, in one sentence', async () => {
    const err = await setupHost(
      { username: 'a', uid: 1, gid: 1, stackerDir: join(tmp, 's'), rootsDir: join(tmp, 'r') },
      1000,
    ).catch((e) => e);
    expect(err).toMatchObject({
      code: 'setup-needs-root',
      message: expect.stringMatching(/must run as root: run `sudo stacker setup`\.$/),
    });
    expect(existsSync(join(tmp, 's'))).toBe(false);
  });
});

describe.runIf(isRoot)('setup as root', () => {
  it('adds id ranges, creates and hands over the dirs, and does nothing the second time', async () => {
    const dir = join(tmp, 'plain');
    await mkdir(dir);
    const subuid = join(dir, 'subuid');
    const subgid = join(dir, 'subgid');
    await writeFile(subuid, 'alice:100000:65536\nbob:165536:65536'); // no final newline
    await writeFile(subgid, `alice:100000:65536\n${testUid}:200000:65536\n`); // by uid
    const opts = {
      username: TEST_USER,
      uid: testUid,
      gid: testGid,
      stackerDir: join(dir, 'work', '.stacker'),
      rootsDir: join(dir, 'work', 'roots'),
      subuidFile: subuid,
      subgidFile: subgid,
    };
    expect(await setupHost(opts)).toEqual([
      `added ${TEST_USER}:231072:65536 to ${subuid}`,
      `created ${opts.stackerDir}`,
      `created ${opts.rootsDir}`,
      `changed the owner of ${opts.stackerDir} to ${TEST_USER} (${testUid}:${testGid})`,
      `changed the owner of ${opts.rootsDir} to ${TEST_USER} (${testUid}:${testGid})`,
    ]);
    expect(await readFile(subuid, 'utf8')).toBe(
      `alice:100000:65536\nbob:165536:65536\n${TEST_USER}:231072:65536\n`,
    );
    expect(await readFile(subgid, 'utf8')).toBe(`alice:100000:65536\n${testUid}:200000:65536\n`);
    expect(statSync(opts.rootsDir).uid).toBe(testUid);
    expect(await setupHost(opts)).toEqual([]);
  });

  it('makes, formats and mounts a btrfs loop file on the roots dir, once', async () => {
    const dir = join(tmp, 'btrfs');
    await mkdir(dir);
    const subuid = join(dir, 'subuid');
    await writeFile(subuid, '');
    const opts = {
      username: TEST_USER,
      uid: testUid,
      gid: testGid,
      stackerDir: join(dir, '.stacker'),
      rootsDir: join(dir, 'roots'),
      subuidFile: subuid,
      subgidFile: subuid,
      btrfsSize: '256M',
    };
    const loop = join(opts.stackerDir, 'btrfs.loop');
    expect(await setupHost(opts)).toEqual([
      `added ${TEST_USER}:100000:65536 to ${subuid}`,
      `created ${opts.stackerDir}`,
      `created ${opts.rootsDir}`,
      `created the sparse file ${loop} (256M)`,
      `made a btrfs filesystem in ${loop}`,
      `mounted ${loop} on ${opts.rootsDir} (loop,user_subvol_rm_allowed; add it to /etc/fstab to keep it after a reboot)`,
      `changed the owner of ${opts.stackerDir} to ${TEST_USER} (${testUid}:${testGid})`,
      `changed the owner of ${opts.rootsDir} to ${TEST_USER} (${testUid}:${testGid})`,
    ]);
    expect(statSync(loop).blocks * 512).toBeLessThan(statSync(loop).size); // sparse
    expect(execFileSync('stat', ['-f', '-c', '%T', opts.rootsDir], { encoding: 'utf8' }).trim()).toBe(
      'btrfs',
    );
    const mount =
      readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .find((l) => l.split(' ')[4] === opts.rootsDir) ?? '';
    expect(mount).toContain('user_subvol_rm_allowed');
    expect(await setupHost(opts)).toEqual([]);
    // unmounted again (a reboot): the loop file, and the owner of its root, are kept
    execFileSync('umount', [opts.rootsDir]);
    expect(await setupHost(opts)).toEqual([
      `mounted ${loop} on ${opts.rootsDir} (loop,user_subvol_rm_allowed; add it to /etc/fstab to keep it after a reboot)`,
    ]);
    execFileSync('umount', [opts.rootsDir]);
    await writeFile(join(opts.rootsDir, 'something'), '');
    await expect(setupHost(opts)).rejects.toMatchObject({ code: 'setup-roots-not-empty' });
    await expect(setupHost({ ...opts, btrfsSize: 'lots' })).rejects.toMatchObject({ code: 'setup-bad-size' });
  });
});

// The command itself, through the compiled CLI (nx builds it before tests).
const built = existsSync(join(here, '..', 'dist', 'commands', 'setup.js'));
const hasRanges = (file: string) =>
  readFileSync(file, 'utf8')
    .split('\n')
    .some((l) => l.startsWith(`${TEST_USER}:`));

describe.runIf(built && isRoot && haveTestUser)('stacker setup / unpriv-setup', () => {
  it('tells a user who is not root what to do, exit 1', () => {
    const r = spawnSync('runuser', ['-u', TEST_USER, '--', process.execPath, bin, 'setup'], {
      cwd: '/tmp',
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(
      'error: stacker setup changes /etc/subuid, /etc/subgid and mounts, so it must run as root: run `sudo stacker setup`.\n',
    );
  });

  // Reads the real /etc/subuid and /etc/subgid, and only runs where the test user has
  // ranges already, so it never writes them.
  it.runIf(hasRanges('/etc/subuid') && hasRanges('/etc/subgid'))(
    'takes the user from sudo and is idempotent',
    async () => {
      const work = join(tmp, 'cmd');
      await mkdir(work);
      const env = {
        ...process.env,
        SUDO_USER: TEST_USER,
        SUDO_UID: String(testUid),
        SUDO_GID: String(testGid),
      };
      const run = () =>
        execFileSync(process.execPath, [bin, '--work-dir', work, 'unpriv-setup'], {
          cwd: work,
          env,
          encoding: 'utf8',
        });
      expect(run()).toBe(
        [
          `created ${work}/.stacker`,
          `created ${work}/roots`,
          `changed the owner of ${work}/.stacker to ${TEST_USER} (${testUid}:${testGid})`,
          `changed the owner of ${work}/roots to ${TEST_USER} (${testUid}:${testGid})`,
          '',
        ].join('\n'),
      );
      expect(run()).toBe('nothing to do\n');
    },
  );
});
