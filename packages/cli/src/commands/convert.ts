/* biome-ignore-all lint/suspicious/noTemplateCurlyInString: stacker's ${{VAR}} placeholders in the help text */
import { Flags } from '@oclif/core';
import { StackerCommand } from '../base-command.js';

export default class Convert extends StackerCommand {
  static override summary = 'converts a Dockerfile into a stacker yaml file (experimental, best-effort)';
  static override description =
    'Writes one stanza per stage of the Dockerfile: the last one named ${{IMAGE}}, earlier ones build_only; a base image becomes the substitutions BASE_TYPE/BASE_URL (STAGE_BASE_... for named stages), ARGs become substitutions; all of them are written to the substitute file with their defaults. Instructions without a stacker equivalent (ONBUILD, HEALTHCHECK, SHELL, STOPSIGNAL, RUN --mount, wildcard COPY, ...) are errors naming their line; EXPOSE is ignored with a warning.';
  static override examples = [
    '<%= config.bin %> convert',
    '<%= config.bin %> convert --docker-file Dockerfile --output-file stacker.yaml --substitute-file stacker-subs.yaml',
    '<%= config.bin %> build -f stacker.yaml --substitute-file stacker-subs.yaml --substitute BASE_TYPE=tar --substitute BASE_URL=./rootfs.tar.gz',
  ];
  static override flags = {
    'docker-file': Flags.string({ char: 'i', default: 'Dockerfile', description: 'the input Dockerfile' }),
    'output-file': Flags.string({
      char: 'o',
      default: 'stacker.yaml',
      description: 'the output stacker file',
    }),
    'substitute-file': Flags.string({
      char: 's',
      default: 'stacker-subs.yaml',
      description: 'the output file containing detected substitutions',
    }),
  };

  async run(): Promise<void> {
    const { flags } = await this.parse(Convert);
    this.setUp(flags);
    const { readFile, writeFile } = await import('node:fs/promises');
    const { dirname } = await import('node:path');
    const { UserError } = await import('@stacker/plugin-api');
    const { stringify } = await import('yaml');
    const { convertDockerfile } = await import('@stacker/core/convert');
    const input = flags['docker-file'];
    let text: string;
    try {
      text = await readFile(input, 'utf8');
    } catch (e) {
      throw new UserError('docker-file', `couldn't read ${input}: ${(e as Error).message}`);
    }
    const result = convertDockerfile(text, { file: input, contextDir: dirname(input) });
    for (const w of result.warnings) this.logger.warn(w);
    await writeFile(flags['output-file'], result.stackerYaml);
    if (Object.keys(result.substitutions).length > 0) {
      await writeFile(flags['substitute-file'], stringify(result.substitutions));
    }
    this.logger.info(
      `converted ${input} to ${flags['output-file']}${Object.keys(result.substitutions).length ? ` (substitutions in ${flags['substitute-file']})` : ''}`,
    );
  }
}
