/**
 * What bin/run.js needs before it knows what to run, bundled into one CommonJS file
 * (dist/launch.cjs, see scripts/bundle.mjs): every start of stacker loads it, and one file
 * loads in a fraction of the time of the eight ES modules it is made of.
 */
export { reexecInUserNamespace } from '@stacker/runtime/userns';
export { normaliseArgv } from './argv.js';
export { needsNamespace } from './early.js';
export { loadBundle } from './fast-load.js';
export { FAST_COMMANDS, findFastPlugins } from './fast-path.js';
