import { describe, expect, it } from 'vitest';
import { parseStackerText } from './stackerfile.js';
import { absolutify, dependenciesOf, parseStackerUrl } from './urls.js';

describe('parseStackerUrl', () => {
  it('splits layer and path', () => {
    expect(parseStackerUrl('stacker://build/usr/bin/app')).toEqual({ layer: 'build', path: '/usr/bin/app' });
    expect(parseStackerUrl('stacker://build')).toEqual({ layer: 'build', path: '' });
  });
  it('anything else is not a stacker URL', () => {
    expect(parseStackerUrl('stacker:///x')).toBeUndefined();
    expect(parseStackerUrl('https://x/y')).toBeUndefined();
    expect(parseStackerUrl('/stacker://x')).toBeUndefined();
  });
});

describe('absolutify', () => {
  it('resolves local paths against the directory and keeps URLs', () => {
    expect(absolutify('a/../b/', '/d')).toBe('/d/b/');
    expect(absolutify('./f', '/d')).toBe('/d/f');
    expect(absolutify('/abs', '/d')).toBe('/abs');
    expect(absolutify('http://h/p', '/d')).toBe('http://h/p');
    expect(absolutify('stacker://l/p', '/d')).toBe('stacker://l/p');
  });
});

describe('dependenciesOf', () => {
  it('names the built base and the stacker:// sources, once each', () => {
    const sf = parseStackerText(
      [
        'app:',
        '  from: {type: built, tag: base}',
        '  imports:',
        '    - stacker://build/bin/app',
        '    - path: stacker://build/etc/conf',
        '    - stacker://assets/www',
        '    - ./local',
        'fromtar:',
        '  from: {type: tar, url: "stacker://app/rootfs.tar"}',
        'plain:',
        '  from: {type: docker, url: "docker://alpine"}',
        '',
      ].join('\n'),
      '/p/stacker.yaml',
    );
    expect(sf.layers.map(dependenciesOf)).toEqual([
      { built: ['base'], stackerImports: ['build', 'assets'] },
      { built: [], stackerImports: ['app'] },
      { built: [], stackerImports: [] },
    ]);
  });
});
