import { UserError } from '@stacker/plugin-api';

/** Every error a user can fix that the overlay driver raises, made in one place. */

export function overlayUnavailable(dir: string, detail: string): UserError {
  return new UserError(
    'overlay-unavailable',
    `overlayfs with userxattr could not be mounted in ${dir} (${detail}); it needs Linux 5.11 or newer, stacker's user namespace, and a roots dir on a filesystem with user xattrs (ext4, xfs, btrfs, tmpfs): run \`stacker check\`, or use --storage-type=btrfs.`,
  );
}

export function notInNamespace(): UserError {
  return new UserError(
    'overlay-needs-namespace',
    'the overlay storage driver must run as root of a user namespace (stacker re-executes itself into one); run stacker normally rather than calling the driver directly, or run `stacker check`.',
  );
}

export function chainTooLong(name: string, depth: number, max: number): UserError {
  return new UserError(
    'overlay-chain-too-long',
    `snapshot ${name} sits on ${depth} layers but overlay can stack at most ${max}; squash the base image into fewer layers or use --storage-type=btrfs.`,
  );
}

export function snapshotInUse(name: string, child: string): UserError {
  return new UserError(
    'overlay-snapshot-in-use',
    `snapshot ${name} cannot be removed: ${child} is built on it; remove ${child} first (or run \`stacker clean\`).`,
  );
}

export function unsupportedOverlayFeature(path: string, xattr: string): UserError {
  return new UserError(
    'overlay-unsupported-xattr',
    `${path} carries ${xattr}, an overlay feature (redirect_dir/metacopy) stacker never enables; the snapshot was changed outside stacker: run \`stacker clean\` and build again.`,
  );
}
