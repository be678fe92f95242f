/* biome-ignore-all lint/suspicious/noTemplateCurlyInString: stacker's ${{VAR}} placeholders are the data under test */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from './errors.js';
import { parseMany, parseStackerFile } from './stackerfile.js';
import { userErrorOfAsync } from './test-helpers.js';

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'stackerfile-many-'));
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(join(root, rel, '..'), { recursive: true });
    writeFileSync(join(root, rel), text);
  }
  return root;
}

describe('parseStackerFile', () => {
  it('reads a file and resolves paths against its directory', async () => {
    const root = tree({ 'd/stacker.yaml': 'l:\n  from: {type: tar, url: ${{TAR}}}\n  imports: x\n' });
    const sf = await parseStackerFile(join(root, 'd/stacker.yaml'), { substitutions: { TAR: 'r.tar' } });
    expect(sf.path).toBe(join(root, 'd/stacker.yaml'));
    expect(sf.layers[0].from).toEqual({ type: 'tar', url: 'r.tar' });
    expect(sf.layers[0].imports).toEqual([{ path: join(root, 'd/x') }]);
  });

  it('a missing file is a user error naming it', async () => {
    const root = tree({});
    const e = await userErrorOfAsync(() => parseStackerFile(join(root, 'nope.yaml')));
    expect(e.code).toBe(ErrorCodes.read);
    expect(e.message).toMatch(
      new RegExp(
        `^${join(root, 'nope.yaml')}: couldn't read stacker file: ENOENT.*; check the path given with -f\\.$`,
      ),
    );
  });
});

describe('parseMany', () => {
  it('follows prerequisites recursively, prerequisites first, each file once', async () => {
    const root = tree({
      'parent/folder1/stacker.yaml':
        'config:\n  prerequisites:\n    - ../folder2/stacker.yaml\n    - ../folder3/stacker.yaml\none:\n  from: {type: built, tag: two}\n',
      'parent/folder2/stacker.yaml':
        'config:\n  prerequisites: [../folder3/stacker.yaml]\ntwo:\n  from: {type: built, tag: three}\n',
      'parent/folder3/stacker.yaml': 'three:\n  from: {type: scratch}\n',
    });
    const files = await parseMany([join(root, 'parent/folder1/stacker.yaml')]);
    expect(files.map((f) => f.path)).toEqual([
      join(root, 'parent/folder3/stacker.yaml'),
      join(root, 'parent/folder2/stacker.yaml'),
      join(root, 'parent/folder1/stacker.yaml'),
    ]);
    expect(files[2].prerequisites).toEqual([
      join(root, 'parent/folder2/stacker.yaml'),
      join(root, 'parent/folder3/stacker.yaml'),
    ]);
    const only = await parseMany([join(root, 'parent/folder1/stacker.yaml')], { followPrerequisites: false });
    expect(only.map((f) => f.layers[0].name)).toEqual(['one']);
  });

  it('prerequisite cycles do not loop', async () => {
    const root = tree({
      'a.yaml': 'config: {prerequisites: [b.yaml]}\na:\n  from: {type: scratch}\n',
      'b.yaml': 'config: {prerequisites: [a.yaml]}\nb:\n  from: {type: scratch}\n',
    });
    const files = await parseMany([join(root, 'a.yaml')]);
    expect(files.map((f) => f.layers[0].name)).toEqual(['b', 'a']);
  });

  it('layer names must be unique across files; the error names both places', async () => {
    const root = tree({
      'a.yaml': '# a\nsame:\n  from: {type: scratch}\n',
      'b.yaml':
        'config:\n  prerequisites:\n    - ./a.yaml\ndifferent:\n  from: {type: built, tag: same}\nsame:\n  from: {type: built, tag: different}\n',
    });
    const e = await userErrorOfAsync(() => parseMany([join(root, 'b.yaml')]));
    expect(e.code).toBe(ErrorCodes.duplicateLayer);
    expect(e.place).toEqual({ file: join(root, 'b.yaml'), line: 6, col: 1, stanza: 'same' });
    expect(e.message).toBe(
      `${join(root, 'b.yaml')}:6:1: duplicate layer name "same": both ${join(root, 'a.yaml')} (at ${join(root, 'a.yaml')}:2:1) and ${join(root, 'b.yaml')} define it; layer names must be unique across all stacker files of a build, so rename one of them.`,
    );
    const e2 = await userErrorOfAsync(() =>
      parseMany([join(root, 'a.yaml'), join(root, 'b.yaml')], { followPrerequisites: false }),
    );
    expect(e2.message).toContain('duplicate layer name "same"');
  });

  it('the same file given twice is parsed once', async () => {
    const root = tree({ 's.yaml': 'x:\n  from: {type: scratch}\n' });
    const files = await parseMany([join(root, 's.yaml'), join(root, '.', 's.yaml')]);
    expect(files).toHaveLength(1);
  });

  it('a missing prerequisite is reported where it is named', async () => {
    const root = tree({
      'a.yaml': 'config:\n  prerequisites:\n    - ok.yaml\n    - missing.yaml\n',
      'ok.yaml': '',
    });
    const e = await userErrorOfAsync(() => parseMany([join(root, 'a.yaml')]));
    expect(e.code).toBe(ErrorCodes.prerequisite);
    expect(e.place).toEqual({
      file: join(root, 'a.yaml'),
      line: 4,
      col: 7,
      stanza: 'config',
      key: 'prerequisites[1]',
    });
    expect(e.message).toMatch(
      /^.*a\.yaml:4:7: couldn't read prerequisite .*missing\.yaml named in config\.prerequisites \(ENOENT.*\); fix the path, which is relative to this stacker file\.$/,
    );
  });

  it('substitutions apply to every file', async () => {
    const root = tree({
      'a.yaml': 'config: {prerequisites: [b.yaml]}\na:\n  from: {type: oci, url: "${{OCI}}:a"}\n',
      'b.yaml': 'b:\n  from: {type: oci, url: "${{OCI}}:b"}\n',
    });
    const files = await parseMany([join(root, 'a.yaml')], { substitutions: { OCI: '/o' } });
    expect(files.map((f) => f.layers[0].from.url)).toEqual(['/o:b', '/o:a']);
  });
});
