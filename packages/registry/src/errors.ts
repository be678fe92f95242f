import { UserError } from '@stacker/plugin-api';

// Every error this package raises is made here: one sentence that names the registry, the
// repository and what happened, so that a user reading a build log knows where to look.

export const ERROR_CODES = {
  badReference: 'REGISTRY_BAD_REFERENCE',
  unauthorized: 'REGISTRY_UNAUTHORIZED',
  denied: 'REGISTRY_DENIED',
  manifestUnknown: 'REGISTRY_MANIFEST_UNKNOWN',
  blobUnknown: 'REGISTRY_BLOB_UNKNOWN',
  digestMismatch: 'REGISTRY_DIGEST_MISMATCH',
  sizeMismatch: 'REGISTRY_SIZE_MISMATCH',
  unreachable: 'REGISTRY_UNREACHABLE',
  tls: 'REGISTRY_TLS',
  badResponse: 'REGISTRY_BAD_RESPONSE',
  unsupported: 'REGISTRY_UNSUPPORTED',
  noPlatform: 'REGISTRY_NO_PLATFORM',
  credentials: 'REGISTRY_CREDENTIALS',
  publish: 'PUBLISH',
} as const;

/** Where a request went: `registry` as the user wrote it (host[:port]), and the repository. */
export interface Where {
  registry: string;
  repository: string;
}

function at(w: Where): string {
  return `registry ${w.registry} repository ${w.repository}`;
}

export function badReference(ref: string, why: string): UserError {
  return new UserError(
    ERROR_CODES.badReference,
    `${JSON.stringify(ref)} is not a valid image reference: ${why}.`,
  );
}

export function unauthorized(w: Where, what: string, tried: string, detail?: string): UserError {
  return new UserError(
    ERROR_CODES.unauthorized,
    `${at(w)}: ${what} was refused (401 unauthorized) with ${tried}${detail ? ` (${detail})` : ''}; check the username and password.`,
  );
}

export function denied(w: Where, what: string, status: number, tried: string, detail?: string): UserError {
  return new UserError(
    ERROR_CODES.denied,
    `${at(w)}: ${what} was denied (${status}) with ${tried}${detail ? ` (${detail})` : ''}.`,
  );
}

export function manifestUnknown(w: Where, reference: string): UserError {
  const what = reference.startsWith('sha256:') ? `manifest ${reference}` : `tag ${JSON.stringify(reference)}`;
  return new UserError(ERROR_CODES.manifestUnknown, `${at(w)} has no ${what} (404 not found).`);
}

export function blobUnknown(w: Where, digest: string): UserError {
  return new UserError(ERROR_CODES.blobUnknown, `${at(w)} has no blob ${digest} (404 not found).`);
}

export function digestMismatch(w: Where, what: string, expected: string, actual: string): UserError {
  return new UserError(
    ERROR_CODES.digestMismatch,
    `${at(w)}: the expected hash ${expected} of ${what} is different than the actual hash ${actual}; nothing was stored.`,
  );
}

export function sizeMismatch(w: Where, what: string, expected: number, actual: number): UserError {
  return new UserError(
    ERROR_CODES.sizeMismatch,
    `${at(w)}: ${what} should have ${expected} bytes but ${actual} arrived; nothing was stored.`,
  );
}

export function unreachable(w: Where, what: string, cause: string, attempts: number): UserError {
  return new UserError(
    ERROR_CODES.unreachable,
    `${at(w)}: ${what} failed after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${cause}.`,
  );
}

export function tlsFailure(w: Where, what: string, code: string, insecure = false): UserError {
  const hint = insecure
    ? 'the TLS handshake failed even without certificate verification, and plain http did not answer either; check that the address is the registry'
    : /WRONG_VERSION_NUMBER|PACKET_LENGTH|HTTP_REQUEST/.test(code)
      ? 'the registry does not seem to speak TLS; use --skip-tls (publish) or insecure: true (from:) to fall back to plain http'
      : 'its TLS certificate is not trusted; add its CA to the system store, or skip certificate verification with --skip-tls (publish) or insecure: true (from:)';
  return new UserError(ERROR_CODES.tls, `${at(w)}: ${what} failed (${code}): ${hint}.`);
}

export function badResponse(w: Where, what: string, why: string): UserError {
  return new UserError(ERROR_CODES.badResponse, `${at(w)}: ${what} failed: ${why}.`);
}

export function unsupported(w: Where, what: string): UserError {
  return new UserError(ERROR_CODES.unsupported, `${at(w)}: ${what}.`);
}

export function noPlatform(w: Where, reference: string, wanted: string, available: string[]): UserError {
  return new UserError(
    ERROR_CODES.noPlatform,
    `${at(w)}: ${reference} has no image for ${wanted} (it has ${available.length ? available.join(', ') : 'none'}).`,
  );
}

export function credentialsError(message: string): UserError {
  return new UserError(ERROR_CODES.credentials, message);
}

export function publishError(message: string): UserError {
  return new UserError(ERROR_CODES.publish, message);
}
