import { type ChildProcess, spawn } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isUserError } from '@stacker/plugin-api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DirLock } from './lock.js';

let dir: string;
let child: ChildProcess | undefined;

beforeEach(async () => {
  dir = await fsp.mkdtemp(join(tmpdir(), 'core-lock-'));
});
afterEach(async () => {
  if (child?.exitCode === null) child.kill('SIGKILL');
  child = undefined;
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Another live process (it sleeps), and a promise of its end. */
function otherProcess(): { pid: number; exited: Promise<void> } {
  child = spawn('sleep', ['60'], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child!.once('exit', () => r()));
  return { pid: child.pid!, exited };
}

function errorOf(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
}

describe('DirLock', () => {
  it('writes our pid into <dir>/.lock and removes it on release', async () => {
    const lock = DirLock.acquire(join(dir, 'stacker'));
    expect(await fsp.readFile(join(dir, 'stacker', '.lock'), 'utf8')).toBe(`${process.pid}\n`);
    lock.release();
    await expect(fsp.access(join(dir, 'stacker', '.lock'))).rejects.toThrow();
    // released: it can be taken again
    DirLock.acquire(join(dir, 'stacker')).release();
  });

  it('a second acquire while another live stacker holds it fails at once, naming the dir and pid', async () => {
    const other = otherProcess();
    await fsp.writeFile(join(dir, '.lock'), `${other.pid}\n`);
    const started = Date.now();
    const e = errorOf(() => DirLock.acquire(dir));
    expect(Date.now() - started).toBeLessThan(1000);
    expect(isUserError(e)).toBe(true);
    expect(e.message).toContain("couldn't acquire lock");
    expect(e.message).toContain(dir);
    expect(e.message).toContain(`pid ${other.pid}`);
    // the holder's lock is left alone
    expect(await fsp.readFile(join(dir, '.lock'), 'utf8')).toBe(`${other.pid}\n`);
  });

  it('takes over the stale lock of a process that is gone', async () => {
    const other = otherProcess();
    await fsp.writeFile(join(dir, '.lock'), `${other.pid}\n`);
    expect(() => DirLock.acquire(dir)).toThrow(/couldn't acquire lock/);
    child!.kill('SIGKILL');
    await other.exited;
    const lock = DirLock.acquire(dir);
    expect(await fsp.readFile(join(dir, '.lock'), 'utf8')).toBe(`${process.pid}\n`);
    lock.release();
  });

  it('takes over a lock file that holds no pid (a crash while writing it)', async () => {
    await fsp.writeFile(join(dir, '.lock'), '');
    const lock = DirLock.acquire(dir);
    expect(await fsp.readFile(join(dir, '.lock'), 'utf8')).toBe(`${process.pid}\n`);
    lock.release();
  });
});
