import { checkHost } from '@stacker/runtime';
import { StackerCommand } from '../base-command.js';

export default class Check extends StackerCommand {
  static override summary = 'checks that this machine can run stacker builds';
  static override description =
    'Tries each thing an unprivileged build needs (subuid/subgid range, setuid newuidmap/newgidmap, unshare, runc, overlay with userxattr, whiteout creation, the chosen storage driver) and prints ok or FAIL with the fix. Exits 1 when something fails.';
  static override examples = [
    '<%= config.bin %> check',
    '<%= config.bin %> --roots-dir /var/lib/stacker/roots check',
  ];

  async run(): Promise<void> {
    const { flags } = await this.parse(Check);
    this.setUp(flags);
    const items = await checkHost({ runtime: this.settings.runtime });
    // the storage driver's own check, when it has one
    try {
      const factory = await this.registry.storage(this.settings.storageType);
      if (factory.check) {
        const { unpackLayer } = await import('@stacker/oci');
        const { mkdir } = await import('node:fs/promises');
        await mkdir(this.settings.rootsDir, { recursive: true }).catch(() => {});
        try {
          await factory.check({ rootsDir: this.settings.rootsDir, log: this.logger, unpack: unpackLayer });
          items.push({
            name: `storage ${factory.type}`,
            ok: true,
            detail: `usable on ${this.settings.rootsDir}`,
          });
        } catch (e) {
          items.push({ name: `storage ${factory.type}`, ok: false, detail: (e as Error).message });
        }
      } else {
        items.push({ name: `storage ${factory.type}`, ok: true, detail: 'no check needed' });
      }
    } catch (e) {
      items.push({ name: `storage ${this.settings.storageType}`, ok: false, detail: (e as Error).message });
    }
    const width = Math.max(...items.map((i) => i.name.length));
    for (const i of items) {
      process.stdout.write(`${i.ok ? 'ok  ' : 'FAIL'}  ${i.name.padEnd(width)}  ${i.detail}\n`);
      if (!i.ok && i.fix) process.stdout.write(`      ${' '.repeat(width)}  fix: ${i.fix}\n`);
    }
    const failed = items.filter((i) => !i.ok).length;
    if (failed > 0) {
      process.stderr.write(
        `error: ${failed} requirement${failed > 1 ? 's are' : ' is'} missing; see the fixes above\n`,
      );
      this.exit(1);
    }
  }
}
