import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The script's file name, as stacker names it. */
export const RUN_SCRIPT_NAME = '.stacker-run.sh';

/** Where stacker runs it from inside the container. */
export const RUN_SCRIPT_PATH = `/stacker/${RUN_SCRIPT_NAME}`;

/**
 * The script stacker runs for a stanza's `run` lines: the lines joined; unless the first
 * starts with `#!`, `#!/bin/sh -xe` comes first (so every command is echoed and the first
 * failure stops the build).
 */
export function runScript(run: string | readonly string[]): string {
  const body = typeof run === 'string' ? run : run.join('\n');
  const script = body.startsWith('#!') ? body : `#!/bin/sh -xe\n${body}`;
  return script.endsWith('\n') ? script : `${script}\n`;
}

/** Write the run script into `dir` (the host directory seen as /stacker), executable. */
export async function writeRunScript(dir: string, run: string | readonly string[]): Promise<string> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, RUN_SCRIPT_NAME);
  await writeFile(path, runScript(run), { mode: 0o755 });
  await chmod(path, 0o755);
  return path;
}
