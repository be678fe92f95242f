export { normaliseArgv } from './argv.js';
export { createLogger } from './logger.js';
export { formatOrder } from './order.js';
export { OclifPluginRegistry } from './plugins.js';
export { resolveSettings, type Settings } from './settings.js';
export { STACKER_VERSION } from './version.js';
