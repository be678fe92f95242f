import { closeSync, constants, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { UserError } from '@stacker/plugin-api';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * An exclusive lock on a directory: `<dir>/.lock` holding the owner's pid. A lock whose
 * owner is gone (a killed build) is taken over. Fails at once, in stacker's words, when
 * another live stacker holds it.
 */
export class DirLock {
  private constructor(readonly path: string) {}

  static acquire(dir: string): DirLock {
    const path = join(dir, '.lock');
    mkdirSync(dirname(path), { recursive: true });
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o644);
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        return new DirLock(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        let pid = Number.NaN;
        try {
          pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
        } catch {
          /* vanished meanwhile */
        }
        // Same pid: a re-exec'd child in a pid namespace would not see it; treat our own as stale too.
        if (Number.isFinite(pid) && pid !== process.pid && alive(pid)) {
          throw new UserError(
            'lock',
            `couldn't acquire lock on ${dir}: another stacker (pid ${pid}) is using it; wait for it to finish`,
          );
        }
        try {
          unlinkSync(path);
        } catch {
          /* someone else took it over first; retry */
        }
      }
    }
    throw new UserError('lock', `couldn't acquire lock on ${dir}: ${path} keeps reappearing`);
  }

  release(): void {
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
  }
}
