import { isUserError } from '@stacker/plugin-api';

/** Runs `fn`, expects a UserError, returns what a test asserts on. */
export function userErrorOf(fn: () => unknown): {
  code: string;
  message: string;
  place: Record<string, unknown>;
} {
  try {
    fn();
  } catch (e) {
    if (!isUserError(e)) throw e;
    return { code: e.code, message: e.message, place: { ...e.place } };
  }
  throw new Error('expected a UserError, got none');
}

export async function userErrorOfAsync(
  fn: () => Promise<unknown>,
): Promise<{ code: string; message: string; place: Record<string, unknown> }> {
  try {
    await fn();
  } catch (e) {
    if (!isUserError(e)) throw e;
    return { code: e.code, message: e.message, place: { ...e.place } };
  }
  throw new Error('expected a UserError, got none');
}

/** Strips the common indentation of a template literal, so YAML in tests reads naturally. */
export function yaml(strings: TemplateStringsArray, ...values: unknown[]): string {
  let s = strings.reduce((acc, str, i) => acc + str + (i < values.length ? String(values[i]) : ''), '');
  s = s.replace(/^\n/, '');
  const indent = Math.min(
    ...s
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => /^ */.exec(l)![0].length),
  );
  return s
    .split('\n')
    .map((l) => l.slice(indent))
    .join('\n')
    .replace(/[ ]+$/, '');
}
