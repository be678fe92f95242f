export {
  type BlobProgress,
  formatBytes,
  type ProgressListener,
  type PushResult,
  type RawManifest,
  RegistryClient,
  type RegistryClientOptions,
  type ResolvedImage,
} from './client.js';
export {
  type BlobSource,
  copyToLayout,
  type LayoutTarget,
  type PulledImage,
  type PushSummary,
  pullImage,
  pushImage,
} from './copy.js';
export {
  type Challenge,
  type CredentialLookup,
  type Credentials,
  credentialFiles,
  describeCredentials,
  findCredentials,
  parseChallenges,
} from './credentials.js';
export { ERROR_CODES } from './errors.js';
export { hostPlatform, isImageManifestMediaType, isIndexMediaType, MANIFEST_ACCEPT } from './media-types.js';
export {
  layerTypeName,
  type Published,
  type PublishFile,
  type PublishOptions,
  type PublishSource,
  publish,
} from './publish.js';
export {
  DOCKER_HUB,
  DOCKER_HUB_ENDPOINT,
  formatReference,
  type ImageReference,
  isValidTag,
  parseImageReference,
  referenceOf,
} from './reference.js';
