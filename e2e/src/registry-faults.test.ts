// A registry killed in the middle of a push: the publish stops with one clear sentence and
// exit code 1, and once the registry is back (same storage, same port) the next publish
// completes and skopeo reads back exactly the local image.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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
function stackerAsync(args: string[], cwd: string, onStderr: (text: string) => void): Promise<Result> {
  const env = [
    'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    `HOME=${IS_ROOT ? `/home/${TEST_USER}` : (process.env.HOME ?? '/tmp')}`,
    'LANG=C.UTF-8',
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
});
