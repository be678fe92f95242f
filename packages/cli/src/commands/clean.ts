import { Flags } from '@oclif/core';
import { StackerCommand } from '../base-command.js';
import { enterNamespaces } from '../namespaces.js';

export default class Clean extends StackerCommand {
  static override summary = 'cleans up after a `stacker build`';
  static override description =
    'Unmounts what stacker mounted below the roots dir, then deletes the roots dir (btrfs subvolumes too), the OCI layout and the stacker dir (cache, imports). Files a build left read-only or owned by your subordinate ids are removed from inside the user namespace.';
  static override examples = [
    '<%= config.bin %> clean',
    '<%= config.bin %> --roots-dir /var/lib/stacker/roots --oci-dir out clean',
  ];
  static override flags = {
    all: Flags.boolean({ description: 'no-op; kept for compatibility with older stacker' }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Clean);
    this.setUp(flags);
    const code = await enterNamespaces();
    if (code !== undefined) this.exit(code);
    const { cleanWorkspace } = await import('@stacker/core');
    await cleanWorkspace({ settings: this.settings, registry: this.registry, log: this.logger });
  }
}
