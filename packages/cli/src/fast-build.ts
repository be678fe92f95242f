import { flush, handle } from '@oclif/core';
import Build from './commands/build.js';
import RecursiveBuild from './commands/recursive-build.js';
import type { FoundPlugin, PackageJson } from './fast-path.js';
import type { BundledPlugin } from './plugins.js';

/**
 * What the commands (and oclif's Command class) use of oclif's Config, for the fast path
 * (see fast-path.ts): the plugins found, the CLI's name and bin, its env var scope, and
 * hooks, of which there are none (the fast path is not taken when a plugin has some).
 */
export class FastConfig {
  readonly root: string;
  readonly pjson: PackageJson;
  readonly name: string;
  readonly version: string;
  readonly bin: string;
  readonly binAliases?: string[];
  readonly dirname: string;
  readonly topicSeparator: ' ' | ':';
  readonly flexibleTaxonomy = false;
  readonly isSingleCommandCLI = false;
  readonly userAgent: string;
  readonly theme = undefined;

  constructor(
    private readonly plugins: FoundPlugin[],
    readonly bundledPlugins?: Record<string, BundledPlugin>,
    /** import() from outside the bundle, for plugins that are not bundled (see fast-load.ts) */
    readonly importModule?: (url: string) => Promise<unknown>,
  ) {
    const root = plugins.find((p) => p.isRoot) ?? plugins[0];
    this.root = root.root;
    this.pjson = root.pjson;
    this.name = root.pjson.name ?? '';
    this.version = root.pjson.version ?? '0.0.0';
    this.bin = root.pjson.oclif?.bin ?? this.name;
    this.binAliases = root.pjson.oclif?.binAliases;
    this.dirname = root.pjson.oclif?.dirname ?? this.name;
    this.topicSeparator = root.pjson.oclif?.topicSeparator === ' ' ? ' ' : ':';
    const arch = process.arch === 'ia32' ? 'x86' : process.arch;
    this.userAgent = `${this.name}/${this.version} ${process.platform}-${arch} node-${process.version}`;
  }

  getPluginsList(): FoundPlugin[] {
    return this.plugins;
  }

  get commandIDs(): string[] {
    return ['build', 'recursive-build'];
  }

  findCommand(id: string): { id: string; strict: boolean; args: Record<string, unknown> } | undefined {
    const cmd = commandClass(id);
    return cmd && { id, strict: cmd.strict, args: cmd.args };
  }

  async runHook(): Promise<{ successes: never[]; failures: never[] }> {
    return { successes: [], failures: [] };
  }

  scopedEnvVarKeys(k: string): string[] {
    return [this.bin, ...(this.binAliases ?? [])]
      .filter(Boolean)
      .map((alias) => [alias.replaceAll('@', '').replaceAll(/[/-]/g, '_'), k].join('_').toUpperCase());
  }

  scopedEnvVarKey(k: string): string {
    return [this.bin, k]
      .map((p) => p.replaceAll('@', '').replaceAll(/[/-]/g, '_'))
      .join('_')
      .toUpperCase();
  }

  scopedEnvVar(k: string): string | undefined {
    const key = this.scopedEnvVarKeys(k).find((x) => process.env[x]);
    return key === undefined ? undefined : process.env[key];
  }

  scopedEnvVarTrue(k: string): boolean {
    const v = this.scopedEnvVar(k);
    return v === '1' || v === 'true';
  }
}

function commandClass(id: string): typeof Build | undefined {
  if (id === 'build') return Build;
  if (id === 'recursive-build') return RecursiveBuild;
  return undefined;
}

/**
 * Run `args` (`build …` or `recursive-build …`, already normalised) as oclif's execute()
 * would: the command's own error handling, then oclif's flush on success or its handle()
 * on an error (which exits with the command's exit code).
 */
export async function runFast(
  args: string[],
  plugins: FoundPlugin[],
  bundledPlugins?: Record<string, BundledPlugin>,
  importModule?: (url: string) => Promise<unknown>,
): Promise<void> {
  const [id, ...argv] = args;
  const Cmd = commandClass(id);
  if (!Cmd) throw new Error(`the fast path does not run ${id}`);
  try {
    // oclif sets the id on the class it loads
    Cmd.id = id;
    const config = new FastConfig(plugins, bundledPlugins, importModule);
    const cmd = new Cmd(argv, config as any);
    await (cmd as unknown as { _run(): Promise<unknown> })._run();
    await flush();
  } catch (e) {
    await handle(e as Error);
  }
}
