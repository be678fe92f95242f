import { inUserNamespace, needsReexec, reexecInUserNamespace } from '@stacker/runtime';

/**
 * Make sure the rest of the command runs inside a user + mount namespace (root of the
 * namespace = the caller, its subuid range mapped). Returns undefined when already inside;
 * otherwise re-executes this very command there and returns the exit code to exit with.
 */
export async function enterNamespaces(): Promise<number | undefined> {
  if (!needsReexec()) return undefined;
  return reexecInUserNamespace({ argv: process.argv });
}

export { inUserNamespace };
