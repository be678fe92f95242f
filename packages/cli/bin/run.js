#!/usr/bin/env node
import { normaliseArgv } from '../dist/argv.js';
import { needsNamespace } from '../dist/early.js';

const args = normaliseArgv(process.argv.slice(2));
if (needsNamespace(args) && !process.env._STACKER_REEXEC) {
  // inside the namespace everyone is root: remember who built, for the image's author
  const { hostname, userInfo } = await import('node:os');
  process.env._STACKER_AUTHOR ??= `${process.env.SUDO_USER || userInfo().username}@${hostname()}`;
  // Enter the user namespace first thing: only the re-executed child loads the CLI.
  const { reexecInUserNamespace } = await import('@stacker/runtime/userns');
  try {
    process.exitCode = await reexecInUserNamespace({ argv: process.argv });
  } catch (e) {
    process.stderr.write(`error: ${e.message}\n`);
    process.exitCode = 1;
  }
} else {
  const { execute } = await import('@oclif/core');
  await execute({ dir: import.meta.url, args });
}
