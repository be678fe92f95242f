import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The version of this stacker, from the cli package.json (found from wherever this code
 * was bundled into). */
export const STACKER_VERSION: string = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pj = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
      if (pj.name === '@stacker/cli') return String(pj.version);
    } catch {
      /* not here */
    }
    dir = dirname(dir);
  }
  return 'unknown';
})();
