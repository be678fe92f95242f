export * from './chain.js';
export * from './dag.js';
export * from './diffid.js';
export * from './engine.js';
export * from './image-config.js';
export * from './imports.js';
export * from './lock.js';
export * from './registry.js';
