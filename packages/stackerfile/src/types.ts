import type { Place } from '@stacker/plugin-api';
import type { SubstitutionSources } from './substitute.js';

export type { Place };
export type KeyPath = (string | number)[];

/** One entry of `import:` / `imports:`. */
export interface ImportSpec {
  /** As written for URLs (`http://`, `https://`, `stacker://`, any `scheme://`); local paths
   * are made absolute against the stacker file's directory (a trailing `/` is kept). */
  path: string;
  /** sha256 as 64 lowercase hex digits, without a `sha256:` prefix. */
  hash?: string;
  /** Absolute destination inside the image (copied there instead of to /stacker/imports). */
  dest?: string;
  mode?: number;
  uid?: number;
  gid?: number;
}

export interface Bind {
  source: string;
  dest: string;
}

export interface OverlayDir {
  source: string;
  /** Where the directory's content appears in the rootfs; `/` when not given. */
  dest: string;
}

/** `from:` — `type` plus whatever keys the source of that type understands. */
export interface FromSpec {
  type: string;
  url?: string;
  tag?: string;
  insecure?: boolean;
  [key: string]: unknown;
}

export interface Layer {
  name: string;
  /** Where the layer's name is written. */
  place: Place;
  from: FromSpec;
  imports: ImportSpec[];
  /** `import` (legacy: files at /stacker), `imports` (files at /stacker/imports) or none. */
  importsForm: 'import' | 'imports' | 'none';
  run: string[];
  generateLabels: string[];
  /** undefined: key absent; null: key present but empty. */
  cmd?: string[] | null;
  entrypoint?: string[] | null;
  fullCommand?: string[];
  environment: Record<string, string>;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  volumes: string[];
  workingDir?: string;
  runtimeUser?: string;
  buildOnly: boolean;
  binds: Bind[];
  overlayDirs: OverlayDir[];
  buildEnv: Record<string, string>;
  /** Regexes (anchored) of host variables passed to `run`; undefined means stacker's default list. */
  buildEnvPassthrough?: string[];
  os?: string;
  arch?: string;
  /** Canonical JSON of the stanza after substitution (sorted keys, paths as written): a cache key part. */
  canonical: string;
}

export interface Warning {
  place: Place;
  message: string;
}

export interface StackerFile {
  /** Absolute path of the file. */
  path: string;
  /** Directory relative paths in the file are resolved against. */
  dir: string;
  /** Absolute paths (or URLs) from `config.prerequisites`, in file order. */
  prerequisites: string[];
  /** Layers in file order. */
  layers: Layer[];
  /** file:line:col of a key below a stanza (or of `config`), for any key path. */
  placeOf(stanza: string, keyPath: KeyPath): Place;
  /** The text after substitution (what stacker records in the image annotation). */
  raw: string;
  /** Deprecation notices (legacy `import`, `bom`). */
  warnings: Warning[];
}

export interface ParseOptions extends SubstitutionSources {
  /** `--require-hash`: http(s) imports without `hash` are errors. */
  requireHash?: boolean;
}

export interface ParseManyOptions extends ParseOptions {
  /** Also parse every file named in `config.prerequisites`, recursively (default true). */
  followPrerequisites?: boolean;
}
