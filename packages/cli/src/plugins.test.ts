import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isUserError, type SourceContext, silentLogger } from '@stacker/plugin-api';
import { afterAll, describe, expect, it } from 'vitest';
import { OclifPluginRegistry } from './plugins.js';

const root = mkdtempSync(join(tmpdir(), 'stacker-plugins-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

interface FakePlugin {
  name: string;
  type?: string;
  root: string;
  pjson: Record<string, unknown>;
}

// A schema-shaped object, as a plugin's own zod would give (the host never uses instanceof).
const SCHEMA = `{
  safeParse(v) {
    if (v && typeof v.suite === 'string') return { success: true, data: v };
    return { success: false, error: { issues: [{ path: ['suite'], message: 'suite: required' }] } };
  },
}`;

/** A plugin package on disk: package.json with `oclif.stacker`, and an ESM module. */
function plugin(
  name: string,
  decl: Record<string, unknown> | undefined,
  moduleSource: string,
  type = 'user',
): FakePlugin {
  const dir = join(root, name.replace(/[@/]/g, '_'));
  mkdirSync(dir, { recursive: true });
  const pjson = { name, version: '1.0.0', type: 'module', oclif: decl ? { stacker: decl } : {} };
  writeFileSync(join(dir, 'package.json'), JSON.stringify(pjson));
  writeFileSync(join(dir, 'index.js'), moduleSource);
  return { name, type, root: dir, pjson };
}

function registry(...plugins: FakePlugin[]) {
  const warnings: string[] = [];
  const log = { ...silentLogger, warn: (m: unknown) => void warnings.push(String(m)) };
  const reg = new OclifPluginRegistry({ getPluginsList: () => plugins as any }, log as any);
  return { reg, warnings };
}

async function userError(p: Promise<unknown>): Promise<{ message: string; code: string }> {
  try {
    await p;
  } catch (e) {
    expect(isUserError(e)).toBe(true);
    return e as { message: string; code: string };
  }
  throw new Error('expected a user error');
}

const ctx = { stanza: 'web' } as SourceContext;
const FROM = { type: 'debian', suite: 'bookworm' };

const tarPlugin = plugin(
  '@stacker/source-tar',
  { sources: ['tar'], module: './index.js' },
  `export const sources = [{ type: 'tar', schema: ${SCHEMA}, async resolve() { throw new Error('x') } }];`,
  'core',
);

describe('OclifPluginRegistry', () => {
  it('finds types by declaration alone and imports a module only when asked', async () => {
    const never = plugin(
      '@x/never-loaded',
      { sources: ['never'], module: './index.js' },
      `throw new Error('imported although nobody asked');`,
    );
    const { reg } = registry(tarPlugin, never);
    expect(reg.sourceTypes()).toEqual(['never', 'tar']);
    const s = await reg.source('tar');
    expect(s.type).toBe('tar');
    expect(s.schema.safeParse({ suite: 'x' }).success).toBe(true);
  });

  it('names the known types and the plugin that would provide an unknown one', async () => {
    const { reg } = registry(tarPlugin);
    const e = await userError(reg.source('debian'));
    expect(e.code).toBe('unknown-type');
    expect(e.message).toBe(
      'unknown source type "debian": known source types are tar; the plugin @stacker/source-debian provides it (stacker plugins install @stacker/source-debian, or from a stacker checkout: npm pack ./plugins/source-debian, then stacker plugins install file:<the .tgz it wrote>)',
    );
    const e2 = await userError(reg.source('nosuch'));
    expect(e2.message).toBe('unknown source type "nosuch": known source types are tar');
    const e3 = await userError(reg.storage('btrfs'));
    expect(e3.message).toMatch(
      /unknown storage type "btrfs": known storage types are none; the plugin @stacker\/storage-btrfs/,
    );
  });

  it('says which two plugins claim the same type, and only when the type is used', async () => {
    const a = plugin(
      '@x/debian-a',
      { sources: ['debian'], module: './index.js' },
      `export const sources = [{ type: 'debian', schema: ${SCHEMA}, async resolve() {} }];`,
    );
    const b = plugin(
      '@y/debian-b',
      { sources: ['debian'], module: './index.js' },
      `export const sources = [{ type: 'debian', schema: ${SCHEMA}, async resolve() {} }];`,
    );
    const { reg } = registry(tarPlugin, a, b);
    expect((await reg.source('tar')).type).toBe('tar');
    const e = await userError(reg.source('debian'));
    expect(e.code).toBe('plugin-conflict');
    expect(e.message).toBe(
      'plugins @x/debian-a (user) and @y/debian-b (user) both provide the source type "debian"; uninstall one of them (stacker plugins uninstall @y/debian-b)',
    );
    // a user plugin that claims a core type: the user plugin is the one to remove
    const t = plugin(
      '@z/my-tar',
      { sources: ['tar'], module: './index.js' },
      `export const sources = [{ type: 'tar', schema: ${SCHEMA}, async resolve() {} }];`,
    );
    const e2 = await userError(registry(tarPlugin, t).reg.source('tar'));
    expect(e2.message).toMatch(/@stacker\/source-tar \(core\) and @z\/my-tar \(user\).*uninstall @z\/my-tar/);
  });

  it('ignores a plugin whose declaration is invalid, with a warning naming it', async () => {
    const bad = plugin('@x/bad-decl', { sources: 'debian' }, 'export const sources = [];');
    const { reg, warnings } = registry(tarPlugin, bad);
    expect(reg.sourceTypes()).toEqual(['tar']);
    expect(warnings.join('\n')).toMatch(/plugin @x\/bad-decl has an invalid "oclif.stacker" section/);
  });

  it('reports by name a plugin whose module fails to load', async () => {
    const broken = plugin('@x/broken', { sources: ['debian'], module: './index.js' }, 'export const = ;');
    const missing = plugin('@x/missing', { sources: ['other'], module: './dist/nothing.js' }, '');
    const { reg } = registry(broken, missing);
    const e = await userError(reg.source('debian'));
    expect(e.code).toBe('plugin-load');
    expect(e.message).toMatch(/^plugin @x\/broken failed to load: /);
    expect((await userError(reg.source('other'))).message).toMatch(/^plugin @x\/missing failed to load: /);
  });

  it('reports by name a plugin that breaks the contract', async () => {
    const noResolve = plugin(
      '@x/no-resolve',
      { sources: ['debian'], module: './index.js' },
      `export const sources = [{ type: 'debian', schema: ${SCHEMA} }];`,
    );
    const e = await userError(registry(noResolve).reg.source('debian'));
    expect(e.code).toBe('plugin-contract');
    expect(e.message).toBe(
      'plugin @x/no-resolve does not follow the plugin contract: sources.0.resolve: resolve must be a function',
    );
    const notExported = plugin(
      '@x/not-exported',
      { sources: ['debian'], module: './index.js' },
      `export const sources = [{ type: 'ubuntu', schema: ${SCHEMA}, async resolve() {} }];`,
    );
    expect((await userError(registry(notExported).reg.source('debian'))).message).toBe(
      'plugin @x/not-exported declares the source type "debian" but its module does not export it',
    );
    const noSchema = plugin(
      '@x/no-schema',
      { sources: ['debian'], module: './index.js' },
      `export const sources = [{ type: 'debian', schema: {}, async resolve() {} }];`,
    );
    expect((await userError(registry(noSchema).reg.source('debian'))).message).toMatch(
      /@x\/no-schema does not follow the plugin contract: sources.0.schema: schema must be a zod schema/,
    );
  });

  it('turns what resolve throws into one sentence naming the plugin and the from', async () => {
    const throws = plugin(
      '@x/throws',
      { sources: ['debian'], module: './index.js' },
      `export const sources = [{ type: 'debian', schema: ${SCHEMA},
        async resolve(from) { return this.helper(from); },
        helper() { throw new TypeError("Cannot read properties of undefined (reading 'length')"); } }];`,
    );
    const s = await registry(throws).reg.source('debian');
    const e = await userError(s.resolve(FROM, ctx));
    expect(e.code).toBe('plugin-failed');
    expect(e.message).toBe(
      "plugin @x/throws failed to resolve from: {type: debian, suite: bookworm}: Cannot read properties of undefined (reading 'length')",
    );
    expect((e as any).place).toEqual({ stanza: 'web', key: 'from' });
  });

  it('passes a UserError from resolve through untouched', async () => {
    const userErr = plugin(
      '@x/user-error',
      { sources: ['debian'], module: './index.js' },
      `export const sources = [{ type: 'debian', schema: ${SCHEMA}, async resolve() {
        const e = new Error('web: mmdebstrap is not installed; apt-get install mmdebstrap');
        e.userError = true; e.code = 'debian-tool'; e.place = {}; throw e; } }];`,
    );
    const s = await registry(userErr).reg.source('debian');
    const e = await userError(s.resolve(FROM, ctx));
    expect(e.message).toBe('web: mmdebstrap is not installed; apt-get install mmdebstrap');
    expect(e.code).toBe('debian-tool');
  });

  it('checks what resolve returns, and what identity and dependencies return', async () => {
    const bad = plugin(
      '@x/bad-base',
      { sources: ['debian'], module: './index.js' },
      `export const sources = [{ type: 'debian', schema: ${SCHEMA},
        async resolve() { return { manifest: {} }; },
        async identity() { return 42; },
        dependencies() { return 'base'; } }];`,
    );
    const s = await registry(bad).reg.source('debian');
    expect((await userError(s.resolve(FROM, ctx))).message).toMatch(
      /^plugin @x\/bad-base does not follow the plugin contract: resolve returned a bad base image \(manifest.schemaVersion: /,
    );
    expect((await userError(s.identity!(FROM, ctx))).message).toBe(
      'plugin @x/bad-base does not follow the plugin contract: identity() must return a non-empty string',
    );
    expect(() => s.dependencies!(FROM)).toThrow(/dependencies\(\) must return a list of layer names/);
  });

  it('wraps what a storage factory throws, naming the plugin', async () => {
    const st = plugin(
      '@x/storage-zfs',
      { storage: ['zfs'], module: './index.js' },
      `export const storage = [{ type: 'zfs', description: 'zfs datasets',
        async check() { throw new Error('zpool: command not found'); },
        async create() { throw new RangeError('boom'); } }];`,
    );
    const f = await registry(st).reg.storage('zfs');
    expect(f.description).toBe('zfs datasets');
    expect((await userError(f.check!({} as any))).message).toBe(
      'plugin @x/storage-zfs failed to check the storage driver "zfs": zpool: command not found',
    );
    expect((await userError(f.create({} as any))).message).toBe(
      'plugin @x/storage-zfs failed to open the storage driver "zfs": boom',
    );
  });

  it('checks the driver a storage factory makes, and names the plugin when one of its methods fails', async () => {
    const st = plugin(
      '@x/storage-odd',
      { storage: ['half', 'odd'], module: './index.js' },
      `const odd = {
        name: 'odd',
        async exists() { return false; },
        prepare(key) { throw new Error('no space for ' + key); },
        async unpackLayer() { throw new TypeError('bad tar'); },
        async *diff(key) { yield { kind: 'add', path: 'a' }; throw new Error('upper dir vanished'); },
        async commit() {},
        async remove() {},
        rootfs() { return '/r'; },
        async view() { return '/v'; },
      };
      export const storage = [
        { type: 'half', description: 'half a driver', async create() { return { name: 'half', exists() {} }; } },
        { type: 'odd', description: 'odd', async create() { return odd; } },
      ];`,
    );
    const reg = registry(st).reg;
    const half = await reg.storage('half');
    expect((await userError(half.create({} as any))).message).toBe(
      'plugin @x/storage-odd does not follow the plugin contract: the storage driver "half" lacks prepare, unpackLayer, diff, commit, remove, rootfs',
    );
    const d = await (await reg.storage('odd')).create({} as any);
    expect((await userError(d.prepare('k1', undefined))).message).toBe(
      'plugin @x/storage-odd failed to prepare("k1") in the storage driver "odd": no space for k1',
    );
    expect((await userError(d.unpackLayer('k1', undefined as any))).message).toMatch(
      /unpackLayer\("k1"\).*bad tar/,
    );
    const seen: unknown[] = [];
    const diffing = (async () => {
      for await (const c of d.diff('k2')) seen.push(c);
    })();
    expect((await userError(diffing)).message).toBe(
      'plugin @x/storage-odd failed to diff("k2") in the storage driver "odd": upper dir vanished',
    );
    expect(seen).toEqual([{ kind: 'add', path: 'a' }]);
    // what works is passed through, optional abilities stay visible
    expect(d.rootfs('k1')).toBe('/r');
    expect(await d.exists('x')).toBe(false);
    expect('view' in d && (await (d as any).view('k', 'n'))).toBe('/v');
    expect('cleanup' in d).toBe(false);
  });
});
