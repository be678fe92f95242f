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
    `unshare was not found on PATH; install util-linux (e.g. \`sudo apt-get install util-linux\`), then ${CHECK}.`,
  );
}

export function badUsernsHelper(value: string): UserError {
  return new UserError(
    'runtime-bad-userns-helper',
    `STACKER_USERNS_HELPER=${value} is not known; set it to \`unshare\` or \`newuidmap\` (or unset it), then ${CHECK}.`,
  );
}

export function idmapHelperFailed(command: string, why: string): UserError {
  return new UserError(
    'runtime-idmap-failed',
    `\`${command}\` failed (${why}), so the user namespace has no id maps; ${CHECK}.`,
  );
}

export function namespaceNotEntered(unshare: string): UserError {
  return new UserError(
    'runtime-unshare-failed',
    `${unshare} could not create a user namespace (its error is above); ${CHECK}.`,
  );
}

export function runtimeMissing(runtime: string): UserError {
  return new UserError(
    'runtime-no-runc',
    `the OCI runtime \`${runtime}\` was not found; install runc (e.g. \`sudo apt-get install runc\`) or name another one with the STACKER_RUNTIME environment variable or the \`runtime\` key of the config file (~/.config/stacker/conf.yaml), then ${CHECK}.`,
  );
}

export function badBindDestination(dest: string): UserError {
  return new UserError(
    'runtime-bad-bind',
    `bind mount destination "${dest}" must be an absolute path inside the container.`,
  );
}
