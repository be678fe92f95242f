import { existsSync } from 'node:fs';
import { readdir, rmdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { btrfsSupport, type CheckItem, checkHost } from '@stacker/runtime';
import { StackerCommand } from '../base-command.js';

export default class Check extends StackerCommand {
  static override summary = 'checks that this machine can run stacker builds';
  static override description =
    'Tries each thing an unprivileged build needs (subuid/subgid range, setuid newuidmap/newgidmap, unshare, runc, overlay with userxattr, whiteout creation, the chosen storage driver) and prints ok or FAIL with the fix, plus whether btrfs is available (optional). Creates nothing: what it tries is removed again. Exits 1 when something fails.';
  static override examples = [
    '<%= config.bin %> check',
    '<%= config.bin %> --roots-dir /var/lib/stacker/roots check',
  ];

  async run(): Promise<void> {
    const { flags } = await this.parse(Check);
    this.setUp(flags);
    const { rootsDir, storageType } = this.settings;
    // overlay is tried on the filesystem the roots dir is (or will be) on
    const trialDir = nearestExisting(rootsDir);
    const items = await checkHost({ runtime: this.settings.runtime, dir: trialDir });
    items.push(await btrfsSupport(storageType === 'btrfs'));
    items.push(await this.storageItem(items, trialDir));
    const width = Math.max(...items.map((i) => i.name.length));
    for (const i of items) {
      const status = !i.ok ? 'FAIL' : i.optional && !i.present ? 'no  ' : 'ok  ';
      process.stdout.write(`${status}  ${i.name.padEnd(width)}  ${i.detail}\n`);
      if ((!i.ok || (i.optional && !i.present)) && i.fix)
        process.stdout.write(`      ${' '.repeat(width)}  fix: ${i.fix}\n`);
    }
    const failed = items.filter((i) => !i.ok).length;
    if (failed > 0) {
      process.stderr.write(
        `error: ${failed} requirement${failed > 1 ? 's are' : ' is'} missing; see the fixes above\n`,
      );
      this.exit(1);
    }
  }

  /** The chosen storage driver's own check, on the roots dir, leaving no directory behind. */
  private async storageItem(host: CheckItem[], trialDir: string): Promise<CheckItem> {
    const { rootsDir, storageType } = this.settings;
    const name = `storage ${storageType}`;
    try {
      const factory = await this.registry.storage(storageType);
      // The overlay driver mounts, which needs root of a user namespace: as anyone else its
      // check is the overlay trial above, which ran in one on the same filesystem.
      if (factory.type === 'overlay' && process.geteuid?.() !== 0) {
        const trial = host.find((i) => i.name === 'overlay (userxattr)');
        return trial?.ok
          ? { name, ok: true, detail: `usable on ${rootsDir} (overlay tried on ${trialDir})` }
          : { name, ok: false, detail: trial?.detail ?? 'overlay was not tried', fix: trial?.fix };
      }
      if (!factory.check) return { name, ok: true, detail: 'no check needed' };
      const { unpackLayer } = await import('@stacker/oci');
      const undo = await snapshotDirs(rootsDir);
      try {
        await factory.check({ rootsDir, log: this.logger, unpack: unpackLayer });
        return { name, ok: true, detail: `usable on ${rootsDir}` };
      } catch (e) {
        return { name, ok: false, detail: (e as Error).message };
      } finally {
        await undo();
      }
    } catch (e) {
      return { name, ok: false, detail: (e as Error).message };
    }
  }
}

/** `dir` or its closest ancestor that exists. */
function nearestExisting(dir: string): string {
  let d = dir;
  while (!existsSync(d) && dirname(d) !== d) d = dirname(d);
  return d;
}

/**
 * Remember what exists of `dir` (and above it) now; the returned function removes the
 * directories made since, as long as they are empty (a check cleans up its own files, but
 * creates the roots dir and the driver's dir in it as builds would).
 */
async function snapshotDirs(dir: string): Promise<() => Promise<void>> {
  const top = nearestExisting(dir);
  const before = top === dir ? new Set(await readdir(dir).catch(() => [])) : undefined;
  return async () => {
    if (before === undefined) {
      // everything from the first missing ancestor down is new
      let first = dir;
      while (dirname(first) !== top) first = dirname(first);
      await removeEmptyTree(first);
      return;
    }
    for (const entry of await readdir(dir).catch(() => [])) {
      if (!before.has(entry)) await removeEmptyTree(join(dir, entry));
    }
  };
}

/** Remove `dir` if it holds nothing but empty directories; leaves anything with a file in it. */
async function removeEmptyTree(dir: string): Promise<boolean> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return false;
  }
  let empty = true;
  for (const e of entries) {
    if (!e.isDirectory() || !(await removeEmptyTree(join(dir, e.name)))) empty = false;
  }
  if (!empty) return false;
  return rmdir(dir).then(
    () => true,
    () => false,
  );
}
