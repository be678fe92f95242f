import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isUserError, silentLogger } from '@stacker/plugin-api';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { destinationOf, type StagedImport, stageImports } from './imports.js';

const staged = (dest: string, name = 'file'): StagedImport => ({
  spec: { path: `/src/${name}`, dest },
  staged: `/stage/${name}`,
  name,
});

describe('import dest never names a host path', () => {
  it.each([
    ['/etc/app.conf', '/etc/app.conf'],
    ['/opt/', '/opt/file'],
    ['/../../../etc/x', '/etc/x'],
    ['/a/../../b/', '/b/file'],
    ['/a/./b/../c', '/a/c'],
    ['/../', '/file'],
  ])('%j lands at %j inside the rootfs', (dest, want) => {
    expect(destinationOf(staged(dest))).toBe(want);
  });

  it.each(['/..', '/a/..', '/../..', '/.'])('%j names the root: refused by name', (dest) => {
    let err: unknown;
    try {
      destinationOf(staged(dest));
    } catch (e) {
      err = e;
    }
    expect(isUserError(err)).toBe(true);
    expect((err as Error).message).toMatch(/names the root of the image/);
  });
});

describe('stacker:// import paths', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'core-imports-'));
  });
  afterEach(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  const ctx = (asked: string[]) => ({
    stanza: 'child',
    resolvePath: (p: string) => join(dir, p),
    stageDir: join(dir, 'stage', 'child'),
    downloadDir: join(dir, 'downloads'),
    requireHash: false,
    log: silentLogger,
    copyFromLayer: async (_layer: string, path: string, dest: string) => {
      asked.push(path);
      await fsp.writeFile(dest, 'copied');
    },
  });

  it('normalises ".." within the layer and stages under the stage dir', async () => {
    const asked: string[] = [];
    const out = await stageImports([{ path: 'stacker://base/../../etc/../usr/bin/tool' }], ctx(asked));
    expect(asked).toEqual(['/usr/bin/tool']);
    expect(out[0].staged).toBe(join(dir, 'stage', 'child', 'tool'));
    expect(await fsp.readdir(dir)).toEqual(['stage']);
  });

  it.each(['stacker://base/..', 'stacker://base/', 'stacker://base/a/../..'])(
    'refuses %j, which names the layer root',
    async (path) => {
      const asked: string[] = [];
      await expect(stageImports([{ path }], ctx(asked))).rejects.toSatisfy(
        (e: unknown) => isUserError(e) && /names the root of base/.test((e as Error).message),
      );
      expect(asked).toEqual([]);
    },
  );
});
