import type { Source } from '@stacker/plugin-api';
import { z } from 'zod';

const schema = z.looseObject({
  type: z.literal('built'),
  tag: z.string().min(1, 'tag: the stanza to build from'),
});

/** `from: {type: built, tag: NAME}`: the image another stanza of this build produced. */
export const builtSource: Source<z.infer<typeof schema>> = {
  type: 'built',
  schema,
  dependencies: (from) => [from.tag],
  resolve: (from, ctx) => ctx.builtImage(from.tag),
};

export const sources = [builtSource];
