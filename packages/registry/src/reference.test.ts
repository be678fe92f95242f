import { describe, expect, it } from 'vitest';
import { formatReference, parseImageReference, referenceOf } from './reference.js';

describe('parseImageReference', () => {
  it('reads host:port, nested repositories and tags', () => {
    expect(parseImageReference('docker://127.0.0.1:5000/proj/busybox:v1')).toEqual({
      registry: '127.0.0.1:5000',
      endpoint: '127.0.0.1:5000',
      repository: 'proj/busybox',
      tag: 'v1',
      digest: undefined,
    });
  });

  it('defaults to Docker Hub, library/ and latest', () => {
    const r = parseImageReference('docker://busybox');
    expect(r).toMatchObject({
      registry: 'docker.io',
      endpoint: 'registry-1.docker.io',
      repository: 'library/busybox',
      tag: 'latest',
    });
    expect(parseImageReference('docker://ubuntu:22.04')).toMatchObject({
      repository: 'library/ubuntu',
      tag: '22.04',
    });
    expect(parseImageReference('docker://docker.io/alpine').repository).toBe('library/alpine');
    expect(parseImageReference('docker://user/app').repository).toBe('user/app');
    expect(parseImageReference('localhost/app')).toMatchObject({ registry: 'localhost', repository: 'app' });
  });

  it('takes digests, which win over tags', () => {
    const d = `sha256:${'a'.repeat(64)}`;
    const r = parseImageReference(`docker://quay.io/a/b:1.0@${d}`);
    expect(r).toMatchObject({ registry: 'quay.io', repository: 'a/b', tag: '1.0', digest: d });
    expect(referenceOf(r)).toBe(d);
    expect(formatReference(r)).toBe(`docker://quay.io/a/b:1.0@${d}`);
  });

  it('leaves the tag out for bare destinations', () => {
    expect(parseImageReference('docker://h:5000/proj', { allowBare: true }).tag).toBeUndefined();
  });

  it('rejects what is not a reference, saying why', () => {
    expect(() => parseImageReference('docker://h:5000/Proj/x')).toThrow(/"Proj" must be lowercase/);
    expect(() => parseImageReference('docker://h:5000/x:bad tag')).toThrow(/not a valid tag/);
    expect(() => parseImageReference('docker://h/x@sha256:12')).toThrow(/not a sha256 digest/);
    expect(() => parseImageReference('docker://')).toThrow(/names no repository/);
  });
});
