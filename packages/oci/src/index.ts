export * from './changes.js';
export { canonicalJson, digestHex, isDigest, sha256Digest, HashingStream } from './digest.js';
export { ERROR_CODES } from './errors.js';
export * from './layer-writer.js';
export * from './layout.js';
export * from './tar-header.js';
export * from './tar-reader.js';
export * from './unpack.js';
export { capabilityToV2, isLayerXattr, readLayerXattrs } from './xattrs.js';
