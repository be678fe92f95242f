import type { ImageConfig } from '@stacker/plugin-api';
import { describe, expect, it } from 'vitest';
import {
  buildImageConfig,
  buildManifest,
  type ConfigInputs,
  hostPlatform,
  isoTime,
  mergeEnv,
} from './image-config.js';

const host = hostPlatform();
// a platform that is surely not this machine's
const other = host.architecture === 's390x' ? 'riscv64' : 's390x';

const base: ImageConfig = {
  created: '2001-01-01T00:00:00Z',
  author: 'someone',
  architecture: other,
  os: 'freebsd',
  variant: 'v7',
  config: {
    User: 'nobody',
    ExposedPorts: { '80/tcp': {} },
    Env: ['PATH=/base/bin', 'A=base', 'B=base'],
    Entrypoint: ['/base-entry'],
    Cmd: ['/base-cmd', '--flag'],
    Volumes: { '/base-vol': {} },
    WorkingDir: '/base-wd',
    Labels: { a: 'base', keep: 'yes' },
    StopSignal: 'SIGQUIT',
  },
  rootfs: { type: 'layers', diff_ids: ['sha256:aaa'] },
  history: [{ created: '2001-01-01T00:00:00Z', created_by: 'base' }],
};

const none: ConfigInputs = { environment: {}, labels: {}, volumes: [] };
const meta = { created: '2020-09-13T12:26:40Z', createdBy: 'stacker build web', author: 'me@host' };

function build(
  s: Partial<ConfigInputs>,
  b: ImageConfig | undefined = base,
  layer = { diffId: 'sha256:bbb' },
) {
  return buildImageConfig(b, { ...none, ...s }, layer, meta);
}

describe('buildImageConfig', () => {
  it('sets Cmd and Entrypoint from the stanza', () => {
    const c = build({ cmd: ['/bin/app', '-v'], entrypoint: ['/bin/tini', '--'] });
    expect(c.config?.Cmd).toEqual(['/bin/app', '-v']);
    expect(c.config?.Entrypoint).toEqual(['/bin/tini', '--']);
  });

  it("does not inherit the base's Cmd or Entrypoint (stacker sets both from the stanza)", () => {
    const c = build({});
    expect(c.config).not.toHaveProperty('Cmd');
    expect(c.config).not.toHaveProperty('Entrypoint');
    expect(build({ cmd: ['/x'] }).config).not.toHaveProperty('Entrypoint');
  });

  it('full_command sets Entrypoint and clears Cmd, whatever cmd and entrypoint say', () => {
    const c = build({
      fullCommand: ['/bin/server', '--port', '80'],
      cmd: ['/ignored'],
      entrypoint: ['/ignored'],
    });
    expect(c.config?.Entrypoint).toEqual(['/bin/server', '--port', '80']);
    expect(c.config).not.toHaveProperty('Cmd');
  });

  it('runtime_user becomes User; without it the base user stays', () => {
    expect(build({ runtimeUser: '1000:1000' }).config?.User).toBe('1000:1000');
    expect(build({}).config?.User).toBe('nobody');
  });

  it("defaults os and architecture to this machine's, not the base image's", () => {
    const c = build({});
    expect(c.os).toBe(host.os);
    expect(c.architecture).toBe(host.architecture);
    // the base's arm variant does not describe this machine's architecture
    expect(c).not.toHaveProperty('variant');
    expect(buildImageConfig(undefined, none, undefined, meta).architecture).toBe(host.architecture);
  });

  it('os and arch in the stanza win', () => {
    const c = build({ os: 'windows', arch: 'arm64' });
    expect(c.os).toBe('windows');
    expect(c.architecture).toBe('arm64');
    // same architecture as the base: its variant still applies
    expect(build({ arch: other }).variant).toBe('v7');
  });

  it('merges environment (stanza wins, order kept), labels and volumes into the base', () => {
    const c = build({
      environment: { B: 'stanza', C: 'new' },
      labels: { a: 'stanza', z: 'new' },
      volumes: ['/data'],
    });
    expect(c.config?.Env).toEqual(['PATH=/base/bin', 'A=base', 'B=stanza', 'C=new']);
    expect(c.config?.Labels).toEqual({ a: 'stanza', keep: 'yes', z: 'new' });
    expect(c.config?.Volumes).toEqual({ '/base-vol': {}, '/data': {} });
  });

  it('adds a PATH when neither the base nor the stanza has one', () => {
    const c = buildImageConfig(undefined, { ...none, environment: { X: '1' } }, undefined, meta);
    expect(c.config?.Env).toEqual([
      'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'X=1',
    ]);
  });

  it('keeps the working dir, exposed ports and stop signal of the base unless the stanza sets working_dir', () => {
    const c = build({});
    expect(c.config?.WorkingDir).toBe('/base-wd');
    expect(c.config?.ExposedPorts).toEqual({ '80/tcp': {} });
    expect(c.config?.StopSignal).toBe('SIGQUIT');
    expect(build({ workingDir: '/app' }).config?.WorkingDir).toBe('/app');
  });

  it('appends the layer and a history entry with created and author', () => {
    const c = build({});
    expect(c.rootfs.diff_ids).toEqual(['sha256:aaa', 'sha256:bbb']);
    expect(c.created).toBe(meta.created);
    expect(c.author).toBe('me@host');
    expect(c.history).toEqual([
      { created: '2001-01-01T00:00:00Z', created_by: 'base' },
      { created: meta.created, created_by: 'stacker build web', author: 'me@host' },
    ]);
    const empty = buildImageConfig(base, none, undefined, meta);
    expect(empty.rootfs.diff_ids).toEqual(['sha256:aaa']);
    expect(empty.history?.at(-1)).toEqual({ ...c.history?.at(-1), empty_layer: true });
  });

  it('with SOURCE_DATE_EPOCH, created is that second and the author is stacker (as the engine passes it)', () => {
    const created = isoTime(1600000000);
    expect(created).toBe('2020-09-13T12:26:40Z');
    const c = buildImageConfig(
      base,
      none,
      { diffId: 'sha256:bbb' },
      { created, createdBy: 'x', author: 'stacker' },
    );
    expect(c.created).toBe('2020-09-13T12:26:40Z');
    expect(c.author).toBe('stacker');
    expect(c.history?.at(-1)).toMatchObject({ created: '2020-09-13T12:26:40Z', author: 'stacker' });
    expect(isoTime(undefined, new Date('2024-02-03T04:05:06.789Z'))).toBe('2024-02-03T04:05:06Z');
  });
});

describe('mergeEnv', () => {
  it('replaces by name and keeps entries without =', () => {
    expect(mergeEnv(['A=1', 'NOVAL', 'B=x=y'], { A: '2' })).toEqual(['A=2', 'NOVAL=', 'B=x=y']);
  });
});

describe('buildManifest', () => {
  it('carries the annotations sorted, and none when there are none', () => {
    const config = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: 'sha256:c', size: 1 };
    const m = buildManifest(config, [], {
      'z.user': 'mine',
      'io.stackeroci.stacker.stacker_version': '1.0.0',
    });
    expect(Object.keys(m.annotations ?? {})).toEqual(['io.stackeroci.stacker.stacker_version', 'z.user']);
    expect(m.annotations?.['z.user']).toBe('mine');
    expect(buildManifest(config, [], {})).not.toHaveProperty('annotations');
  });
});
