import { UserError } from '@stacker/plugin-api';

/** Every error a user can fix that the btrfs driver raises, made in one place. */

const SETUP_HINT =
  'run `sudo stacker setup --btrfs 10G` (it makes a loop-mounted btrfs on the roots dir), or mount a btrfs there with `-o user_subvol_rm_allowed`';

export function notBtrfs(rootsDir: string, fsType: string): UserError {
  return new UserError(
    'btrfs-not-btrfs',
    `the roots dir ${rootsDir} is on ${fsType || 'an unknown filesystem'}, not btrfs; ${SETUP_HINT}, or use --storage-type=overlay.`,
  );
}

export function btrfsToolMissing(): UserError {
  return new UserError(
    'btrfs-progs-missing',
    'the `btrfs` command was not found; install btrfs-progs (e.g. `sudo apt-get install btrfs-progs`).',
  );
}

export function subvolumesUnusable(rootsDir: string, detail: string): UserError {
  return new UserError(
    'btrfs-subvolumes-unusable',
    `btrfs subvolumes cannot be created and deleted in ${rootsDir} (${detail}); the roots dir must belong to you and the filesystem must be mounted with user_subvol_rm_allowed: ${SETUP_HINT}.`,
  );
}

export function snapshotInUse(name: string, child: string): UserError {
  return new UserError(
    'btrfs-snapshot-in-use',
    `snapshot ${name} cannot be removed: the active snapshot ${child} is being built on it; remove ${child} first (or run \`stacker clean\`).`,
  );
}

export function overlayOnBtrfsUnusable(rootsDir: string, detail: string): UserError {
  return new UserError(
    'btrfs-overlay-unusable',
    `an overlay mount (userxattr) on btrfs subvolumes in ${rootsDir} does not work (${detail}); the btrfs driver tracks each build's changes with one, so it needs Linux 5.11 or newer and to run in stacker's user namespace; or use --storage-type=overlay.`,
  );
}
