import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { credentialFiles, describeCredentials, findCredentials, parseChallenges } from './credentials.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('credentials', () => {
  const dir = mkdtempSync(join(tmpdir(), 'creds-'));
  const docker = join(dir, 'docker.json');
  const containers = join(dir, 'auth.json');
  writeFileSync(
    docker,
    JSON.stringify({
      auths: {
        'https://index.docker.io/v1/': { auth: b64('hubuser:hubpass') },
        'reg.example:5000': { auth: b64('alice:s3cr:et') },
        'other.example': { username: 'bob', password: 'pw' },
      },
    }),
  );
  writeFileSync(
    containers,
    JSON.stringify({
      auths: {
        'reg.example:5000/team': { auth: b64('team:teampw') },
        'http://plain.example/': { auth: b64('p:q') },
      },
    }),
  );
  const files = [containers, docker];

  it('reads base64 auth, username/password and docker hub keys', () => {
    expect(findCredentials('docker.io', 'library/busybox', { files }).credentials).toMatchObject({
      username: 'hubuser',
      password: 'hubpass',
    });
    expect(findCredentials('reg.example:5000', 'x/y', { files }).credentials).toMatchObject({
      username: 'alice',
      password: 's3cr:et',
      source: docker,
    });
    expect(findCredentials('other.example', 'x', { files }).credentials).toMatchObject({
      username: 'bob',
      password: 'pw',
    });
    expect(findCredentials('plain.example', 'x', { files }).credentials?.username).toBe('p');
  });

  it('prefers a per-namespace entry and the earlier file', () => {
    expect(findCredentials('reg.example:5000', 'team/app', { files }).credentials).toMatchObject({
      username: 'team',
      source: containers,
    });
    expect(findCredentials('reg.example:5000', 'teamx/app', { files }).credentials?.username).toBe('alice');
  });

  it('explicit credentials win; half of them is an error', () => {
    expect(
      findCredentials('reg.example:5000', 'x', { files, username: 'u', password: 'p' }).credentials?.source,
    ).toBe('--username/--password');
    expect(() => findCredentials('r', 'x', { username: 'u' })).toThrow(/both username and password/);
  });

  it('describes credentials without the password', () => {
    const l = findCredentials('reg.example:5000', 'x/y', { files });
    expect(describeCredentials(l)).toBe(`the credentials of user "alice" from ${docker}`);
    expect(describeCredentials(l)).not.toContain('s3cr');
    expect(describeCredentials(findCredentials('none.example', 'x', { files }))).toContain(
      'no credentials (none for this registry in',
    );
  });

  it('knows the standard files', () => {
    expect(credentialFiles({ HOME: '/h', XDG_RUNTIME_DIR: '/run/user/1' })).toEqual([
      '/run/user/1/containers/auth.json',
      '/h/.config/containers/auth.json',
      '/h/.docker/config.json',
    ]);
  });
});

describe('parseChallenges', () => {
  it('parses bearer parameters with commas inside quotes', () => {
    expect(
      parseChallenges(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
      ),
    ).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.example/token',
          service: 'registry.example',
          scope: 'repository:a/b:pull,push',
        },
      },
    ]);
  });
  it('parses basic and several challenges', () => {
    expect(parseChallenges('Basic realm="Registry Realm", Bearer realm="x"')).toEqual([
      { scheme: 'basic', params: { realm: 'Registry Realm' } },
      { scheme: 'bearer', params: { realm: 'x' } },
    ]);
  });
});
