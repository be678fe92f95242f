#!/usr/bin/env node
// CommonJS (bin/package.json): nothing on the way to a build needs Node's ES module loader,
// which an ES module entry would set up on every start.
const { join } = require('node:path');

// what every start needs, in one file (src/launch.ts)
const launch = require('../dist/launch.cjs');

async function main() {
  const args = launch.normaliseArgv(process.argv.slice(2));
  if (launch.needsNamespace(args) && !process.env._STACKER_REEXEC) {
    // inside the namespace everyone is root: remember who built, for the image's author
    const { hostname, userInfo } = require('node:os');
    process.env._STACKER_AUTHOR ??= `${process.env.SUDO_USER || userInfo().username}@${hostname()}`;
    // inside, the uid is 0 and the passwd lookup would say /root: keep the caller's home
    // (the data dir of user plugins, the config file) when the environment has none
    process.env.HOME ||= userInfo().homedir;
    // Enter the user namespace first thing: only the re-executed child loads the CLI.
    try {
      process.exitCode = await launch.reexecInUserNamespace({ argv: process.argv });
    } catch (e) {
      process.stderr.write(`error: ${e.message}\n`);
      process.exitCode = 1;
    }
    return;
  }
  const root = join(__dirname, '..');
  // build and recursive-build skip oclif's Config when nothing needs it (src/fast-path.ts)
  const plugins = launch.FAST_COMMANDS.has(args[0]) ? launch.findFastPlugins(args, root) : undefined;
  if (plugins) {
    const { runFast, bundledPlugins } = launch.loadBundle(join(root, 'dist/fast.cjs')).exports;
    // a plugin that is not bundled is imported from here: the bundle runs in a vm.Script
    await runFast(args, plugins, bundledPlugins, (url) => import(url));
    return;
  }
  const { execute } = await import('@oclif/core');
  // the CLI's directory, not this file's: oclif would take bin/package.json for the CLI's
  await execute({ dir: root, args });
}

main();
