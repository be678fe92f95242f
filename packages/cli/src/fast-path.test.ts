import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { silentLogger } from '@stacker/plugin-api';
import { afterAll, describe, expect, it } from 'vitest';
import { findFastPlugins, oclifDataDir } from './fast-path.js';
import { type BundledPlugin, bundledMatches, OclifPluginRegistry } from './plugins.js';

const base = mkdtempSync(join(tmpdir(), 'stacker-fast-path-test-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

let n = 0;
function writeJson(path: string, value: unknown) {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, JSON.stringify(value));
}

/** A CLI at `<tree>/packages/cli` with its core plugins hoisted to `<tree>/node_modules`. */
function tree(opts: { cliOclif?: Record<string, unknown>; pluginOclif?: Record<string, unknown> } = {}) {
  const dir = join(base, `t${n++}`);
  const cli = join(dir, 'packages/cli');
  writeJson(join(cli, 'package.json'), {
    name: '@stacker/cli',
    version: '0.1.0',
    dependencies: { '@oclif/plugin-help': '1', '@stacker/source-tar': '1', yaml: '1' },
    oclif: {
      bin: 'stacker',
      dirname: 'stacker',
      plugins: ['@oclif/plugin-help', '@stacker/source-tar'],
      ...opts.cliOclif,
    },
  });
  writeJson(join(dir, 'node_modules/@oclif/plugin-help/package.json'), {
    name: '@oclif/plugin-help',
    oclif: {},
  });
  writeJson(join(dir, 'node_modules/@stacker/source-tar/package.json'), {
    name: '@stacker/source-tar',
    oclif: { stacker: { sources: ['tar'], module: './dist/index.js' }, ...opts.pluginOclif },
  });
  const home = join(dir, 'home');
  mkdirSync(home, { recursive: true });
  return { cli, dir, env: { HOME: home } as NodeJS.ProcessEnv };
}

describe('findFastPlugins', () => {
  it('lists the root and the core plugins oclif would load, for build and recursive-build', () => {
    const t = tree();
    for (const cmd of ['build', 'recursive-build']) {
      const found = findFastPlugins([cmd, '--quiet'], t.cli, t.env);
      expect(found?.map((p) => [p.name, p.type, p.isRoot])).toEqual([
        ['@stacker/cli', 'core', true],
        ['@oclif/plugin-help', 'core', false],
        ['@stacker/source-tar', 'core', false],
      ]);
      expect(found?.[2].root).toBe(join(t.dir, 'node_modules/@stacker/source-tar'));
      expect(found?.[2].pjson.oclif?.stacker).toEqual({ sources: ['tar'], module: './dist/index.js' });
    }
  });

  it('leaves other commands, help, version and oclif debugging to oclif', () => {
    const t = tree();
    expect(findFastPlugins(['publish'], t.cli, t.env)).toBeUndefined();
    expect(findFastPlugins([], t.cli, t.env)).toBeUndefined();
    expect(findFastPlugins(['build', '--help'], t.cli, t.env)).toBeUndefined();
    expect(findFastPlugins(['build', '-h'], t.cli, t.env)).toBeUndefined();
    expect(findFastPlugins(['build', '--version'], t.cli, t.env)).toBeUndefined();
    expect(findFastPlugins(['build', '--', '--help'], t.cli, t.env)).toBeDefined();
    expect(findFastPlugins(['build'], t.cli, { ...t.env, DEBUG: '*' })).toBeUndefined();
    expect(findFastPlugins(['build'], t.cli, { ...t.env, STACKER_DEBUG: '1' })).toBeUndefined();
  });

  it('leaves hooks, nested plugins and glob patterns to oclif', () => {
    expect(findFastPlugins(['build'], tree({ cliOclif: { hooks: { init: './x.js' } } }).cli)).toBeUndefined();
    const prerun = tree({ pluginOclif: { hooks: { prerun: './x.js' } } });
    expect(findFastPlugins(['build'], prerun.cli, prerun.env)).toBeUndefined();
    const nested = tree({ pluginOclif: { plugins: ['x'] } });
    expect(findFastPlugins(['build'], nested.cli, nested.env)).toBeUndefined();
    const glob = tree({ cliOclif: { plugins: ['@stacker/source-*'] } });
    expect(findFastPlugins(['build'], glob.cli, glob.env)).toBeUndefined();
    // a hook oclif runs for other occasions only
    const update = tree({ pluginOclif: { hooks: { update: './x.js' } } });
    expect(findFastPlugins(['build'], update.cli, update.env)).toBeDefined();
  });

  it('leaves a missing core plugin to oclif (which warns about it)', () => {
    const t = tree({ cliOclif: { plugins: ['@oclif/plugin-help', '@stacker/source-tar', 'yaml'] } });
    expect(findFastPlugins(['build'], t.cli, t.env)).toBeUndefined();
  });

  it('leaves user and linked plugins to oclif, and a data dir it cannot read', () => {
    const t = tree();
    const dataDir = join(t.env.HOME as string, '.local/share/stacker');
    writeJson(join(dataDir, 'package.json'), { private: true, oclif: { schema: 1, plugins: [] } });
    expect(findFastPlugins(['build'], t.cli, t.env)).toBeDefined();
    for (const type of ['user', 'link']) {
      writeJson(join(dataDir, 'package.json'), { oclif: { plugins: [{ name: 'x', type }] } });
      expect(findFastPlugins(['build'], t.cli, t.env)).toBeUndefined();
    }
    writeFileSync(join(dataDir, 'package.json'), '{ not json');
    expect(findFastPlugins(['build'], t.cli, t.env)).toBeUndefined();
  });

  it('finds the data dir as oclif does', () => {
    const pjson = { name: '@stacker/cli', oclif: { bin: 'stacker', dirname: 'stacker' } };
    expect(oclifDataDir(pjson, { HOME: '/h' })).toBe('/h/.local/share/stacker');
    expect(oclifDataDir(pjson, { HOME: '/h', XDG_DATA_HOME: '/x' })).toBe('/x/stacker');
    expect(oclifDataDir(pjson, { HOME: '/h', STACKER_DATA_DIR: '/d' })).toBe('/d');
  });
});

describe('bundled plugins', () => {
  const dir = join(base, 'bundled');
  mkdirSync(join(dir, 'dist'), { recursive: true });
  const source = `export const sources = [{ type: 'tar', from: 'disk', schema: { safeParse() {} }, resolve: async () => ({}) }];`;
  writeFileSync(join(dir, 'dist/index.js'), source);
  const sha = createHash('sha256').update(source).digest('hex');
  const bundled: BundledPlugin = {
    load: async () => ({
      sources: [{ type: 'tar', from: 'bundle', schema: { safeParse() {} }, resolve: async () => ({}) }],
    }),
    module: './dist/index.js',
    files: { 'dist/index.js': sha },
  };

  it('stands in for the plugin only while its files are the bundled ones', () => {
    expect(bundledMatches(bundled, dir, './dist/index.js')).toBe(true);
    expect(bundledMatches(bundled, dir, 'dist/index.js')).toBe(true);
    expect(bundledMatches(bundled, dir, './dist/other.js')).toBe(false);
    expect(
      bundledMatches({ ...bundled, files: { 'dist/index.js': '0'.repeat(64) } }, dir, './dist/index.js'),
    ).toBe(false);
    expect(bundledMatches({ ...bundled, files: { 'dist/gone.js': sha } }, dir, './dist/index.js')).toBe(
      false,
    );
    expect(bundledMatches({ ...bundled, files: {} }, dir, './dist/index.js')).toBe(false);
  });

  it('is used for a core plugin, never for a user one, and import() otherwise', async () => {
    const pjson = {
      name: '@stacker/source-tar',
      oclif: { stacker: { sources: ['tar'], module: './dist/index.js' } },
    };
    const imported: string[] = [];
    const importModule = async (url: string) => {
      imported.push(url);
      return import(url);
    };
    const resolveWith = async (type: string, files = bundled.files) => {
      const reg = new OclifPluginRegistry(
        { getPluginsList: () => [{ name: '@stacker/source-tar', type, root: dir, pjson }] as any },
        silentLogger,
        { bundled: { '@stacker/source-tar': { ...bundled, files } }, importModule },
      );
      return ((await reg.source('tar')) as unknown as { from: string }).from;
    };
    expect(await resolveWith('core')).toBe('bundle');
    expect(imported).toEqual([]);
    expect(await resolveWith('user')).toBe('disk');
    expect(imported).toHaveLength(1);
    expect(await resolveWith('core', { 'dist/index.js': '0'.repeat(64) })).toBe('disk');
    expect(imported).toHaveLength(2);
  });
});
