export * from './errors.js';
export * from './logger.js';
export * from './manifest.js';
export * from './oci-types.js';
export * from './platform.js';
export * from './source.js';
export * from './storage.js';
