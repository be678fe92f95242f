import { readFileSync } from 'node:fs';

/** The version of this stacker, from the cli package.json. */
export const STACKER_VERSION: string = (() => {
  try {
    const pj = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
    return String(pj.version);
  } catch {
    return 'unknown';
  }
})();
