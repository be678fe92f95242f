import { readFileSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * The fast way into `build` and `recursive-build` (bin/run.js): the bundled commands run
 * without oclif's Config, which loads every plugin's manifest and most of @oclif/core
 * first (a third of a cached build). It is taken only when oclif would do nothing but run
 * the command: these commands, no help or version flag, no oclif debugging, no plugin
 * hook that runs around commands, and no user or linked plugin (`stacker plugins
 * install/link`). Otherwise bin/run.js goes through oclif as before.
 *
 * This module is small on purpose: it decides before the large bundle is loaded.
 */
export const FAST_COMMANDS: ReadonlySet<string> = new Set(['build', 'recursive-build']);

/** The hooks oclif runs around a command (`preparse` only from the root plugin). */
const COMMAND_HOOKS = ['init', 'prerun', 'postrun', 'finally', 'preparse'];

export interface PackageJson {
  name?: string;
  version?: string;
  dependencies?: Record<string, string>;
  oclif?: {
    bin?: string;
    binAliases?: string[];
    dirname?: string;
    plugins?: unknown[];
    hooks?: Record<string, unknown>;
    topicSeparator?: string;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

/** A plugin as oclif's Config lists it, with what the plugin registry reads of it. */
export interface FoundPlugin {
  name: string;
  type: 'core';
  root: string;
  pjson: PackageJson;
  isRoot: boolean;
}

function readJson(path: string): PackageJson | undefined {
  // no exception for a file that is not there: plugin lookups try many
  if (!statSync(path, { throwIfNoEntry: false })?.isFile()) return undefined;
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return undefined;
  }
}

function hasCommandHooks(pjson: PackageJson): boolean {
  const hooks = pjson.oclif?.hooks;
  return hooks !== undefined && hooks !== null && COMMAND_HOOKS.some((h) => h in hooks);
}

/** oclif's data dir (`STACKER_DATA_DIR`, else `$XDG_DATA_HOME/stacker` or `~/.local/share/stacker`). */
export function oclifDataDir(pjson: PackageJson, env: NodeJS.ProcessEnv = process.env): string {
  const bin = pjson.oclif?.bin ?? pjson.name ?? '';
  for (const alias of [bin, ...(pjson.oclif?.binAliases ?? [])].filter(Boolean)) {
    const key = [alias.replaceAll('@', '').replaceAll(/[/-]/g, '_'), 'DATA_DIR'].join('_').toUpperCase();
    if (env[key]) return env[key] as string;
  }
  const home = env.HOME || homedir() || tmpdir();
  return join(env.XDG_DATA_HOME || join(home, '.local/share'), pjson.oclif?.dirname ?? pjson.name ?? '');
}

/**
 * Does the data dir list user or linked plugins (or can it not be read: oclif would warn)?
 * oclif loads the entries of type `user` and `link` of its `oclif.plugins`.
 */
function hasUserPlugins(dataDir: string): boolean {
  let text: string;
  try {
    text = readFileSync(join(dataDir, 'package.json'), 'utf8');
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ENOENT';
  }
  let pjson: PackageJson;
  try {
    pjson = JSON.parse(text);
  } catch {
    return true;
  }
  const plugins = pjson?.oclif?.plugins;
  if (plugins === undefined) return false;
  if (!Array.isArray(plugins)) return true;
  return plugins.some((p) => {
    const type = (p as { type?: unknown } | null)?.type;
    return type === 'user' || type === 'link';
  });
}

/** Where oclif finds an installed plugin: `node_modules/NAME` here or in a parent directory. */
function findPluginRoot(
  name: string,
  from: string,
  names: Map<string, string | undefined>,
): string | undefined {
  let dir = from;
  for (;;) {
    const candidate = join(dir, 'node_modules', name);
    if (readJson(join(candidate, 'package.json'))) return candidate;
    if (!names.has(dir)) names.set(dir, readJson(join(dir, 'package.json'))?.name);
    if (names.get(dir) === name) return dir;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/**
 * The plugins oclif would load for `args` (root first, then the core plugins of the CLI's
 * package.json), or undefined when the command has to go through oclif.
 */
export function findFastPlugins(
  args: readonly string[],
  root: string,
  env: NodeJS.ProcessEnv = process.env,
): FoundPlugin[] | undefined {
  if (!FAST_COMMANDS.has(args[0] ?? '')) return undefined;
  for (const a of args) {
    if (a === '--') break;
    if (a === '--help' || a === '-h' || a === '--version') return undefined;
  }
  // oclif's own debug output
  if (env.DEBUG || env.STACKER_DEBUG) return undefined;
  const pjson = readJson(join(root, 'package.json'));
  if (!pjson?.name || !pjson.oclif || hasCommandHooks(pjson)) return undefined;
  if (hasUserPlugins(oclifDataDir(pjson, env))) return undefined;
  const found: FoundPlugin[] = [{ name: pjson.name, type: 'core', root, pjson, isRoot: true }];
  const patterns = pjson.oclif.plugins ?? [];
  // names only: a glob among the patterns leaves the matching to oclif (minimatch)
  if (!patterns.every((p) => typeof p === 'string' && !/[*?[\]{}()!]/.test(p))) return undefined;
  // the name in each directory's package.json, read once for all plugins
  const names = new Map<string, string | undefined>([[root, pjson.name]]);
  for (const name of Object.keys(pjson.dependencies ?? {})) {
    if (!patterns.includes(name) || found.some((p) => p.name === name)) continue;
    const pluginRoot = findPluginRoot(name, root, names);
    const pluginJson = pluginRoot ? readJson(join(pluginRoot, 'package.json')) : undefined;
    if (!pluginRoot || !pluginJson?.name) return undefined;
    // a plugin of plugins, or one with hooks: oclif's business
    if (hasCommandHooks(pluginJson) || pluginJson.oclif?.plugins) return undefined;
    pluginJson.oclif ??= {};
    found.push({ name: pluginJson.name, type: 'core', root: pluginRoot, pjson: pluginJson, isRoot: false });
  }
  return found;
}
