import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { credentialsError } from './errors.js';
import { DOCKER_HUB } from './reference.js';

export interface Credentials {
  username: string;
  password: string;
  /** Where they came from, for messages (never the password itself). */
  source: string;
}

export interface CredentialLookup {
  credentials?: Credentials;
  /** The files that were read, in order, for "no credentials found in ..." messages. */
  searched: string[];
}

/**
 * The credential files containers tools and docker read, in the order podman/skopeo use:
 * `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
 * `$XDG_CONFIG_HOME/containers/auth.json` (default ~/.config), then docker's
 * `$DOCKER_CONFIG/config.json` (default ~/.docker).
 */
export function credentialFiles(env: NodeJS.ProcessEnv = process.env): string[] {
  const home = env.HOME || homedir();
  const files: string[] = [];
  if (env.REGISTRY_AUTH_FILE) files.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) files.push(join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json'));
  files.push(join(env.XDG_CONFIG_HOME || join(home, '.config'), 'containers', 'auth.json'));
  files.push(join(env.DOCKER_CONFIG || join(home, '.docker'), 'config.json'));
  return [...new Set(files)];
}

/** `https://index.docker.io/v1/` -> `docker.io`; `http://host:5000/` -> `host:5000`. */
function normaliseKey(key: string): string {
  let k = key.trim().replace(/^[a-z]+:\/\//i, '');
  k = k.replace(/\/v[12]\/?$/, '').replace(/\/+$/, '');
  const slash = k.indexOf('/');
  const host = slash < 0 ? k : k.slice(0, slash);
  const rest = slash < 0 ? '' : k.slice(slash);
  if (host === 'index.docker.io' || host === 'registry-1.docker.io') return `${DOCKER_HUB}${rest}`;
  return k;
}

function decodeEntry(
  entry: unknown,
  file: string,
  key: string,
): { username: string; password: string } | undefined {
  if (!entry || typeof entry !== 'object') return undefined;
  const e = entry as { auth?: unknown; username?: unknown; password?: unknown };
  if (typeof e.auth === 'string' && e.auth.length > 0) {
    const text = Buffer.from(e.auth, 'base64').toString('utf8');
    const i = text.indexOf(':');
    if (i <= 0)
      throw credentialsError(`${file}: the "auth" of ${key} is not base64 of USER:PASSWORD; log in again`);
    return { username: text.slice(0, i), password: text.slice(i + 1) };
  }
  if (typeof e.username === 'string' && typeof e.password === 'string' && e.username) {
    return { username: e.username, password: e.password };
  }
  return undefined;
}

/** The server name docker hands its credential helpers: Docker Hub's legacy URL, else host[:port]. */
function helperServer(registry: string): string {
  return registry === DOCKER_HUB ? 'https://index.docker.io/v1/' : registry;
}

/**
 * Ask `docker-credential-<helper> get` (docker's credential helper protocol: the server on
 * stdin, `{"Username": ..., "Secret": ...}` on stdout) for `registry`. Undefined when the
 * helper has none; `missing` when the helper is not installed.
 */
function fromHelper(
  helper: string,
  registry: string,
  file: string,
  env: NodeJS.ProcessEnv,
): { username: string; password: string } | undefined | 'missing' {
  const bin = `docker-credential-${helper}`;
  let out: string;
  try {
    out = execFileSync(bin, ['get'], {
      input: helperServer(registry),
      encoding: 'utf8',
      env,
      timeout: 60_000,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { status?: number | null; stdout?: string; stderr?: string };
    if (err.code === 'ENOENT') return 'missing';
    const text = `${err.stdout ?? ''}\n${err.stderr ?? ''}`.trim();
    if (/credentials not found/i.test(text)) return undefined;
    const how =
      err.status !== undefined && err.status !== null ? `exit ${err.status}` : (err.code ?? 'failed');
    throw credentialsError(
      `the credential helper ${bin} (named in ${file}) failed for ${registry} (${how}${text ? `: ${text.split('\n')[0]}` : ''}); check it, or log in again`,
    );
  }
  let v: { Username?: unknown; Secret?: unknown };
  try {
    v = JSON.parse(out);
  } catch {
    throw credentialsError(
      `the credential helper ${bin} (named in ${file}) answered for ${registry} with something that is not JSON`,
    );
  }
  if (typeof v?.Secret !== 'string' || v.Secret === '') return undefined;
  // `<token>` is docker's marker for an identity token, which token servers take as a password too
  return { username: typeof v.Username === 'string' ? v.Username : '', password: v.Secret };
}

/**
 * Credentials for `registry` (host[:port] as written, docker.io for Docker Hub) and
 * `repository`: explicit ones win; else the first file that has some, where in each file a
 * credential helper named for the registry (`credHelpers`) comes first, then the default
 * helper (`credsStore`), then the stored entries (`auths`), among which one for
 * `registry/namespace` (containers' per-repository form) beats one for the registry.
 * A helper named for this registry that is not installed is an error; a missing default
 * helper is passed over (an anonymous pull must not fail for it).
 */
export function findCredentials(
  registry: string,
  repository: string,
  opts: { username?: string; password?: string; files?: string[]; env?: NodeJS.ProcessEnv } = {},
): CredentialLookup {
  if (opts.username !== undefined || opts.password !== undefined) {
    if (!opts.username || opts.password === undefined) {
      throw credentialsError('supply both username and password, or none of them');
    }
    return {
      credentials: { username: opts.username, password: opts.password, source: '--username/--password' },
      searched: [],
    };
  }
  const env = opts.env ?? process.env;
  const files = opts.files ?? credentialFiles(opts.env);
  const searched: string[] = [];
  const wanted = `${registry}/${repository}`;
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    searched.push(file);
    let parsed: {
      auths?: Record<string, unknown>;
      credHelpers?: Record<string, unknown>;
      credsStore?: unknown;
    };
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw credentialsError(`${file} is not valid JSON (${(e as Error).message}); fix or remove it`);
    }
    const helpers = parsed?.credHelpers && typeof parsed.credHelpers === 'object' ? parsed.credHelpers : {};
    const named = Object.entries(helpers).find(
      ([k, v]) => normaliseKey(k) === registry && typeof v === 'string',
    );
    if (named) {
      const helper = named[1] as string;
      const c = fromHelper(helper, registry, file, env);
      if (c === 'missing')
        throw credentialsError(
          `${file} names the credential helper docker-credential-${helper} for ${registry} (credHelpers), but it is not installed (not on PATH); install it, or remove that entry`,
        );
      if (c) return { credentials: { ...c, source: `${file} (docker-credential-${helper})` }, searched };
    }
    if (typeof parsed?.credsStore === 'string' && parsed.credsStore) {
      const c = fromHelper(parsed.credsStore, registry, file, env);
      if (c && c !== 'missing')
        return {
          credentials: { ...c, source: `${file} (docker-credential-${parsed.credsStore})` },
          searched,
        };
    }
    const auths = parsed?.auths;
    if (!auths || typeof auths !== 'object') continue;
    let best: { key: string; len: number } | undefined;
    for (const key of Object.keys(auths)) {
      const k = normaliseKey(key);
      const matches =
        k === registry || (k.startsWith(`${registry}/`) && (wanted === k || wanted.startsWith(`${k}/`)));
      if (matches && (!best || k.length > best.len)) best = { key, len: k.length };
    }
    if (!best) continue;
    const c = decodeEntry(auths[best.key], file, best.key);
    if (c) return { credentials: { ...c, source: file }, searched };
  }
  return { searched };
}

/** How credentials are described in errors: the user and the place, never the password. */
export function describeCredentials(lookup: CredentialLookup): string {
  if (lookup.credentials)
    return `the credentials of user ${JSON.stringify(lookup.credentials.username)} from ${lookup.credentials.source}`;
  if (lookup.searched.length === 0) return 'no credentials (none given and no credential file found)';
  return `no credentials (none for this registry in ${lookup.searched.join(', ')})`;
}

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parse a `WWW-Authenticate` header: `Bearer realm="...",service="...",scope="a:b:pull,push"`
 * (quoted values may hold commas). Several challenges in one header are split at a scheme.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const s = header;
  const skipWs = () => {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t' || s[i] === ',')) i++;
  };
  while (i < s.length) {
    skipWs();
    const m = /^[A-Za-z][A-Za-z0-9._~+/-]*/.exec(s.slice(i));
    if (!m) break;
    const word = m[0];
    i += word.length;
    // a token followed by `=` is a parameter of the current challenge, else a new scheme
    let j = i;
    while (j < s.length && s[j] === ' ') j++;
    if (s[j] === '=' && out.length > 0) {
      i = j + 1;
      while (i < s.length && s[i] === ' ') i++;
      let value = '';
      if (s[i] === '"') {
        i++;
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++;
          value += s[i++];
        }
        i++;
      } else {
        const v = /^[^,\s]*/.exec(s.slice(i))![0];
        value = v;
        i += v.length;
      }
      out[out.length - 1].params[word.toLowerCase()] = value;
    } else {
      out.push({ scheme: word.toLowerCase(), params: {} });
    }
  }
  return out;
}
