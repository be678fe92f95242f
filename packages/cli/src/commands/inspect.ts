import { Args } from '@oclif/core';
import { UserError } from '@stacker/plugin-api';
import { StackerCommand } from '../base-command.js';

export default class Inspect extends StackerCommand {
  static override summary = 'print the json representation of an OCI image';
  static override description =
    "Reads the OCI layout (--oci-dir) and prints, for each tag (or only TAG): its layers (short digest, size, media type), the manifest's annotations and the image config. With --json, one JSON array of {tag, digest, mediaType, layers, annotations, config}.";
  static override examples = [
    '<%= config.bin %> inspect',
    '<%= config.bin %> inspect app',
    '<%= config.bin %> --oci-dir out inspect app --json',
  ];
  static override args = {
    tag: Args.string({
      ignoreStdin: true,
      description: 'the tag to inspect; every tag of the layout when none is given',
    }),
  };
  // --json (a global flag) switches the output to JSON too

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Inspect);
    this.setUp({ ...flags, json: false });
    const { OciLayout, inspectLayout, formatReport } = await import('@stacker/oci');
    let layout: Awaited<ReturnType<typeof OciLayout.open>>;
    try {
      layout = await OciLayout.open(this.settings.ociDir);
    } catch (e) {
      throw new UserError(
        'no-oci-layout',
        `${this.settings.ociDir} is not an OCI layout: ${(e as Error).message}`,
      );
    }
    if (args.tag !== undefined && !(await layout.findTag(args.tag))) {
      const tags = await layout.listTags();
      throw new UserError(
        'no-tag',
        `no image tagged ${args.tag} in ${this.settings.ociDir}${tags.length ? ` (it has: ${tags.join(', ')})` : ''}`,
      );
    }
    const reports = await inspectLayout(layout, args.tag);
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(reports, null, 2)}\n`);
      return;
    }
    for (const r of reports) process.stdout.write(formatReport(r));
  }
}
