import { describe, expect, it } from 'vitest';
import { orderFiles, planBuild } from './dag.js';

describe('planBuild', () => {
  it('orders built chains and stacker:// imports, with parallel waves', () => {
    const plan = planBuild([
      { name: 'web', baseTag: 'centos', stackerImports: ['stacker://tools/bin/x'] },
      { name: 'centos', stackerImports: [] },
      { name: 'tools', baseTag: 'centos', stackerImports: [] },
      { name: 'boot', baseTag: 'centos', stackerImports: [] },
    ]);
    expect(plan.order).toEqual(['centos', 'tools', 'boot', 'web']);
    expect(plan.waves).toEqual([['centos'], ['tools', 'boot'], ['web']]);
    expect(plan.needs.get('web')).toEqual(['centos', 'tools']);
  });

  it('reports a missing base in stacker words', () => {
    const lines: string[] = [];
    expect(() =>
      planBuild([{ name: 'test', baseTag: 'notatag', stackerImports: [] }], { info: (m) => lines.push(m) }),
    ).toThrow(/couldn't resolve some dependencies/);
    expect(lines).toEqual(["couldn't find dependencies for test: base layer notatag"]);
  });

  it('lists missing stacker:// imports before the base', () => {
    const lines: string[] = [];
    expect(() =>
      planBuild([{ name: 'test', stackerImports: ['stacker://foo/bar', 'stacker://baz/foo'] }], {
        info: (m) => lines.push(m),
      }),
    ).toThrow(/no stanza named foo, baz/);
    expect(lines).toEqual(["couldn't find dependencies for test: stacker://foo/bar, stacker://baz/foo"]);
  });

  it('rejects cycles naming every stanza in them', () => {
    let err: Error | undefined;
    try {
      planBuild([
        { name: 'a', baseTag: 'b', stackerImports: [] },
        { name: 'b', baseTag: 'a', stackerImports: [] },
        { name: 'c', stackerImports: [] },
      ]);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toBe(
      "couldn't resolve some dependencies (a dependency cycle): couldn't find dependencies for a: base layer b; couldn't find dependencies for b: base layer a",
    );
  });
});

describe('orderFiles', () => {
  it('puts prerequisites first and detects loops', () => {
    expect(
      orderFiles([
        { path: '/a', prerequisites: ['/b'] },
        { path: '/b', prerequisites: ['/c'] },
        { path: '/c', prerequisites: [] },
      ]),
    ).toEqual(['/c', '/b', '/a']);
    expect(() =>
      orderFiles([
        { path: '/a', prerequisites: ['/b'] },
        { path: '/b', prerequisites: ['/a'] },
      ]),
    ).toThrow('stacker files require each other: /a -> /b -> /a');
  });
});

describe('planBuild across files', () => {
  it('treats stanzas of earlier files as built', () => {
    const plan = planBuild(
      [{ name: 'app', baseTag: 'base', stackerImports: ['stacker://tools/x'] }],
      undefined,
      new Set(['base', 'tools']),
    );
    expect(plan.order).toEqual(['app']);
    expect(plan.needs.get('app')).toEqual([]);
  });
});
