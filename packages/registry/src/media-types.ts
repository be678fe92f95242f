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

/** The platform of this machine in OCI's words (GOARCH names). */
export function hostPlatform(): { os: string; architecture: string } {
  const arch: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ia32: '386',
    ppc64: 'ppc64le',
    s390x: 's390x',
    riscv64: 'riscv64',
    loong64: 'loong64',
    mips: 'mips',
    mipsel: 'mipsle',
  };
  return {
    os: process.platform === 'win32' ? 'windows' : process.platform,
    architecture: arch[process.arch] ?? process.arch,
  };
}
