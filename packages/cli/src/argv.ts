/**
 * stacker's users put global flags before the command (`stacker --debug build -f x`);
 * oclif only accepts flags after it. Move every global flag found before the command to
 * just after it, keeping order, so both spellings parse the same.
 */
export const GLOBAL_VALUE_FLAGS = new Set([
  '--work-dir',
  '--stacker-dir',
  '--oci-dir',
  '--roots-dir',
  '--config',
  '--log-file',
  '--log-level',
  '--storage-type',
]);
export const GLOBAL_BOOL_FLAGS = new Set([
  '--debug',
  '--quiet',
  '-q',
  '--progress',
  '--no-progress',
  '--log-timestamp',
  '--json',
  '--internal-userns',
]);

export function normaliseArgv(argv: string[]): string[] {
  const moved: string[] = [];
  let i = 0;
  while (i < argv.length) {
    const a = argv[i];
    const name = a.includes('=') ? a.slice(0, a.indexOf('=')) : a;
    if (GLOBAL_BOOL_FLAGS.has(a)) {
      moved.push(a);
      i += 1;
    } else if (GLOBAL_VALUE_FLAGS.has(name)) {
      if (a.includes('=')) {
        moved.push(a);
        i += 1;
      } else {
        moved.push(a, argv[i + 1] ?? '');
        i += 2;
      }
    } else {
      break;
    }
  }
  if (moved.length === 0) return argv;
  const rest = argv.slice(i);
  if (rest.length === 0 || rest[0].startsWith('-')) {
    // no command: `stacker --debug` shows the command list; `--help`/`--version` pass through
    return rest.length === 0 ? [] : rest;
  }
  // `plugins …` are oclif's commands, which know none of stacker's global flags (they only
  // shape logs and storage): drop them rather than fail with "Nonexistent flag"
  if (rest[0] === 'plugins') return rest;
  return [rest[0], ...moved, ...rest.slice(1)];
}
