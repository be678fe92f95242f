import { z } from 'zod';

/**
 * What a plugin declares in its package.json, under `oclif.stacker`, so that the host can
 * know which types it provides without loading its code:
 *
 *     "oclif": { "stacker": { "sources": ["tar"], "module": "./dist/index.js" } }
 */
export const pluginDeclaration = z.object({
  sources: z.array(z.string().min(1)).default([]),
  storage: z.array(z.string().min(1)).default([]),
  module: z.string().min(1),
});
export type PluginDeclaration = z.infer<typeof pluginDeclaration>;

const sourceShape = z.object({
  type: z.string().min(1),
  schema: z.custom<z.ZodType>(
    (v) => typeof v === 'object' && v !== null && typeof (v as any).safeParse === 'function',
    {
      message: 'schema must be a zod schema',
    },
  ),
  resolve: z.custom<(...a: unknown[]) => unknown>((v) => typeof v === 'function', {
    message: 'resolve must be a function',
  }),
  dependencies: z.custom<(...a: unknown[]) => unknown>((v) => typeof v === 'function').optional(),
  identity: z.custom<(...a: unknown[]) => unknown>((v) => typeof v === 'function').optional(),
});

const storageShape = z.object({
  type: z.string().min(1),
  create: z.custom<(...a: unknown[]) => unknown>((v) => typeof v === 'function', {
    message: 'create must be a function',
  }),
  check: z.custom<(...a: unknown[]) => unknown>((v) => typeof v === 'function').optional(),
  description: z.string().optional(),
});

/** The shape a plugin module must export; checked by the host after import. */
export const pluginModuleShape = z.object({
  sources: z.array(sourceShape).optional(),
  storage: z.array(storageShape).optional(),
});

const digestShape = z.string().regex(/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/, 'not a digest');
const descriptorShape = z.looseObject({
  mediaType: z.string().min(1),
  digest: digestShape,
  size: z.number().int().nonnegative(),
});

/** The shape of what `Source.resolve` returns; checked by the host after every resolve. */
export const baseImageShape = z.looseObject({
  manifest: z.looseObject({
    schemaVersion: z.literal(2),
    config: descriptorShape,
    layers: z.array(descriptorShape),
  }),
  manifestDigest: digestShape,
  config: z.looseObject({
    architecture: z.string(),
    os: z.string(),
    rootfs: z.looseObject({ type: z.string(), diff_ids: z.array(digestShape) }),
  }),
  identity: z.string().min(1),
  layers: z.array(descriptorShape),
});
