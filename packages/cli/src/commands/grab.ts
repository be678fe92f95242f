import { Args } from '@oclif/core';
import { StackerCommand } from '../base-command.js';
import { enterNamespaces } from '../namespaces.js';

export default class Grab extends StackerCommand {
  static override summary = "grabs a file from the layer's filesystem";
  static override description =
    'Copies PATH (a file or a directory, recursively) out of the built image TAG into the current directory, under its base name. The copy belongs to you; modes and times are kept. Nothing else changes: no tag, no cache entry, no change to the image.';
  static override examples = [
    '<%= config.bin %> grab app:/etc/os-release',
    '<%= config.bin %> grab builder:/usr/local/bin',
  ];
  static override args = {
    'tag:path': Args.string({
      ignoreStdin: true,
      required: true,
      description: 'TAG is a tag in the OCI layout; PATH the path to extract (relative to /) in its rootfs',
    }),
  };

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Grab);
    this.setUp(flags);
    const core = await import('@stacker/core');
    const { tag, path } = core.parseGrabArgument(args['tag:path']);
    const code = await enterNamespaces();
    if (code !== undefined) this.exit(code);
    const ws = await core.Workspace.open(this.settings, this.registry, this.logger);
    try {
      const target = await core.grab(ws, tag, path, process.cwd());
      this.logger.info(`grabbed ${tag}:${path} into ${target}`);
    } finally {
      ws.close();
    }
  }
}
