import { Flags } from '@oclif/core';
import { parseMany, parseSubstituteFlag, type StackerFile } from '@stacker/stackerfile';
import type { Settings } from './settings.js';

/** `-f/--stacker-file`, as build, publish and chroot take it. */
export const stackerFileFlag = {
  'stacker-file': Flags.string({ char: 'f', default: 'stacker.yaml', description: 'the input stackerfile' }),
};

/** Flags every command that reads stacker files shares (build, publish, recursive-build). */
export const stackerFileFlags = {
  substitute: Flags.string({
    multiple: true,
    description: 'variable substitution in stackerfiles, FOO=bar format',
  }),
  'substitute-file': Flags.string({
    multiple: true,
    description: "file of variable substitutions, 'FOO: bar' YAML format",
  }),
};

export async function loadStackerFiles(
  paths: string[],
  flags: { substitute?: string[]; 'substitute-file'?: string[]; 'require-hash'?: boolean },
  settings: Settings,
): Promise<StackerFile[]> {
  const substitutions: Record<string, string> = {};
  for (const s of flags.substitute ?? []) {
    const [k, v] = parseSubstituteFlag(s);
    substitutions[k] = v;
  }
  return parseMany(paths, {
    substitutions,
    substituteFiles: flags['substitute-file'] ?? [],
    builtins: {
      STACKER_ROOTFS_DIR: settings.rootsDir,
      STACKER_STACKER_DIR: settings.stackerDir,
      STACKER_OCI_DIR: settings.ociDir,
      STACKER_WORK_DIR: settings.workDir ?? '',
    },
    requireHash: flags['require-hash'],
  });
}
