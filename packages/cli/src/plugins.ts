import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join, normalize } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Config } from '@oclif/core';
import type { PluginRegistry } from '@stacker/core';
import {
  type BaseImage,
  baseImageShape,
  isUserError,
  type Logger,
  pluginDeclaration,
  pluginModuleShape,
  type Source,
  type SourceContext,
  type StorageDriver,
  type StorageDriverFactory,
  UserError,
} from '@stacker/plugin-api';

interface Provider {
  plugin: string;
  /** oclif's plugin type: core, user or link. */
  kind: string;
  root: string;
  module: string;
}

/** Plugins that are known to provide a type but are not installed by default. */
const WELL_KNOWN: Record<string, string> = {
  docker: '@stacker/source-docker',
  debian: '@stacker/source-debian',
  btrfs: '@stacker/storage-btrfs',
};

type Loaded = { sources: Source[]; storage: StorageDriverFactory[] };

/**
 * A core plugin's module as bundled into the CLI (dist/fast.cjs, see scripts/bundle.mjs),
 * with the files of the plugin that went into it: it stands in for the plugin's own files
 * only while they are byte for byte what was bundled.
 */
export interface BundledPlugin {
  load(): Promise<unknown>;
  /** Its module, relative to the plugin's root (what `oclif.stacker.module` must name). */
  module: string;
  /** sha256 of each file of the plugin in the bundle, by path relative to its root. */
  files: Record<string, string>;
}

/** Are the plugin's files (under `root`) the ones bundled, and is `module` the bundled one? */
export function bundledMatches(b: BundledPlugin, root: string, module: string): boolean {
  if (normalize(module) !== normalize(b.module)) return false;
  const files = Object.entries(b.files);
  if (files.length === 0) return false;
  try {
    return files.every(
      ([rel, sha]) =>
        createHash('sha256')
          .update(readFileSync(join(root, rel)))
          .digest('hex') === sha,
    );
  } catch {
    return false;
  }
}

/**
 * Finds sources and storage drivers among oclif's plugins (core ones listed in the cli's
 * package.json, user ones from `stacker plugins install`) by their package.json
 * declaration alone, and imports a plugin's module only when a stackerfile uses its type.
 * Everything a plugin exports is checked by shape: each plugin has its own copies of our
 * packages, so instanceof means nothing across them. Whatever a plugin throws reaches the
 * user as one sentence naming the plugin.
 */
export class OclifPluginRegistry implements PluginRegistry {
  private sources = new Map<string, Provider[]>();
  private storages = new Map<string, Provider[]>();
  private modules = new Map<string, Promise<Loaded>>();

  private bundled: Record<string, BundledPlugin>;
  private importModule: (url: string) => Promise<unknown>;

  constructor(
    config: Pick<Config, 'getPluginsList'>,
    private log?: Logger,
    opts: {
      /** Core plugins bundled into the CLI, by package name (the fast path passes them). */
      bundled?: Record<string, BundledPlugin>;
      /** How a plugin's module is imported (the fast path's bundle has no import() of its own). */
      importModule?: (url: string) => Promise<unknown>;
    } = {},
  ) {
    this.bundled = opts.bundled ?? {};
    this.importModule = opts.importModule ?? ((url) => import(url));
    for (const plugin of config.getPluginsList()) {
      const raw = (plugin.pjson as any)?.oclif?.stacker;
      if (raw === undefined) continue;
      const decl = pluginDeclaration.safeParse(raw);
      if (!decl.success) {
        const i = decl.error.issues[0];
        this.log?.warn(
          `plugin ${plugin.name} has an invalid "oclif.stacker" section in its package.json (${[
            'oclif.stacker',
            ...i.path.map(String),
          ].join('.')}: ${i.message}); ignoring it`,
        );
        continue;
      }
      const provider = {
        plugin: plugin.name,
        kind: String(plugin.type ?? 'core'),
        root: plugin.root,
        module: decl.data.module,
      };
      claim(this.sources, decl.data.sources, provider);
      claim(this.storages, decl.data.storage, provider);
    }
  }

  sourceTypes(): string[] {
    return [...this.sources.keys()].sort();
  }

  storageTypes(): string[] {
    return [...this.storages.keys()].sort();
  }

  /** The plugin that provides a type, if exactly one does. */
  providerOf(kind: 'source' | 'storage', type: string): string | undefined {
    const ps = (kind === 'source' ? this.sources : this.storages).get(type);
    return ps?.length === 1 ? ps[0].plugin : undefined;
  }

  async source(type: string): Promise<Source> {
    const p = this.provider(this.sources, 'source type', type);
    const mod = await this.load(p);
    const s = mod.sources.find((x) => x.type === type);
    if (!s) {
      throw new UserError(
        'plugin-contract',
        `plugin ${p.plugin} declares the source type "${type}" but its module does not export it`,
      );
    }
    return guardSource(s, p.plugin);
  }

