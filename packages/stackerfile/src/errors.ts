import { formatPlace, type Place, UserError } from '@stacker/plugin-api';

/**
 * Every error this package raises is made here, so the wording stays consistent: one
 * sentence that starts with `file:line:col: `, names the stanza and key, and says what to do.
 * Scripts written for Go stacker grep for a few words (`forbidden`, `duplicate layer name`,
 * `is not valid`); those words are kept.
 */
export const ErrorCodes = {
  read: 'STACKERFILE_READ',
  syntax: 'STACKERFILE_SYNTAX',
  unknownKey: 'STACKERFILE_UNKNOWN_KEY',
  wrongType: 'STACKERFILE_WRONG_TYPE',
  missingKey: 'STACKERFILE_MISSING_KEY',
  emptyValue: 'STACKERFILE_EMPTY_VALUE',
  badValue: 'STACKERFILE_BAD_VALUE',
  forbiddenName: 'STACKERFILE_FORBIDDEN_LAYER_NAME',
  duplicateLayer: 'STACKERFILE_DUPLICATE_LAYER',
  duplicateKey: 'STACKERFILE_DUPLICATE_KEY',
  importBothForms: 'STACKERFILE_IMPORT_AND_IMPORTS',
  importHash: 'STACKERFILE_IMPORT_HASH',
  importDest: 'STACKERFILE_IMPORT_DEST',
  substitutionMissing: 'STACKERFILE_SUBSTITUTION_MISSING',
  substitutionShellStyle: 'STACKERFILE_SUBSTITUTION_SHELL_STYLE',
  substituteFlag: 'STACKERFILE_SUBSTITUTE_FLAG',
  substituteFile: 'STACKERFILE_SUBSTITUTE_FILE',
  prerequisite: 'STACKERFILE_PREREQUISITE',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

function make(code: ErrorCode, place: Place, sentence: string, cause?: unknown): UserError {
  const where = formatPlace(place);
  const msg = where ? `${where}: ${sentence}` : sentence;
  return new UserError(code, msg, place, cause === undefined ? undefined : { cause });
}

/** How a key is named in messages: `layer "web" key "imports[1].hash"`. */
export function describeKey(stanza: string | undefined, keyPath: (string | number)[]): string {
  const key = formatKeyPath(keyPath);
  if (stanza === undefined) return key ? `key "${key}"` : 'the document';
  if (!key) return `layer "${stanza}"`;
  return `layer "${stanza}" key "${key}"`;
}

export function formatKeyPath(keyPath: (string | number)[]): string {
  let s = '';
  for (const k of keyPath) {
    if (typeof k === 'number') s += `[${k}]`;
    else s += s ? `.${k}` : k;
  }
  return s;
}

function errMessage(e: unknown): string {
  if (e && typeof e === 'object' && 'message' in e) return String((e as Error).message);
  return String(e);
}

export const errors = {
  readFile(file: string, cause: unknown): UserError {
    return make(
      ErrorCodes.read,
      { file },
      `couldn't read stacker file: ${errMessage(cause)}; check the path given with -f.`,
      cause,
    );
  },

  yamlSyntax(place: Place, detail: string): UserError {
    return make(
      ErrorCodes.syntax,
      place,
      `the stacker file is not valid YAML (${detail}); fix the syntax at this place.`,
    );
  },

  notAMapping(place: Place, what: string): UserError {
    return make(
      ErrorCodes.wrongType,
      place,
      `${what} must be a mapping of layer names to layer definitions; write it as \`name:\` followed by indented keys such as \`from:\`.`,
    );
  },

  layerNotMapping(place: Place, name: string, got: string): UserError {
    return make(
      ErrorCodes.wrongType,
      place,
      `layer "${name}" must be a mapping of keys such as \`from:\` and \`run:\`, not ${got}; indent its keys under the name (the top-level key \`config\` is reserved for \`prerequisites\`).`,
    );
  },

  layerNameNotString(place: Place, got: string): UserError {
    return make(ErrorCodes.wrongType, place, `a layer name must be a string, not ${got}; quote the name.`);
  },

  forbiddenLayerName(place: Place, name: string): UserError {
    return make(
      ErrorCodes.forbiddenName,
      place,
      `using ':' in the layer name "${name}" is forbidden due to overlay constraints; rename the layer without ':'.`,
    );
  },

  duplicateLayerInFile(place: Place, name: string, first: Place): UserError {
    return make(
      ErrorCodes.duplicateLayer,
      { ...place, stanza: name },
      `duplicate layer name "${name}": it is already defined at ${formatPlace(first)}; rename one of them.`,
    );
  },

  duplicateLayerAcrossFiles(place: Place, name: string, first: Place): UserError {
    return make(
      ErrorCodes.duplicateLayer,
      { ...place, stanza: name },
      `duplicate layer name "${name}": both ${first.file} (at ${formatPlace(first)}) and ${place.file} define it; layer names must be unique across all stacker files of a build, so rename one of them.`,
    );
  },

  duplicateKey(place: Place, stanza: string | undefined, keyPath: (string | number)[]): UserError {
    return make(
      ErrorCodes.duplicateKey,
      place,
      `${describeKey(stanza, keyPath)} appears twice in the same mapping; remove one of them.`,
    );
  },

  unknownKey(
    place: Place,
    stanza: string | undefined,
    keyPath: (string | number)[],
    allowed: readonly string[],
  ): UserError {
    const key = keyPath[keyPath.length - 1];
    const parent = keyPath.slice(0, -1);
    const where =
      stanza === undefined
        ? parent.length
          ? `in "${formatKeyPath(parent)}"`
          : 'at the top level'
        : parent.length
          ? `in layer "${stanza}" under "${formatKeyPath(parent)}"`
          : `in layer "${stanza}"`;
    return make(
      ErrorCodes.unknownKey,
      place,
      `unknown key "${String(key)}" ${where}; remove it or use one of: ${allowed.join(', ')}.`,
    );
  },

  wrongType(
    place: Place,
    stanza: string | undefined,
    keyPath: (string | number)[],
    expected: string,
    got: string,
    fix = 'change its value',
  ): UserError {
    return make(
      ErrorCodes.wrongType,
      place,
      `${describeKey(stanza, keyPath)} must be ${expected}, not ${got}; ${fix}.`,
    );
  },

  missingKey(
    place: Place,
    stanza: string | undefined,
    keyPath: (string | number)[],
    missing: string,
    hint: string,
  ): UserError {
    const owner = keyPath.length ? describeKey(stanza, keyPath) : describeKey(stanza, []);
    return make(ErrorCodes.missingKey, place, `${owner} has no "${missing}"; ${hint}.`);
  },

  emptyValue(place: Place, stanza: string, key: string, example: string): UserError {
    return make(
      ErrorCodes.emptyValue,
      place,
      `layer "${stanza}" key "${key}" value cannot be empty; set it (e.g. \`${key}: ${example}\`) or remove the key to use the host's.`,
    );
  },

  badValue(
    place: Place,
    stanza: string | undefined,
    keyPath: (string | number)[],
    problem: string,
    fix: string,
  ): UserError {
    return make(ErrorCodes.badValue, place, `${describeKey(stanza, keyPath)} ${problem}; ${fix}.`);
  },

  importAndImports(place: Place, stanza: string): UserError {
    return make(
      ErrorCodes.importBothForms,
      place,
      `layer "${stanza}" cannot have both 'import' and 'imports'; move every entry to 'imports' (files then appear under /stacker/imports instead of /stacker).`,
    );
  },

  invalidHash(place: Place, stanza: string, keyPath: (string | number)[], hash: string): UserError {
    return make(
      ErrorCodes.importHash,
      place,
      `${describeKey(stanza, keyPath)}: given hash ${hash} is not valid; write the file's sha256 as 64 hex digits, optionally prefixed with "sha256:".`,
    );
  },

  relativeDest(place: Place, stanza: string, keyPath: (string | number)[], dest: string): UserError {
    return make(
      ErrorCodes.importDest,
      place,
      `${describeKey(stanza, keyPath)} "${dest}" is relative, but 'dest' path cannot be relative; write an absolute path inside the image such as "/${dest.replace(/^\.?\/*/, '')}".`,
    );
  },

  missingSubstitution(place: Place, name: string): UserError {
    return make(
      ErrorCodes.substitutionMissing,
      place,
      `no value for substitution \${{${name}}}; pass --substitute ${name}=... (or put ${name} in a --substitute-file), or give a default with \${{${name}:default}}.`,
    );
  },

  shellStylePlaceholder(place: Place, name: string, value: string, found: string): UserError {
    return make(
      ErrorCodes.substitutionShellStyle,
      place,
      `"${name}=${value}" was provided as a substitution and unsupported placeholder "${found}" was found; replace "${found}" with "\${{${name}}}" to use the substitution (or stop passing ${name}).`,
    );
  },

  badSubstituteFlag(arg: string): UserError {
    return make(
      ErrorCodes.substituteFlag,
      {},
      `invalid substitution "${arg}": --substitute expects KEY=VALUE with a non-empty KEY; write it as --substitute NAME=value.`,
    );
  },

  substituteFile(place: Place, problem: string): UserError {
    return make(
      ErrorCodes.substituteFile,
      place,
      `substitute file ${problem}; write it as a YAML mapping of NAME: value lines.`,
    );
  },

  prerequisiteUnreadable(place: Place, path: string, cause: unknown): UserError {
    return make(
      ErrorCodes.prerequisite,
      place,
      `couldn't read prerequisite ${path} named in config.prerequisites (${errMessage(cause)}); fix the path, which is relative to this stacker file.`,
      cause,
    );
  },
};
