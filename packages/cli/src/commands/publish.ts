import { Flags } from '@oclif/core';
import { OciLayout } from '@stacker/oci';
import { UserError } from '@stacker/plugin-api';
import { publish } from '@stacker/registry';
import { StackerCommand } from '../base-command.js';
import { ProgressView, wantLiveView } from '../progress.js';
import { loadStackerFiles, stackerFileFlag, stackerFileFlags } from '../stackerfiles.js';

export default class Publish extends StackerCommand {
  static override summary = 'publishes OCI images previously built from one or more stacker yaml files';
  static override description =
    'Sends every stanza of the stacker file that is not build_only, as built in the OCI layout, to URL/NAME:TAG (docker://) or URL:NAME_TAG (oci:DIR) for every --tag. Only the blobs the destination lacks are sent.';
  static override examples = [
    '<%= config.bin %> publish --url docker://registry.example:5000/project --tag v1',
    '<%= config.bin %> publish --url oci:out --tag latest --image app',
    '<%= config.bin %> publish --url docker://localhost:5000/p --tag v1 --skip-tls --show-only',
  ];

  static override flags = {
    ...stackerFileFlag,
    ...stackerFileFlags,
    url: Flags.string({
      required: true,
      description: 'url where to publish the OCI images (docker://HOST[:PORT]/PATH or oci:DIR)',
    }),
    tag: Flags.string({
      multiple: true,
      description: 'tag to be used when publishing; can be supplied multiple times',
    }),
    username: Flags.string({ description: 'username for the registry where the OCI images are published' }),
    password: Flags.string({ description: 'password for the registry where the OCI images are published' }),
    'skip-tls': Flags.boolean({ description: 'skip tls verify on upstream registry (talk plain http)' }),
    image: Flags.string({
      multiple: true,
      description: 'publish only this layer; can be supplied multiple times',
    }),
    force: Flags.boolean({
      description: 'publish the images present in the OCI layout, skipping layers that were never built',
    }),
    'show-only': Flags.boolean({
      description: 'show the images to be published without actually publishing them',
    }),
    'layer-type': Flags.string({
      multiple: true,
      default: ['tar'],
      options: ['tar', 'squashfs'],
      description: 'layer type to publish; can be supplied multiple times',
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Publish);
    // on a terminal every upload gets a byte bar; otherwise one log line per blob says its size
    const view = !flags['show-only'] && wantLiveView(flags) ? new ProgressView() : undefined;
    this.setUp(flags, view);
    if (flags['layer-type'].includes('squashfs')) {
      throw new UserError(
        'layer-type',
        'squashfs layers are not supported by this stacker yet; use --layer-type tar',
      );
    }
    const files = await loadStackerFiles([flags['stacker-file']], flags, this.settings);
    const source = await OciLayout.open(this.settings.ociDir).catch((e: Error) => {
      throw new UserError(
        'publish',
        `nothing to publish: ${e.message.replace(/\.$/, '')}; run stacker build first`,
      );
    });
    const ac = new AbortController();
    const onSignal = () => ac.abort();
    // \`on\`, not \`once\`: while a listener of ours is registered, execa's signal-exit hook
    // leaves the signal to us; with none it re-raises it and the process dies mid-upload.
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    view?.start();
    try {
      await publish({
        files: files.map((f) => ({
          path: f.path,
          layers: f.layers.map((l) => ({ name: l.name, buildOnly: l.buildOnly })),
        })),
        source,
        url: flags.url,
        tags: flags.tag ?? [],
        images: flags.image,
        force: flags.force,
        showOnly: flags['show-only'],
        username: flags.username,
        password: flags.password,
        skipTls: flags['skip-tls'],
        openLayout: (dir) => OciLayout.init(dir),
        log: this.logger,
        signal: ac.signal,
        onProgress: view
          ? (p) => view.transfer({ ...p, label: `${p.repository} ${p.digest.slice(0, 19)}` })
          : undefined,
      });
    } finally {
      view?.stop();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}
