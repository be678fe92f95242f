import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OciLayout, putLayer } from '@stacker/oci';
import { type StorageDriver, type StorageDriverFactory, silentLogger } from '@stacker/plugin-api';
import Build from './commands/build.js';
import { FastConfig } from './fast-build.js';
import type { FoundPlugin } from './fast-path.js';
import { type BundledPlugin, OclifPluginRegistry } from './plugins.js';
import { resolveSettings } from './settings.js';
import { loadStackerFiles } from './stackerfiles.js';

/**
 * Runs, once, at build time (scripts/code-cache.mjs), what a cached `stacker build` runs,
 * so that V8's code cache of dist/fast.cjs holds that code compiled, not only what runs
 * while the bundle loads: `build --order-only` (flags, settings, logging, stacker files),
 * then two builds of a small stacker file without `run` (no container, no namespace), with
 * a storage driver that keeps nothing: the first fills the build cache, the second finds
 * every layer in it. It touches nothing outside a temporary directory.
 */
export async function warmUp(
  plugins: FoundPlugin[],
  bundled: Record<string, BundledPlugin>,
  importModule: (url: string) => Promise<unknown>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'stacker-warm-up-'));
  const out = process.stdout.write;
  try {
    // a base tarball: a layer blob of one file
    mkdirSync(join(dir, 'files'));
    writeFileSync(join(dir, 'files/hello'), 'hello\n');
    const scratch = await OciLayout.init(join(dir, 'scratch'));
    const tar = await putLayer(scratch, [{ kind: 'add', path: 'hello', source: join(dir, 'files/hello') }]);
    const file = join(dir, 'stacker.yaml');
    writeFileSync(
      file,
      `base:
  from:
    type: tar
    url: ${scratch.path(tar.descriptor.digest)}
  environment:
    GREETING: \${{GREETING:hello}}
  labels:
    org.example.base: "yes"
app:
  from:
    type: built
    tag: base
  entrypoint: /bin/sh
  cmd: [-c, "echo hello"]
  working_dir: /
`,
    );
    const config = join(dir, 'conf.yaml');
    writeFileSync(config, `stacker_dir: ${join(dir, '.stacker')}\n`);

    // flags, settings, logging and the stacker file, as the command does them
    const fast = new FastConfig(plugins, bundled, importModule);
    const args = ['-f', file, '--order-only', '--quiet', '--config', config, '--work-dir', dir];
    Build.id = 'build';
    const cmd = new Build([...args, '--substitute', 'GREETING=hi'], fast as any);
    process.stdout.write = (() => true) as typeof out;
    await (cmd as unknown as { _run(): Promise<unknown> })._run();
    process.stdout.write = out;

    // two builds, the second one all cached
    const settings = resolveSettings({ config, 'work-dir': dir });
    const files = await loadStackerFiles([file], { substitute: ['GREETING=hi'] }, settings);
    const registry = new OclifPluginRegistry(fast as any, silentLogger, { bundled, importModule });
    const { Builder } = await import('@stacker/core/engine');
    for (let i = 0; i < 2; i++) {
      await new Builder({
        files,
        settings: { ...settings, storageType: 'warm-up' },
        registry: {
          sourceTypes: () => registry.sourceTypes(),
          source: (type) => registry.source(type),
          storageTypes: () => ['warm-up'],
          storage: async () => nullStorage,
        },
        log: silentLogger,
        stackerVersion: 'warm-up',
        author: 'warm-up',
        jobs: 2,
      }).run();
    }
  } finally {
    process.stdout.write = out;
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Snapshots that exist by name only: the layers are read through and dropped. */
const nullStorage: StorageDriverFactory = {
  type: 'warm-up',
  async create() {
    const committed = new Set<string>();
    const driver: StorageDriver = {
      name: 'warm-up',
      exists: async (name) => committed.has(name),
      prepare: async () => '/nonexistent',
      async unpackLayer(_key, layerTar) {
        for await (const _ of layerTar) {
          // read it all: that checks its digest
        }
      },
      async *diff() {},
      commit: async (name) => void committed.add(name),
      remove: async () => {},
      rootfs: () => undefined,
    };
    return driver;
  },
};
