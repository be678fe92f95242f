// What a killed writer leaves behind: never a half layout, and temp files the next opener
// removes (only those of dead writers).
import { spawnSync } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { OciLayout } from './layout.js';
import { tempDir } from './test-fixtures.js';

let dir: string;
beforeEach(async () => {
  dir = await tempDir('oci-crash-');
});
afterEach(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

/** A pid that surely belonged to a process that has exited. */
function deadPid(): number {
  return spawnSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).stdout.trim() as unknown as number;
}

describe('layouts after a crash', () => {
  it('a writer killed after index.json but before oci-layout leaves a layout init completes', async () => {
    const layout = join(dir, 'oci');
    await fsp.mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
    await fsp.writeFile(join(layout, 'index.json'), '{"schemaVersion":2,"manifests":[]}');
    const l = await OciLayout.init(layout);
    expect(await l.listTags()).toEqual([]);
    expect(await l.validate()).toEqual([]);
  });

  it('opening a layout removes temp files of dead writers and keeps those of live ones', async () => {
    const layout = join(dir, 'oci');
    await OciLayout.init(layout);
    const dead = Number(deadPid());
    const deadBlob = join(layout, 'blobs', `.tmp-${dead}-0123456789abcdef`);
    const deadIndex = join(layout, `index.json.tmp-${dead}-abcdef`);
    const live = join(layout, 'blobs', `.tmp-${process.pid}-fedcba9876543210`);
    for (const f of [deadBlob, deadIndex, live]) await fsp.writeFile(f, 'partial');
    const l = await OciLayout.open(layout);
    const exists = (p: string) =>
      fsp.access(p).then(
        () => true,
        () => false,
      );
    expect(await exists(deadBlob)).toBe(false);
    expect(await exists(deadIndex)).toBe(false);
    expect(await exists(live)).toBe(true);
    expect(await l.validate()).toEqual([]);
  });
});
