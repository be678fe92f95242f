import type { Source } from '@stacker/plugin-api';
import { z } from 'zod';

const schema = z.looseObject({ type: z.literal('scratch') });

/** `from: {type: scratch}`: the empty image, no layers. */
export const scratchSource: Source<z.infer<typeof schema>> = {
  type: 'scratch',
  schema,
  identity: async () => 'scratch',
  resolve: (_from, ctx) => ctx.imageFromLayers([], 'scratch'),
};

export const sources = [scratchSource];
