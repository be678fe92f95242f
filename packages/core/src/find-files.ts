import { opendir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { UserError } from '@stacker/plugin-api';

/** stacker's default `--stacker-file-pattern` for recursive-build. */
export const STACKER_FILE_PATTERN = '\\/stacker.yaml$';

/**
 * The files below `dir` whose path matches the regular expression `pattern`, as stacker's
 * recursive-build finds them: paths are `dir` joined with the relative name by `/`
 * (`./sub/stacker.yaml` for dir `.`), directories are walked in name order, symlinks are
 * not followed. Directories in `exclude` (stacker's own roots, OCI and stacker dirs) are
 * not entered.
 */
export async function findStackerFiles(
  dir: string,
  pattern: string,
  exclude: string[] = [],
): Promise<string[]> {
  const skip = new Set(exclude.map((e) => resolve(e)));
  let re: RegExp;
  try {
    re = new RegExp(pattern);
  } catch (e) {
    throw new UserError(
      'pattern',
      `--stacker-file-pattern ${pattern} is not a valid regular expression: ${(e as Error).message}`,
    );
  }
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let handle: Awaited<ReturnType<typeof opendir>>;
    try {
      handle = await opendir(d);
    } catch (e) {
      if (d === dir)
        throw new UserError('search-dir', `cannot read search dir ${dir}: ${(e as Error).message}`);
      return;
    }
    const entries: { name: string; dir: boolean; file: boolean }[] = [];
    for await (const e of handle) entries.push({ name: e.name, dir: e.isDirectory(), file: e.isFile() });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const p = d.endsWith('/') ? `${d}${e.name}` : `${d}/${e.name}`;
      if (e.dir) {
        if (!skip.has(resolve(p))) await walk(p);
      } else if (e.file && re.test(p)) out.push(p);
    }
  };
  await walk(dir);
  return out;
}
