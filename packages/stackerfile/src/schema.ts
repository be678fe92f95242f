import { z } from 'zod';

/**
 * The shape of a stanza, checked with zod on the plain value of the YAML. Scalars that stacker
 * decodes into Go strings accept any scalar (numbers and booleans become their text as
 * written); lists of commands accept strings only, as stacker does.
 */

/** A scalar that becomes a string: `1.0` stays "1.0", `yes` stays "yes", empty becomes "". */
export const scalar = z.union([z.string(), z.number(), z.boolean(), z.bigint(), z.date(), z.null()]);

const stringOrList = z.union([z.string(), z.array(z.string())]).nullable();
const stringMap = z.record(z.string(), scalar).nullable();
const scalarList = z.array(scalar).nullable();

export const importMapKeys = ['path', 'hash', 'dest', 'mode', 'uid', 'gid'] as const;
const importItem = z.union([
  z.string(),
  z.strictObject({
    path: scalar,
    hash: scalar.optional(),
    dest: scalar.optional(),
    mode: z.number().int().nonnegative().nullable().optional(),
    uid: z.number().int().nonnegative().nullable().optional(),
    gid: z.number().int().nonnegative().nullable().optional(),
  }),
]);
const imports = z.union([z.string(), z.array(importItem)]).nullable();

export const bindKeys = ['source', 'dest'] as const;
const bind = z.union([z.string(), z.strictObject({ source: scalar, dest: scalar.optional() })]);

export const fromCommonKeys = ['type', 'url', 'tag', 'insecure'] as const;
const from = z.looseObject({
  type: scalar,
  url: scalar.optional(),
  tag: scalar.optional(),
  insecure: z.boolean().nullable().optional(),
});

export const layerSchema = z.strictObject({
  from,
  import: imports.optional(),
  imports: imports.optional(),
  overlay_dirs: z
    .array(z.strictObject({ source: scalar, dest: scalar.optional() }))
    .nullable()
    .optional(),
  run: stringOrList.optional(),
  cmd: stringOrList.optional(),
  entrypoint: stringOrList.optional(),
  full_command: stringOrList.optional(),
  build_env_passthrough: scalarList.optional(),
  build_env: stringMap.optional(),
  environment: stringMap.optional(),
  volumes: scalarList.optional(),
  labels: stringMap.optional(),
  generate_labels: stringOrList.optional(),
  working_dir: scalar.optional(),
  build_only: z.boolean().nullable().optional(),
  binds: z.array(bind).nullable().optional(),
  runtime_user: scalar.optional(),
  annotations: stringMap.optional(),
  os: scalar.optional(),
  arch: scalar.optional(),
  // Deprecated in stacker (ignored with a warning); accepted so old files still parse.
  bom: z.unknown().optional(),
});

export const layerKeys = Object.keys(layerSchema.shape);

export const configKeys = ['prerequisites'] as const;
export const configSchema = z.strictObject({ prerequisites: scalarList.optional() }).nullable();

/** Keys whose value is a map of arbitrary names to strings. */
export const recordKeys = new Set(['environment', 'labels', 'annotations', 'build_env']);

const STRING_OR_LIST = 'a string or a list of strings';
const IMPORTS = 'a path, or a list whose items are paths or mappings of path, hash, dest, mode, uid, gid';

/** What each key accepts, by path pattern (`[]` for any list index, `*` for any map name). */
export const expectedForms: Record<string, string> = {
  '': 'a mapping of keys such as from and run',
  from: 'a mapping with at least `type:` (docker, oci, tar, built or scratch)',
  'from.type': 'a string such as docker, oci, tar, built or scratch',
  'from.url': 'a string',
  'from.tag': 'a string',
  'from.insecure': 'true or false',
  import: IMPORTS,
  imports: IMPORTS,
  'import[]': 'a path or a mapping of path, hash, dest, mode, uid, gid',
  'imports[]': 'a path or a mapping of path, hash, dest, mode, uid, gid',
  'import[].mode': 'a non-negative integer such as 0644',
  'imports[].mode': 'a non-negative integer such as 0644',
  'import[].uid': 'a non-negative integer',
  'imports[].uid': 'a non-negative integer',
  'import[].gid': 'a non-negative integer',
  'imports[].gid': 'a non-negative integer',
  overlay_dirs: 'a list of mappings of source and dest',
  'overlay_dirs[]': 'a mapping of source and dest',
  run: STRING_OR_LIST,
  'run[]': 'a string',
  generate_labels: STRING_OR_LIST,
  'generate_labels[]': 'a string',
  cmd: 'a string (split like a shell command line) or a list of strings',
  'cmd[]': 'a string',
  entrypoint: 'a string (split like a shell command line) or a list of strings',
  'entrypoint[]': 'a string',
  full_command: 'a string (split like a shell command line) or a list of strings',
  'full_command[]': 'a string',
  build_env_passthrough: 'a list of regular expressions',
  'build_env_passthrough[]': 'a string',
  volumes: 'a list of paths',
  'volumes[]': 'a string',
  environment: 'a mapping of NAME: value',
  labels: 'a mapping of name: value',
  annotations: 'a mapping of name: value',
  build_env: 'a mapping of NAME: value',
  binds: 'a list of `/path`, `/source -> /dest` or {source, dest} entries',
  'binds[]': 'a `/path`, `/source -> /dest` or a mapping of source and dest',
  working_dir: 'a string',
  runtime_user: 'a string',
  build_only: 'true or false',
  os: 'a string such as linux',
  arch: 'a string such as amd64',
  config: 'a mapping with `prerequisites:`',
  'config.prerequisites': 'a list of paths to other stacker files',
  'config.prerequisites[]': 'a string',
};

/** Key names a mapping at this pattern accepts (for unknown-key messages). */
export const allowedKeys: Record<string, readonly string[]> = {
  '': layerKeys,
  'import[]': importMapKeys,
  'imports[]': importMapKeys,
  'binds[]': bindKeys,
  'overlay_dirs[]': bindKeys,
  config: configKeys,
};

export function patternOf(path: (string | number)[]): string {
  let s = '';
  path.forEach((k, i) => {
    if (typeof k === 'number') s += '[]';
    else if (i === 1 && recordKeys.has(String(path[0]))) s += '.*';
    else s += s ? `.${k}` : k;
  });
  return s;
}
