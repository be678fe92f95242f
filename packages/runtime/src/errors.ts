import { UserError } from '@stacker/plugin-api/errors';

/** Every error a user can fix that this package raises, made in one place. */

const CHECK = 'run `stacker check` for details';

export function noSubidRange(user: string, file: '/etc/subuid' | '/etc/subgid'): UserError {
  return new UserError(
    file === '/etc/subuid' ? 'runtime-no-subuid' : 'runtime-no-subgid',
    `user ${user} has no range in ${file}; run \`sudo stacker setup\` (or add a line "${user}:100000:65536" to ${file}), then ${CHECK}.`,
  );
}

export function idmapHelperMissing(tool: string): UserError {
  return new UserError(
    'runtime-no-newuidmap',
    `${tool} was not found; install the \`uidmap\` package (e.g. \`sudo apt-get install uidmap\`), then ${CHECK}.`,
  );
}

export function idmapHelperNotPrivileged(tool: string, path: string): UserError {
  return new UserError(
    'runtime-newuidmap-not-setuid',
    `${path} is neither setuid root nor has file capabilities, so ${tool} cannot map your subordinate ids; reinstall the \`uidmap\` package or run \`sudo chmod u+s ${path}\`, then ${CHECK}.`,
  );
}

export function unshareMissing(): UserError {
  return new UserError(
    'runtime-no-unshare',
    `unshare (util-linux 2.38 or newer) was not found on PATH; install util-linux, then ${CHECK}.`,
  );
}

export function runtimeMissing(runtime: string): UserError {
  return new UserError(
    'runtime-no-runc',
    `the OCI runtime \`${runtime}\` was not found; install runc (e.g. \`sudo apt-get install runc\`) or pass another one with --runtime, then ${CHECK}.`,
  );
}

export function badBindDestination(dest: string): UserError {
  return new UserError(
    'runtime-bad-bind',
    `bind mount destination "${dest}" must be an absolute path inside the container.`,
  );
}
