import type { Source, StorageDriverFactory } from '@stacker/plugin-api';

/** Where the engine gets sources and storage drivers from (the cli implements it with
 * oclif plugin discovery; library users can pass a static one). */
export interface PluginRegistry {
  sourceTypes(): string[];
  source(type: string): Promise<Source>;
  storageTypes(): string[];
  storage(type: string): Promise<StorageDriverFactory>;
}

/** A registry over plain lists, for library use and tests. */
export class StaticRegistry implements PluginRegistry {
  constructor(
    private sources: Source[],
    private storages: StorageDriverFactory[],
  ) {}
  sourceTypes() {
    return this.sources.map((s) => s.type).sort();
  }
  storageTypes() {
    return this.storages.map((s) => s.type).sort();
  }
  async source(type: string) {
    const s = this.sources.find((x) => x.type === type);
    if (!s) throw new Error(`unknown source type "${type}"`);
    return s;
  }
  async storage(type: string) {
    const s = this.storages.find((x) => x.type === type);
    if (!s) throw new Error(`unknown storage type "${type}"`);
    return s;
  }
}
