/**
 * Errors the user can fix (bad input, missing setup) carry a code and, where known, the
 * place they come from. The host prints them as one sentence and exits 1; anything else is
 * a bug and gets a stack trace under --debug. Checked by shape, never with instanceof:
 * every plugin has its own copy of this package.
 */
export interface Place {
  file?: string;
  line?: number;
  col?: number;
  stanza?: string;
  key?: string;
}

export class UserError extends Error {
  readonly userError = true;
  constructor(
    readonly code: string,
    message: string,
    readonly place: Place = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'UserError';
  }
}

export function isUserError(e: unknown): e is UserError {
  return typeof e === 'object' && e !== null && (e as { userError?: unknown }).userError === true;
}

/** `file:line:col` (as much as is known), for the start of a message. */
export function formatPlace(place: Place): string {
  if (!place.file) return '';
  let s = place.file;
  if (place.line !== undefined) {
    s += `:${place.line}`;
    if (place.col !== undefined) s += `:${place.col}`;
  }
  return s;
}
