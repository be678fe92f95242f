/**
 * Decided before oclif loads (it costs a second here): does this invocation need the user
 * namespace? Then the process re-executes itself inside it straight away, and only the
 * child pays for loading the CLI.
 */
const NEEDS_NAMESPACE = new Set(['build', 'recursive-build', 'chroot', 'exec', 'grab', 'clean']);
const NO_NAMESPACE_FLAGS = new Set(['--order-only', '--help', '-h', '--show-only']);

export function needsNamespace(argv: string[]): boolean {
  const cmd = argv.find((a) => !a.startsWith('-'));
  if (cmd === undefined || !NEEDS_NAMESPACE.has(cmd)) return false;
  return !argv.some((a) => NO_NAMESPACE_FLAGS.has(a));
}
