export { canonicalJson } from './canonical.js';
export type { ErrorCode } from './errors.js';
export { ErrorCodes } from './errors.js';
export { shellSplit } from './shlex.js';
export { parseMany, parseStackerFile, parseStackerText } from './stackerfile.js';
export type { Substituted, SubstitutionSources } from './substitute.js';
export { parseSubstituteFlag, readSubstituteFile, resolveSubstitutions, substitute } from './substitute.js';
export type {
  Bind,
  FromSpec,
  ImportSpec,
  KeyPath,
  Layer,
  OverlayDir,
  ParseManyOptions,
  ParseOptions,
  Place,
  StackerFile,
  Warning,
} from './types.js';
export { dependenciesOf, parseStackerUrl } from './urls.js';