  async storage(type: string): Promise<StorageDriverFactory> {
    const p = this.provider(this.storages, 'storage type', type);
    const mod = await this.load(p);
    const s = mod.storage.find((x) => x.type === type);
    if (!s) {
      throw new UserError(
        'plugin-contract',
        `plugin ${p.plugin} declares the storage type "${type}" but its module does not export it`,
      );
    }
    return guardStorage(s, p.plugin);
  }

  private provider(map: Map<string, Provider[]>, kind: string, type: string): Provider {
    const ps = map.get(type);
    if (!ps || ps.length === 0) {
      const known = [...map.keys()].sort();
      const pkg = WELL_KNOWN[type];
      // these plugins live in stacker's source tree (plugins/<dir>); they install from npm
      // where they are published, and from a packed tarball anywhere
      const hint = pkg
        ? `; the plugin ${pkg} provides it (stacker plugins install ${pkg}, or from a stacker checkout: npm pack ./plugins/${pkg.replace(/^@stacker\//, '')}, then stacker plugins install file:<the .tgz it wrote>)`
        : '';
      throw new UserError(
        'unknown-type',
        `unknown ${kind} "${type}": known ${kind}s are ${known.join(', ') || 'none'}${hint}`,
      );
    }
    if (ps.length > 1) {
      const names = ps.map((x) => `${x.plugin} (${x.kind})`);
      const removable = ps.filter((x) => x.kind !== 'core').map((x) => x.plugin);
      throw new UserError(
        'plugin-conflict',
        `plugins ${names.slice(0, -1).join(', ')} and ${names.at(-1)} both provide the ${kind} "${type}"; ` +
          `uninstall one of them (stacker plugins uninstall ${removable.at(-1) ?? ps.at(-1)?.plugin})`,
      );
    }
    return ps[0];
  }

  private load(p: Provider): Promise<Loaded> {
    let m = this.modules.get(p.plugin);
    if (!m) {
      m = (async () => {
        let mod: unknown;
        try {
          const bundled = p.kind === 'core' ? this.bundled[p.plugin] : undefined;
          mod =
            bundled && bundledMatches(bundled, p.root, p.module)
              ? await bundled.load()
              : await this.importModule(pathToFileURL(join(p.root, p.module)).href);
        } catch (e) {
          throw new UserError(
            'plugin-load',
            `plugin ${p.plugin} failed to load: ${messageOf(e)}`,
            {},
            { cause: e },
          );
        }
        const checked = pluginModuleShape.safeParse(mod);
        if (!checked.success) {
          const i = checked.error.issues[0];
          throw new UserError(
            'plugin-contract',
            `plugin ${p.plugin} does not follow the plugin contract: ${i.path.join('.') || 'its module'}: ${i.message}`,
          );
        }
        // the module's own objects, not zod's copies: those would lose every other
        // property a plugin's methods may reach through `this`
        const exported = mod as { sources?: Source[]; storage?: StorageDriverFactory[] };
        return { sources: exported.sources ?? [], storage: exported.storage ?? [] };
      })();
      this.modules.set(p.plugin, m);
    }
    return m;
  }
}

function claim(map: Map<string, Provider[]>, types: string[], p: Provider) {
  for (const t of types) {
    const list = map.get(t) ?? [];
    // oclif lists a user plugin that overrides a core one of the same name only once, but
    // a package may name a type twice
    if (!list.some((x) => x.plugin === p.plugin)) list.push(p);
    map.set(t, list);
  }
}

function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === 'object' && e !== null && typeof (e as { message?: unknown }).message === 'string')
    return (e as { message: string }).message;
  return String(e);
}

/** A `from:` mapping as one short line, for messages: `{type: debian, suite: bookworm}`. */
export function describeFrom(from: unknown): string {
  const show = (v: unknown): string => {
    if (Array.isArray(v)) return `[${v.map(show).join(', ')}]`;
    if (v !== null && typeof v === 'object')
      return `{${Object.entries(v)
        .map(([k, x]) => `${k}: ${show(x)}`)
        .join(', ')}}`;
    if (typeof v === 'string') return /^[\w./:@+~-]+$/.test(v) ? v : JSON.stringify(v);
    return String(v);
  };
  const s = show(from);
  return s.length > 200 ? `${s.slice(0, 197)}...` : s;
}

/** Anything but a UserError that a plugin throws becomes one naming the plugin (the user
 * cannot fix a plugin's bug, but can report it to the right people). */
function blame(plugin: string, doing: string, place: { stanza?: string; key?: string } = {}) {
  return (e: unknown): never => {
    if (isUserError(e)) throw e;
    throw new UserError('plugin-failed', `plugin ${plugin} failed to ${doing}: ${messageOf(e)}`, place, {
      cause: e,
    });
  };
}

