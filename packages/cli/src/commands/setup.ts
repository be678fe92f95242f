import { Flags } from '@oclif/core';
import { StackerCommand } from '../base-command.js';
import { resolveSetupUser, setupHost, setupNeedsRoot } from '../setup-host.js';

export default class Setup extends StackerCommand {
  static override aliases = ['unpriv-setup'];
  static override summary = 'sets this machine up for unprivileged builds (run once, as root)';
  static override description =
    "Gives the user a subordinate uid/gid range in /etc/subuid and /etc/subgid if they have none, creates the stacker and roots dirs and makes them the user's, and with --btrfs SIZE makes a sparse loop file <stacker-dir>/btrfs.loop with a btrfs on it, mounted on the roots dir with user_subvol_rm_allowed. The user comes from sudo (SUDO_USER, SUDO_UID, SUDO_GID) unless given. Safe to run again: it changes only what is missing and prints one line per change.";
  static override examples = [
    'sudo <%= config.bin %> setup',
    'sudo <%= config.bin %> --roots-dir /var/lib/stacker/roots setup --btrfs 20G',
    '<%= config.bin %> setup --username alice --uid 1000 --gid 1000',
  ];

  static override flags = {
    username: Flags.string({ description: 'the user to set up [default: $SUDO_USER]' }),
    uid: Flags.integer({ min: 0, description: "the user's uid [default: $SUDO_UID]" }),
    gid: Flags.integer({ min: 0, description: "the user's gid [default: $SUDO_GID]" }),
    btrfs: Flags.string({
      description:
        'make a loop-mounted btrfs of this size (e.g. 10G) on the roots dir, for --storage-type=btrfs',
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Setup);
    if (process.geteuid?.() !== 0) throw setupNeedsRoot();
    this.setUp(flags);
    const user = resolveSetupUser(flags);
    const changes = await setupHost({
      ...user,
      stackerDir: this.settings.stackerDir,
      rootsDir: this.settings.rootsDir,
      btrfsSize: flags.btrfs,
    });
    process.stdout.write(changes.length > 0 ? `${changes.join('\n')}\n` : 'nothing to do\n');
  }
}
