// A real registry for the e2e tests: Debian's docker-registry (distribution 2.8) on
// 127.0.0.1 with filesystem storage, open or behind htpasswd basic auth, plus the skopeo
// and layout helpers the registry tests share.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

export const REGISTRY_BIN = '/usr/bin/docker-registry';
export const haveRegistry = existsSync(REGISTRY_BIN);

export interface Running {
  port: number;
  host: string;
  proc: ChildProcess;
  /** Holds config.yml, registry.log and storage/. */
  dir: string;
  /** The filesystem storage root. */
  storage: string;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** A bcrypt line for htpasswd: htpasswd itself when apache2-utils is there, else Python's crypt. */
export function htpasswdLine(user: string, password: string): string | undefined {
  const h = spawnSync('htpasswd', ['-Bbn', user, password], { encoding: 'utf8' });
  if (h.status === 0 && h.stdout.includes('$2')) return h.stdout.trim();
  const py = spawnSync(
    'python3',
    [
      '-W',
      'ignore',
      '-c',
      'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))',
      password,
    ],
    { encoding: 'utf8' },
  );
  if (py.status === 0 && py.stdout.startsWith('$2')) return `${user}:${py.stdout.trim()}`;
  return undefined;
}

/**
 * Start a registry in `base/name` (storage in `base/name/storage`), on `port` or a free
 * one; starting it again with the same name and port serves the same storage.
 */
export async function startRegistry(
  base: string,
  name: string,
  opts: { htpasswd?: string; port?: number } = {},
): Promise<Running> {
  const dir = join(base, name);
  const storage = join(dir, 'storage');
  mkdirSync(storage, { recursive: true });
  const port = opts.port ?? (await freePort());
  let config = `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
  secret: e2e-${name}
`;
  if (opts.htpasswd) {
    writeFileSync(join(dir, 'htpasswd'), `${opts.htpasswd}\n`);
    config += `auth:
  htpasswd:
    realm: e2e-realm
    path: ${join(dir, 'htpasswd')}
`;
  }
  writeFileSync(join(dir, 'config.yml'), config);
  const out = openSync(join(dir, 'registry.log'), 'a');
  const proc = spawn(REGISTRY_BIN, ['serve', join(dir, 'config.yml')], { stdio: ['ignore', out, out] });
  const host = `127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    if (proc.exitCode !== null) break;
    try {
      const res = await fetch(`http://${host}/v2/`);
      if (res.status === 200 || res.status === 401) return { port, host, proc, dir, storage };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill('SIGTERM');
  throw new Error(`docker-registry did not start: ${readFileSync(join(dir, 'registry.log'), 'utf8')}`);
}

/** Stop a registry and wait until it is gone (its port free again). */
export async function stopRegistry(r: Running, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (r.proc.exitCode !== null || r.proc.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => r.proc.once('exit', () => resolve()));
  r.proc.kill(signal);
  await gone;
}

export function skopeo(args: string[]): string {
  return execFileSync('skopeo', ['--insecure-policy', ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** The manifest digest `tag` has in the OCI layout at `layoutDir`. */
export function tagDigest(layoutDir: string, tag: string): string | undefined {
  const index = JSON.parse(readFileSync(join(layoutDir, 'index.json'), 'utf8')) as {
    manifests: Array<{ digest: string; annotations?: Record<string, string> }>;
  };
  return index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag)?.digest;
}