/** The plugin's own object stays the prototype, so whatever else it carries still shows. */
function guardSource(s: Source, plugin: string): Source {
  const guarded: Source = Object.create(s);
  Object.assign(guarded, {
    async resolve(from: any, ctx: SourceContext) {
      const doing = `resolve from: ${describeFrom(from)}`;
      const place = { stanza: ctx.stanza, key: 'from' };
      const base: unknown = await Promise.resolve()
        .then(() => s.resolve(from, ctx))
        .catch(blame(plugin, doing, place));
      const checked = baseImageShape.safeParse(base);
      if (!checked.success) {
        const i = checked.error.issues[0];
        throw new UserError(
          'plugin-contract',
          `plugin ${plugin} does not follow the plugin contract: resolve returned a bad base image (${
            i.path.join('.') || 'the result'
          }: ${i.message})`,
          place,
        );
      }
      return base as BaseImage;
    },
  });
  if (s.dependencies) {
    guarded.dependencies = (from: any) => {
      let deps: unknown;
      try {
        deps = s.dependencies?.(from);
      } catch (e) {
        blame(plugin, `list the dependencies of from: ${describeFrom(from)}`)(e);
      }
      if (!Array.isArray(deps) || deps.some((d) => typeof d !== 'string')) {
        throw new UserError(
          'plugin-contract',
          `plugin ${plugin} does not follow the plugin contract: dependencies() must return a list of layer names`,
        );
      }
      return deps as string[];
    };
  }
  if (s.identity) {
    guarded.identity = async (from, ctx) => {
      const id: unknown = await Promise.resolve()
        .then(() => s.identity?.(from, ctx))
        .catch(blame(plugin, `compute the identity of from: ${describeFrom(from)}`, { stanza: ctx.stanza }));
      if (typeof id !== 'string' || id === '') {
        throw new UserError(
          'plugin-contract',
          `plugin ${plugin} does not follow the plugin contract: identity() must return a non-empty string`,
        );
      }
      return id;
    };
  }
  return guarded;
}

function guardStorage(f: StorageDriverFactory, plugin: string): StorageDriverFactory {
  const guarded: StorageDriverFactory = Object.create(f);
  guarded.create = (ctx) =>
    Promise.resolve()
      .then(() => f.create(ctx))
      .catch(blame(plugin, `open the storage driver "${f.type}"`))
      .then((d) => guardDriver(d, plugin, f.type));
  if (f.check) {
    guarded.check = (ctx) =>
      Promise.resolve()
        .then(() => f.check?.(ctx))
        .catch(blame(plugin, `check the storage driver "${f.type}"`));
  }
  return guarded;
}

const DRIVER_METHODS = ['exists', 'prepare', 'unpackLayer', 'diff', 'commit', 'remove', 'rootfs'] as const;
const DRIVER_ASYNC = ['exists', 'prepare', 'unpackLayer', 'commit', 'remove', 'cleanup', 'view'] as const;

/**
 * The driver a storage plugin's factory made, checked against the contract, with every
 * method's failure (a throw, a rejected promise, an error in the middle of a diff) turned
 * into an error naming the plugin and what it was asked to do.
 */
function guardDriver(d: unknown, plugin: string, type: string): StorageDriver {
  const missing =
    d === null || typeof d !== 'object'
      ? ['the driver object']
      : DRIVER_METHODS.filter((m) => typeof (d as Record<string, unknown>)[m] !== 'function');
  if (missing.length > 0) {
    throw new UserError(
      'plugin-contract',
      `plugin ${plugin} does not follow the plugin contract: the storage driver "${type}" lacks ${missing.join(', ')}`,
    );
  }
  const driver = d as StorageDriver & Record<string, unknown>;
  const guarded = Object.create(driver) as StorageDriver & Record<string, unknown>;
  const doing = (method: string, args: unknown[]) =>
    `${method}(${args
      .filter((a) => typeof a === 'string')
      .map((a) => JSON.stringify(a))
      .join(', ')}) in the storage driver "${type}"`;
  for (const m of DRIVER_ASYNC) {
    const fn = driver[m];
    if (typeof fn !== 'function') continue;
    guarded[m] = (...args: unknown[]) =>
      Promise.resolve()
        .then(() => fn.apply(driver, args))
        .catch(blame(plugin, doing(m, args)));
  }
  guarded.rootfs = (key: string) => {
    try {
      return driver.rootfs(key);
    } catch (e) {
      return blame(plugin, doing('rootfs', [key]))(e);
    }
  };
  guarded.diff = (key: string) => {
    const fail = blame(plugin, doing('diff', [key]));
    return (async function* () {
      try {
        yield* driver.diff(key);
      } catch (e) {
        fail(e);
      }
    })();
  };
  return guarded;
}
