// A registry killed in the middle of a push: the publish stops with one clear sentence and
// exit code 1, and once the registry is back (same storage, same port) the next publish
// completes and skopeo reads back exactly the local image.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStacker } from './crash-tools.js';
import {
  BUSYBOX_TAR,
  CLI,
  IS_ROOT,
  type Result,
  removeWorkdir,
  stacker,
  TEST_USER,
  workdir,
  write,
} from './harness.js';
import {
  haveRegistry,
  type Running,
  skopeo,
  startRegistry,
  stopRegistry,
  tagDigest,
} from './registry-server.js';

const BIG = 30 * 1024 * 1024;

function ok(r: Result, what: string): void {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}):\n${r.output}`);
}

/** Uploads the registry has started and not finished, in any repository. */
function uploadsInProgress(storage: string): string[] {
  const repos = join(storage, 'docker/registry/v2/repositories');
  const found: string[] = [];
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      if (e.name === '_uploads') for (const u of readdirSync(join(dir, e.name))) found.push(u);
      else if (!e.name.startsWith('_')) walk(join(dir, e.name));
    }
  };
  walk(repos);
  return found;
}

/**
 * `stacker ARGS` as the test user, asynchronously: `onStderr` sees its stderr as it comes
 * (to kill the registry at the right moment).
 */
function stackerAsync(
  args: string[],
  cwd: string,
  onStderr: (text: string) => void,
  extraEnv: Record<string, string> = {},
): Promise<Result> {
  const env = [
    'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    `HOME=${IS_ROOT ? `/home/${TEST_USER}` : (process.env.HOME ?? '/tmp')}`,
    'LANG=C.UTF-8',
    ...Object.entries(extraEnv).map(([k, v]) => `${k}=${v}`),
  ];
  const argv = ['env', '-i', ...env, process.execPath, CLI, ...args];
  const child = IS_ROOT
    ? spawn('runuser', ['-u', TEST_USER, '--', ...argv], { cwd })
    : spawn(argv[0], argv.slice(1), { cwd });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
    onStderr(stderr);
  });
  return new Promise((resolve) =>
    child.on('close', (code) => resolve({ code: code ?? 128, stdout, stderr, output: stdout + stderr })),
  );
}

describe.skipIf(!haveRegistry || !existsSync(BUSYBOX_TAR))('a registry killed mid-push', () => {
  let base: string;
  let dir: string;
  let registry: Running;

  beforeAll(async () => {
    base = workdir('stacker-e2e-registry-faults-');
    registry = await startRegistry(base, 'reg');
    dir = workdir();
    write(
      join(dir, 'stacker.yaml'),
      `big:\n  from:\n    type: tar\n    url: ${BUSYBOX_TAR}\n  run: head -c ${BIG} /dev/urandom > /big\n`,
    );
    ok(stacker(['build'], { cwd: dir }), 'build');
  });

  afterAll(async () => {
    if (registry) await stopRegistry(registry);
    for (const d of [dir, base]) if (d) removeWorkdir(d);
  });

  it('fails with one sentence and exit 1, and the next publish completes', async () => {
    const local = tagDigest(join(dir, 'oci'), 'big')!;
    const url = `docker://${registry.host}/faults`;
    const args = ['publish', '--url', url, '--tag', 'v1', '--skip-tls'];

    // kill -9 once the big layer's upload has started (the registry holds an upload for it)
    let killedWith: string[] | undefined;
    const first = await stackerAsync(args, dir, (stderr) => {
      if (killedWith || !/pushing blob sha256:[0-9a-f]{64} \((\d{8,}) bytes/.test(stderr)) return;
      killedWith = uploadsInProgress(registry.storage);
      registry.proc.kill('SIGKILL');
    });
    expect(killedWith, first.output).toBeDefined();
    expect(killedWith!.length).toBeGreaterThan(0);
    expect(first.code).toBe(1);
    const errors = first.stderr.split('\n').filter((l) => l.startsWith('error: '));
    expect(errors.length).toBe(1);
    expect(errors[0]).toMatch(
      new RegExp(
        `^error: registry ${registry.host.replace(/\./g, '\\.')} repository faults/big: pushing blob sha256:[0-9a-f]{64} failed after \\d+ attempts: .+\\.$`,
      ),
    );
    expect(first.stderr).not.toMatch(/\n\s+at /);
    await stopRegistry(registry); // reaped

    // the same storage and port: the abandoned upload is still in there
    registry = await startRegistry(base, 'reg', { port: registry.port });
    const second = await stackerAsync(args, dir, () => {});
    ok(second, 'publish after the restart');
    expect(second.output).toContain(`published big to docker://${registry.host}/faults/big:v1 (${local})`);

    const inspected = JSON.parse(
      skopeo(['inspect', '--tls-verify=false', `docker://${registry.host}/faults/big:v1`]),
    ) as { Digest: string; Layers: string[] };
    expect(inspected.Digest).toBe(local);
    const back = join(dir, 'back');
    skopeo(['copy', '--src-tls-verify=false', `docker://${registry.host}/faults/big:v1`, `oci:${back}:big`]);
    expect(tagDigest(back, 'big')).toBe(local);
  });

  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)('%s during a push stops the publish with exit %i', async (sig, want) => {
    // small PATCH chunks: the 30 MiB layer takes long enough to be interrupted
    const run = startStacker(
      ['publish', '--url', `docker://${registry.host}/signal-${want}`, '--tag', 'v1', '--skip-tls'],
      dir,
      { STACKER_REGISTRY_CHUNK_THRESHOLD: '64K', STACKER_REGISTRY_CHUNK_SIZE: '64K' },
    );
    await run.waitFor(/pushing blob sha256:[0-9a-f]{64} \(\d{8,} bytes/);
    process.kill(run.pid, sig);
    const ended = await run.exited;
    await run.drained();
    expect(ended.code, run.output()).toBe(want);
    expect(run.output()).toContain(`received ${sig}, stopping the publish`);
    expect(run.output()).not.toContain('published big');
    expect(run.output()).not.toMatch(/\n\s+at /);
  });

  it('a layer above STACKER_REGISTRY_CHUNK_THRESHOLD goes up in PATCH chunks and reads back the same', async () => {
    const local = tagDigest(join(dir, 'oci'), 'big')!;
    const log = join(registry.dir, 'registry.log');
    const before = readFileSync(log, 'utf8').length;
    const r = await stackerAsync(
      ['publish', '--url', `docker://${registry.host}/chunked`, '--tag', 'v1', '--skip-tls'],
      dir,
      () => {},
      { STACKER_REGISTRY_CHUNK_THRESHOLD: '4M', STACKER_REGISTRY_CHUNK_SIZE: '4M' },
    );
    ok(r, 'chunked publish');
    // the registry's access log: one PATCH per 4 MiB of the 30 MiB layer
    const patches = readFileSync(log, 'utf8')
      .slice(before)
      .split('\n')
      .filter((l) => /"PATCH \/v2\/chunked\/big\/blobs\/uploads\//.test(l));
    expect(patches.length).toBeGreaterThanOrEqual(8);
    const back = join(dir, 'back-chunked');
    skopeo(['copy', '--src-tls-verify=false', `docker://${registry.host}/chunked/big:v1`, `oci:${back}:big`]);
    expect(tagDigest(back, 'big')).toBe(local);
    const pushed = JSON.parse(
      skopeo(['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/chunked/big:v1`]),
    ) as { layers: Array<{ digest: string }> };
    const mine = JSON.parse(readFileSync(join(dir, 'oci', 'blobs', 'sha256', local.slice(7)), 'utf8')) as {
      layers: Array<{ digest: string }>;
    };
    expect(pushed.layers.map((l) => l.digest)).toEqual(mine.layers.map((l) => l.digest));
  });
});
