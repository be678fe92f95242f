export { normaliseArgv } from './argv.js';
export { createLogger } from './logger.js';
export { OclifPluginRegistry } from './plugins.js';
export { resolveSettings, type Settings } from './settings.js';
export { formatOrder } from './order.js';
export { STACKER_VERSION } from './version.js';
