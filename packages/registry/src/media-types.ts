import { MEDIA_TYPES } from '@stacker/plugin-api';

/** What we ask registries for, best first. */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.manifest,
  MEDIA_TYPES.index,
  MEDIA_TYPES.dockerManifest,
  MEDIA_TYPES.dockerManifestList,
];

const SCHEMA1 = new Set([
  'application/vnd.docker.distribution.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
]);

export function isIndexMediaType(mediaType: string | undefined): boolean {
  return mediaType === MEDIA_TYPES.index || mediaType === MEDIA_TYPES.dockerManifestList;
}

export function isImageManifestMediaType(mediaType: string | undefined): boolean {
  return mediaType === MEDIA_TYPES.manifest || mediaType === MEDIA_TYPES.dockerManifest;
}

export function isSchema1(mediaType: string | undefined): boolean {
  return mediaType !== undefined && SCHEMA1.has(mediaType);
}

export { hostPlatform } from '@stacker/plugin-api';
