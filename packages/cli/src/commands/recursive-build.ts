import { Flags } from '@oclif/core';
import { findStackerFiles, STACKER_FILE_PATTERN } from '@stacker/core/find-files';
import { UserError } from '@stacker/plugin-api';
import Build from './build.js';

export default class RecursiveBuild extends Build {
  static override summary =
    'finds stacker yaml files under a directory and builds all OCI layers they define';
  static override description =
    "Walks the search directory for files whose path matches the pattern (a regular expression, stacker's default `\\/stacker.yaml$`), orders them by their config.prerequisites and builds them all as one build: layer names must be unique across the files, and a stanza may be built from a layer of another file.";
  static override examples = [
    '<%= config.bin %> recursive-build',
    '<%= config.bin %> recursive-build -d images -p "\\/image\\.yaml$"',
    '<%= config.bin %> recursive-build --search-dir . --order-only',
  ];

  static override flags = {
    ...Build.flags,
    // recursive-build finds its files; -f belongs to build
    'stacker-file': Flags.string({ hidden: true, default: 'stacker.yaml' }),
    'stacker-file-pattern': Flags.string({
      char: 'p',
      default: STACKER_FILE_PATTERN,
      description: 'regex pattern to use when searching for stackerfile paths',
    }),
    'search-dir': Flags.string({
      char: 'd',
      default: '.',
      description: 'directory under which to search for stackerfiles to build',
    }),
  };

  protected override async stackerFilePaths(flags: Record<string, unknown>): Promise<string[]> {
    const dir = flags['search-dir'] as string;
    const pattern = flags['stacker-file-pattern'] as string;
    const { rootsDir, ociDir, stackerDir } = this.settings;
    const files = await findStackerFiles(dir, pattern, [rootsDir, ociDir, stackerDir]);
    if (files.length === 0) {
      throw new UserError('no-stacker-files', `no stacker files matching ${pattern} found under ${dir}`);
    }
    for (const f of files) this.logger.info(`found stacker file ${f}`);
    return files;
  }
}
