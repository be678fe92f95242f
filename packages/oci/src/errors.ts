import { UserError } from '@stacker/plugin-api';

// Every error this package raises for bad or corrupt input is made here, so that codes and
// wording stay consistent. Anything thrown elsewhere is a bug (or an OS error passed on).

export const ERROR_CODES = {
  badDigest: 'OCI_BAD_DIGEST',
  digestMismatch: 'OCI_DIGEST_MISMATCH',
  sizeMismatch: 'OCI_SIZE_MISMATCH',
  blobMissing: 'OCI_BLOB_MISSING',
  notALayout: 'OCI_NOT_A_LAYOUT',
  badIndex: 'OCI_BAD_INDEX',
  badJson: 'OCI_BAD_JSON',
  tagNotFound: 'OCI_TAG_NOT_FOUND',
  badTag: 'OCI_BAD_TAG',
  badManifest: 'OCI_BAD_MANIFEST',
  badTar: 'OCI_BAD_TAR',
  layerTooBig: 'OCI_LAYER_TOO_BIG',
  noSpace: 'OCI_NO_SPACE',
  unsafePath: 'OCI_UNSAFE_PATH',
  badChanges: 'OCI_BAD_CHANGES',
  fileChanged: 'OCI_FILE_CHANGED',
  chownFailed: 'OCI_CHOWN_FAILED',
} as const;

export function badDigest(digest: string): UserError {
  return new UserError(
    ERROR_CODES.badDigest,
    `digest ${JSON.stringify(digest)} is not valid: expected sha256:<64 hex digits>.`,
  );
}

export function digestMismatch(what: string, expected: string, actual: string): UserError {
  return new UserError(
    ERROR_CODES.digestMismatch,
    `the expected hash ${expected} of ${what} is different than the actual hash ${actual}.`,
  );
}

export function sizeMismatch(what: string, expected: number, actual: number): UserError {
  return new UserError(
    ERROR_CODES.sizeMismatch,
    `${what} has ${actual} bytes but ${expected} were expected.`,
  );
}

export function blobMissing(digest: string, dir: string): UserError {
  return new UserError(ERROR_CODES.blobMissing, `blob ${digest} is missing from the OCI layout ${dir}.`);
}

export function notALayout(dir: string, why: string): UserError {
  return new UserError(
    ERROR_CODES.notALayout,
    `${dir} is not an OCI image layout (${why}); create one with OciLayout.init.`,
  );
}

export function badIndex(dir: string, why: string): UserError {
  return new UserError(ERROR_CODES.badIndex, `index.json of the OCI layout ${dir} is corrupt: ${why}.`);
}

export function badJson(digest: string, why: string): UserError {
  return new UserError(ERROR_CODES.badJson, `blob ${digest} is not valid JSON: ${why}.`);
}

export function tagNotFound(tag: string, dir: string): UserError {
  return new UserError(
    ERROR_CODES.tagNotFound,
    `tag ${JSON.stringify(tag)} is not in the OCI layout ${dir}.`,
  );
}

export function badTag(tag: string): UserError {
  return new UserError(
    ERROR_CODES.badTag,
    `tag ${JSON.stringify(tag)} is not valid: it must be non-empty and contain no whitespace or control characters.`,
  );
}

export function badManifest(digest: string, why: string): UserError {
  return new UserError(ERROR_CODES.badManifest, `manifest ${digest} is not a usable image manifest: ${why}.`);
}

export function badTar(why: string): UserError {
  return new UserError(ERROR_CODES.badTar, `the layer tar is corrupt: ${why}.`);
}

export function layerTooBig(what: string, limit: number, envVar: string): UserError {
  return new UserError(
    ERROR_CODES.layerTooBig,
    `the layer tar is too big: ${what}, over the limit of ${limit}; if the layer is genuine, raise the limit with ${envVar}.`,
  );
}

export function noSpace(dir: string, cause: unknown): UserError {
  return new UserError(
    ERROR_CODES.noSpace,
    `no space left on the file system of the OCI layout ${dir} while writing a blob; nothing was stored: free some space or choose another --oci-dir.`,
    {},
    { cause },
  );
}

export function unsafePath(name: string, why: string): UserError {
  return new UserError(ERROR_CODES.unsafePath, `refusing layer entry ${JSON.stringify(name)}: ${why}.`);
}

export function badChanges(why: string): UserError {
  return new UserError(ERROR_CODES.badChanges, `the change list is not usable for a layer: ${why}.`);
}

export function fileChanged(path: string): UserError {
  return new UserError(
    ERROR_CODES.fileChanged,
    `${path} changed size while it was being written into a layer; retry when nothing writes to it.`,
  );
}

export function chownFailed(path: string, uid: number, gid: number, cause: unknown): UserError {
  return new UserError(
    ERROR_CODES.chownFailed,
    `cannot set owner ${uid}:${gid} on ${path}: the id is not mapped in this user namespace (check /etc/subuid and /etc/subgid).`,
    {},
    { cause },
  );
}
