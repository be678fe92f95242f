import { Flags } from '@oclif/core';
import { UserError } from '@stacker/plugin-api';
import { StackerCommand } from '../base-command.js';
import { enterNamespaces } from '../namespaces.js';
import { formatOrder } from '../order.js';
import { ProgressView } from '../progress.js';
import { loadStackerFiles, stackerFileFlag, stackerFileFlags } from '../stackerfiles.js';
import { STACKER_VERSION } from '../version.js';

export default class Build extends StackerCommand {
  static override summary = 'builds a new OCI image from a stacker yaml file';
  static override description =
    'Builds every stanza of the stacker file (and of its config.prerequisites) in dependency order, as an ordinary user in a user namespace, and tags the results in the OCI layout.';
  static override examples = [
    '<%= config.bin %> build -f stacker.yaml',
    '<%= config.bin %> build --substitute VERSION=1.2 --oci-dir out',
    '<%= config.bin %> --debug build --order-only',
  ];

  static override flags = {
    ...stackerFileFlag,
    ...stackerFileFlags,
    'no-cache': Flags.boolean({ description: "don't use the previous build cache" }),
    'order-only': Flags.boolean({ description: 'show the build order without running the actual build' }),
    'layer-type': Flags.string({
      multiple: true,
      default: ['tar'],
      options: ['tar', 'squashfs'],
      description: 'output layer type; can be supplied multiple times',
    }),
    'require-hash': Flags.boolean({
      description: 'require all remote imports to have a hash provided in stackerfiles',
    }),
    'on-run-failure': Flags.string({
      description: 'command to run inside container if run fails (useful for inspection)',
    }),
    'shell-fail': Flags.boolean({
      description: 'exec /bin/sh inside the container if run fails (alias for --on-run-failure=/bin/sh)',
    }),
    'annotations-namespace': Flags.string({
      default: 'io.stackeroci',
      description: 'OCI annotations namespace in the image manifest',
    }),
    jobs: Flags.integer({
      char: 'j',
      min: 1,
      description: 'stanzas built at the same time [default: number of cores]',
    }),
    'no-squashfs-verity': Flags.boolean({ hidden: true }),
  };

  /** The stacker files to build (recursive-build finds them instead). */
  protected async stackerFilePaths(flags: Record<string, unknown>): Promise<string[]> {
    return [flags['stacker-file'] as string];
  }

  async run(): Promise<void> {
    const { flags } = await this.parse(this.constructor as typeof Build);
    // the live view needs a terminal on stderr, where it draws, and is off with --quiet/--json
    const live =
      !flags['order-only'] &&
      !flags.quiet &&
      !flags.json &&
      !flags['log-file'] &&
      Boolean(process.stderr.isTTY) &&
      (flags.progress ?? Boolean(process.stdout.isTTY));
    const view = live ? new ProgressView() : undefined;
    this.setUp(flags, view);
    if (flags['on-run-failure'] && flags['shell-fail']) {
      throw new UserError('flags', '--shell-fail and --on-run-failure cannot be used together; pick one');
    }
    const files = await loadStackerFiles(await this.stackerFilePaths(flags), flags, this.settings);
    if (flags['order-only']) {
      const lines = formatOrder(files, (m) => this.logger.info(m));
      process.stdout.write(`${lines.join('\n')}\n`);
      return;
    }
    // everything after this point happens inside the user namespace
    const code = await enterNamespaces();
    if (code !== undefined) this.exit(code);

    const ac = new AbortController();
    let stoppedBy: NodeJS.Signals | undefined;
    const onSignal = (sig: NodeJS.Signals) => {
      this.logger.info(`received ${sig}, stopping the build`);
      stoppedBy = sig;
      ac.abort();
    };
    // \`on\`, not \`once\`: while a listener of ours is registered, execa's signal-exit hook
    // leaves the signal to us; with none it re-raises it and the process dies before the
    // container is killed and the mounts released.
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    view?.start();
    try {
      // the engine is loaded only for a real build (--order-only stays quick), and not the
      // rest of @stacker/core (convert, clean, ...)
      const { Builder } = await import('@stacker/core/engine');
      await new Builder({
        files,
        settings: this.settings,
        registry: this.registry,
        log: this.logger,
        requireHash: flags['require-hash'],
        onRunFailure: flags['shell-fail'] ? '/bin/sh' : flags['on-run-failure'],
        annotationsNamespace: flags['annotations-namespace'],
        stackerVersion: STACKER_VERSION,
        jobs: flags.jobs ?? this.settings.jobs,
        noCache: flags['no-cache'],
        author: process.env._STACKER_AUTHOR,
        signal: ac.signal,
        onEvent: view ? (e) => view.event(e) : undefined,
        onProgress: view ? (p) => view.transfer({ ...p, direction: 'pull' }) : undefined,
        layerTypes: [...new Set(flags['layer-type'])],
      }).run();
    } catch (e) {
      // killed by a signal: containers are gone and mounts released; exit as the shell expects
      if (stoppedBy) this.exit(stoppedBy === 'SIGINT' ? 130 : 143);
      throw e;
    } finally {
      view?.stop();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  }
}
