import { existsSync } from 'node:fs';
import { Args, Flags } from '@oclif/core';
import { UserError } from '@stacker/plugin-api';
import { StackerCommand } from '../base-command.js';
import { enterNamespaces } from '../namespaces.js';
import { loadStackerFiles, stackerFileFlag, stackerFileFlags } from '../stackerfiles.js';

export default class Chroot extends StackerCommand {
  static override summary = 'run a command in a chroot';
  static override description =
    "Runs CMD (default /bin/sh, interactive when stdin is a terminal) in a throwaway writable copy of the built image TAG, with the stanza's binds, environment and staged imports when the stacker file (-f) defines TAG. Nothing the command changes reaches the image; the command's exit code is stacker's.";
  static override aliases = ['exec'];
  static override examples = [
    '<%= config.bin %> chroot',
    '<%= config.bin %> chroot app',
    '<%= config.bin %> exec app cat /etc/os-release',
    '<%= config.bin %> chroot -f images/stacker.yaml app /bin/sh -c "ls /stacker/imports"',
  ];
  static override args = {
    tag: Args.string({
      ignoreStdin: true,
      description: 'the built tag to chroot to; the first of the stacker file when none is given',
    }),
    cmd: Args.string({
      ignoreStdin: true,
      description: 'the command to run, with its arguments (default /bin/sh); needs TAG',
    }),
  };
  static override flags = {
    ...stackerFileFlag,
    // one value per flag: TAG and CMD follow them
    substitute: Flags.string({ ...stackerFileFlags.substitute, multiple: true, multipleNonGreedy: true }),
    'substitute-file': Flags.string({
      ...stackerFileFlags['substitute-file'],
      multiple: true,
      multipleNonGreedy: true,
    }),
  };

  async run(): Promise<void> {
    // everything from CMD on is the command's, flags included (`exec app sh -c 'ls'`)
    const argv = [...this.argv];
    const at = commandStart(argv, { ...StackerCommand.baseFlags, ...Chroot.flags });
    const { args, flags } = await this.parse(Chroot, at < 0 ? argv : argv.slice(0, at + 1));
    this.setUp(flags);
    const cmd = at < 0 ? ['/bin/sh'] : argv.slice(at);
    let tag = args.tag;
    let layer: import('@stacker/stackerfile').Layer | undefined;
    let fileDir: string | undefined;
    if (existsSync(flags['stacker-file'])) {
      const [file] = (await loadStackerFiles([flags['stacker-file']], { ...flags }, this.settings)).slice(-1);
      tag ??= file.layers[0]?.name;
      layer = file.layers.find((l) => l.name === tag);
      fileDir = file.dir;
      if (!layer) throw new UserError('no-layer', `no layer ${tag} in stackerfile ${file.path}`);
    } else {
      if (tag === undefined) {
        throw new UserError(
          'no-tag',
          `no tag given and no stacker file ${flags['stacker-file']} to take the first one from`,
        );
      }
      this.logger.info(`couldn't find stacker file, chrooting to ${tag} as best effort`);
    }
    const code = await enterNamespaces();
    if (code !== undefined) this.exit(code);
    const core = await import('@stacker/core');
    const ws = await core.Workspace.open(this.settings, this.registry, this.logger);
    let exit: number;
    // the command owns the terminal: Ctrl-C is for it, not for us
    const ignore = () => {};
    process.on('SIGINT', ignore);
    try {
      this.logger.info('This chroot is temporary, any changes will be destroyed when it exits.');
      exit = await core.chroot(ws, {
        tag: tag as string,
        cmd,
        layer,
        fileDir,
        stackerDir: this.settings.stackerDir,
        runtime: this.settings.runtime,
      });
    } finally {
      process.off('SIGINT', ignore);
      ws.close();
    }
    if (exit !== 0) this.exit(exit);
  }
}

/** Index in `argv` of the second positional argument (CMD), or -1. */
export function commandStart(argv: string[], flags: Record<string, { type: string; char?: string }>): number {
  const valued = new Set<string>();
  for (const [name, f] of Object.entries(flags)) {
    if (f.type !== 'option') continue;
    valued.add(`--${name}`);
    if (f.char) valued.add(`-${f.char}`);
  }
  let positional = 0;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') return i + 1 < argv.length && positional >= 1 ? i + 1 : -1;
    if (a.startsWith('-') && a !== '-') {
      if (valued.has(a)) i++;
      continue;
    }
    positional++;
    if (positional === 2) return i;
  }
  return -1;
}
