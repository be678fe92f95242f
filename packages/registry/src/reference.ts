import { badReference } from './errors.js';

/** A parsed `docker://host[:port]/repo[:tag|@sha256:...]`. */
export interface ImageReference {
  /** The registry as written (docker.io for Docker Hub names), used in messages and credentials. */
  registry: string;
  /** host[:port] requests go to (registry-1.docker.io for Docker Hub). */
  endpoint: string;
  /** Repository path, e.g. `library/busybox`. */
  repository: string;
  tag?: string;
  digest?: string;
}

export const DOCKER_HUB = 'docker.io';
export const DOCKER_HUB_ENDPOINT = 'registry-1.docker.io';

// The grammar of the distribution spec (and docker's reference package), written out.
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const HOST =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?$/;

/**
 * Parse `docker://NAME` (the prefix is optional). The first path component is a registry
 * when it has a `.` or `:` or is `localhost`, as docker decides; otherwise the name is on
 * Docker Hub, where single names get the `library/` prefix. A name without tag or digest
 * gets `latest` unless `allowBare` (publish destinations name only a repository prefix).
 */
export function parseImageReference(input: string, opts: { allowBare?: boolean } = {}): ImageReference {
  let rest = input.startsWith('docker://') ? input.slice('docker://'.length) : input;
  if (rest.length === 0) throw badReference(input, 'it names no repository');
  if (/^[a-z]+:\/\//i.test(rest)) throw badReference(input, 'only docker:// references name registry images');

  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw badReference(input, `${JSON.stringify(digest)} is not a sha256 digest`);
  }

  const slash = rest.indexOf('/');
  let registry = DOCKER_HUB;
  let path = rest;
  if (slash > 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[')) {
      registry = first;
      path = rest.slice(slash + 1);
    }
  }
  if (!HOST.test(registry)) throw badReference(input, `${JSON.stringify(registry)} is not a host[:port]`);

  let tag: string | undefined;
  const lastSlash = path.lastIndexOf('/');
  const colon = path.indexOf(':', lastSlash + 1);
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!TAG.test(tag)) throw badReference(input, `${JSON.stringify(tag)} is not a valid tag`);
  }
  path = path.replace(/\/+$/, '');
  if (path.length === 0) throw badReference(input, 'it names no repository');
  for (const c of path.split('/')) {
    if (!COMPONENT.test(c)) {
      throw badReference(
        input,
        `the repository component ${JSON.stringify(c)} must be lowercase letters, digits and separators (. _ -)`,
      );
    }
  }
  if (registry === DOCKER_HUB || registry === 'index.docker.io' || registry === DOCKER_HUB_ENDPOINT) {
    registry = DOCKER_HUB;
    if (!path.includes('/')) path = `library/${path}`;
  }
  if (tag === undefined && digest === undefined && !opts.allowBare) tag = 'latest';
  return {
    registry,
    endpoint: registry === DOCKER_HUB ? DOCKER_HUB_ENDPOINT : registry,
    repository: path,
    tag,
    digest,
  };
}

/** The tag or digest requests use: a digest wins over a tag when both are given. */
export function referenceOf(ref: ImageReference): string {
  const r = ref.digest ?? ref.tag;
  if (!r) throw badReference(formatReference(ref), 'it has no tag or digest');
  return r;
}

export function formatReference(ref: ImageReference): string {
  let s = `docker://${ref.registry}/${ref.repository}`;
  if (ref.tag) s += `:${ref.tag}`;
  if (ref.digest) s += `@${ref.digest}`;
  return s;
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}
