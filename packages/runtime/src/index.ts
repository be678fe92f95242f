export * from './check.js';
export * from './errors.js';
export * from './runc.js';
export * from './script.js';
export * from './userns.js';
export { which } from './which.js';
