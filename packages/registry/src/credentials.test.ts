import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
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

describe('docker credential helpers', () => {
  // A fake helper speaking docker's protocol: the server on stdin, JSON on stdout; it logs
  // what it was asked, knows two servers, and fails loudly for a third.
  const dir = mkdtempSync(join(tmpdir(), 'creds-helpers-'));
  const asked = join(dir, 'asked');
  const helper = (name: string, body: string) => {
    const p = join(dir, `docker-credential-${name}`);
    writeFileSync(p, `#!/bin/sh\nread server\necho "${name} $1 $server" >> ${asked}\n${body}\n`);
    chmodSync(p, 0o755);
  };
  helper(
    'fake',
    `case "$server" in
  reg.example:5000) echo '{"ServerURL":"reg.example:5000","Username":"helped","Secret":"h-pw"}' ;;
  https://index.docker.io/v1/) echo '{"Username":"hub","Secret":"hub-pw"}' ;;
  broken.example) echo 'keychain locked' >&2; exit 2 ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac`,
  );
  helper('store', `echo '{"Username":"stored","Secret":"st-pw"}'`);
  const env = { PATH: `${dir}:/usr/bin:/bin` };
  const config = (name: string, v: unknown) => {
    const p = join(dir, name);
    writeFileSync(p, JSON.stringify(v));
    return p;
  };
  const helpers = config('helpers.json', {
    credHelpers: {
      'reg.example:5000': 'fake',
      'docker.io': 'fake',
      'broken.example': 'fake',
      'gone.example': 'nope',
    },
    auths: { 'other.example': { auth: b64('plain:pw') }, 'reg.example:5000': { auth: b64('stale:pw') } },
  });

  it('asks the helper named for the registry, before the stored entries', () => {
    const l = findCredentials('reg.example:5000', 'team/app', { files: [helpers], env });
    expect(l.credentials).toEqual({
      username: 'helped',
      password: 'h-pw',
      source: `${helpers} (docker-credential-fake)`,
    });
    expect(readFileSync(asked, 'utf8')).toContain('fake get reg.example:5000\n');
    // Docker Hub is asked for under its legacy server URL
    expect(
      findCredentials('docker.io', 'library/busybox', { files: [helpers], env }).credentials,
    ).toMatchObject({
      username: 'hub',
      password: 'hub-pw',
    });
    expect(readFileSync(asked, 'utf8')).toContain('fake get https://index.docker.io/v1/\n');
    // a registry without a helper still reads auths
    expect(findCredentials('other.example', 'x', { files: [helpers], env }).credentials?.username).toBe(
      'plain',
    );
  });

  it('a helper that has nothing, fails, or is not installed', () => {
    const store = config('store.json', {
      credsStore: 'fake',
      auths: { 'x.example': { auth: b64('fallback:pw') } },
    });
    // "credentials not found": the file's stored entry is next
    expect(findCredentials('x.example', 'r', { files: [store], env }).credentials?.username).toBe('fallback');
    const broken = (() => {
      try {
        findCredentials('broken.example', 'r', { files: [helpers], env });
      } catch (e) {
        return e as Error & { code: string };
      }
      return undefined;
    })();
    expect(broken?.message).toBe(
      `the credential helper docker-credential-fake (named in ${helpers}) failed for broken.example (exit 2: keychain locked); check it, or log in again`,
    );
    expect(() => findCredentials('gone.example', 'r', { files: [helpers], env })).toThrow(
      `${helpers} names the credential helper docker-credential-nope for gone.example (credHelpers), but it is not installed (not on PATH); install it, or remove that entry`,
    );
    // a default store that is not installed is passed over
    const noStore = config('nostore.json', {
      credsStore: 'desktop',
      auths: { 'x.example': { auth: b64('f2:pw') } },
    });
    expect(findCredentials('x.example', 'r', { files: [noStore], env }).credentials?.username).toBe('f2');
  });

  it('the default store answers for every registry without its own helper', () => {
    const store = config('store2.json', { credsStore: 'store', credHelpers: { 'reg.example:5000': 'fake' } });
    expect(findCredentials('any.example', 'r', { files: [store], env }).credentials).toMatchObject({
      username: 'stored',
      source: `${store} (docker-credential-store)`,
    });
    expect(findCredentials('reg.example:5000', 'r', { files: [store], env }).credentials?.username).toBe(
      'helped',
    );
  });
});
