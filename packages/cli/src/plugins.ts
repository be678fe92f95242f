import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Config } from '@oclif/core';
import type { PluginRegistry } from '@stacker/core';
import {
  type Logger,
  pluginDeclaration,
  pluginModuleShape,
  type Source,
  type StorageDriverFactory,
  UserError,
} from '@stacker/plugin-api';

interface Provider {
  plugin: string;
  root: string;
  module: string;
}

/** Plugins that are known to provide a type but are not installed by default. */
const WELL_KNOWN: Record<string, string> = {
  docker: '@stacker/source-docker',
  debian: '@stacker/source-debian',
  btrfs: '@stacker/storage-btrfs',
};

/**
 * Finds sources and storage drivers among oclif's plugins (core ones listed in the cli's
 * package.json, user ones from `stacker plugins install`) by their package.json
 * declaration alone, and imports a plugin's module only when a stackerfile uses its type.
 * Everything a plugin exports is checked by shape: each plugin has its own copies of our
 * packages, so instanceof means nothing across them.
 */
export class OclifPluginRegistry implements PluginRegistry {
  private sources = new Map<string, Provider>();
  private storages = new Map<string, Provider>();
  private modules = new Map<string, Promise<{ sources: Source[]; storage: StorageDriverFactory[] }>>();

  constructor(
    config: Pick<Config, 'getPluginsList'>,
    private log?: Logger,
  ) {
    for (const plugin of config.getPluginsList()) {
      const raw = (plugin.pjson as any)?.oclif?.stacker;
      if (raw === undefined) continue;
      const decl = pluginDeclaration.safeParse(raw);
      if (!decl.success) {
        this.log?.warn(
          `plugin ${plugin.name} has an invalid "oclif.stacker" section in package.json; ignoring it`,
        );
        continue;
      }
      const provider = { plugin: plugin.name, root: plugin.root, module: decl.data.module };
      this.claim(this.sources, decl.data.sources, provider, 'source type');
      this.claim(this.storages, decl.data.storage, provider, 'storage type');
    }
  }

  private claim(map: Map<string, Provider>, types: string[], p: Provider, what: string) {
    for (const t of types) {
      const other = map.get(t);
      if (other && other.plugin !== p.plugin) {
        throw new UserError(
          'plugin-conflict',
          `plugins ${other.plugin} and ${p.plugin} both provide the ${what} "${t}"; uninstall one of them (stacker plugins uninstall NAME)`,
        );
      }
      map.set(t, p);
    }
  }

  sourceTypes(): string[] {
    return [...this.sources.keys()].sort();
  }

  storageTypes(): string[] {
    return [...this.storages.keys()].sort();
  }

  private load(p: Provider) {
    let m = this.modules.get(p.plugin);
    if (!m) {
      m = (async () => {
        let mod: unknown;
        try {
          mod = await import(pathToFileURL(join(p.root, p.module)).href);
        } catch (e) {
          throw new UserError('plugin-load', `plugin ${p.plugin} failed to load: ${(e as Error).message}`);
        }
        const checked = pluginModuleShape.safeParse(mod);
        if (!checked.success) {
          const i = checked.error.issues[0];
          throw new UserError(
            'plugin-contract',
            `plugin ${p.plugin} does not follow the plugin contract: ${i.path.join('.')}: ${i.message}`,
          );
        }
        return {
          sources: (checked.data.sources ?? []) as unknown as Source[],
          storage: (checked.data.storage ?? []) as unknown as StorageDriverFactory[],
        };
      })();
      this.modules.set(p.plugin, m);
    }
    return m;
  }

  private unknown(kind: string, type: string, known: string[]): never {
    const hint = WELL_KNOWN[type]
      ? `; the plugin ${WELL_KNOWN[type]} provides it (stacker plugins install ${WELL_KNOWN[type]})`
      : '';
    throw new UserError(
      'unknown-type',
      `unknown ${kind} "${type}": known ${kind}s are ${known.join(', ') || 'none'}${hint}`,
    );
  }

  async source(type: string): Promise<Source> {
    const p = this.sources.get(type);
    if (!p) this.unknown('source type', type, this.sourceTypes());
    const mod = await this.load(p);
    const s = mod.sources.find((x) => x.type === type);
    if (!s) {
      throw new UserError(
        'plugin-contract',
        `plugin ${p.plugin} declares the source type "${type}" but its module does not export it`,
      );
    }
    return s;
  }

  async storage(type: string): Promise<StorageDriverFactory> {
    const p = this.storages.get(type);
    if (!p) this.unknown('storage type', type, this.storageTypes());
    const mod = await this.load(p);
    const s = mod.storage.find((x) => x.type === type);
    if (!s) {
      throw new UserError(
        'plugin-contract',
        `plugin ${p.plugin} declares the storage type "${type}" but its module does not export it`,
      );
    }
    return s;
  }
}
