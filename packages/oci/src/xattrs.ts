import { getAttributeSync, listAttributesSync } from '@napi-rs/xattr';

// Which extended attributes go into a layer, and in which form.

const VFS_CAP_REVISION_MASK = 0xff000000;
const VFS_CAP_REVISION_2 = 0x02000000;
const VFS_CAP_REVISION_3 = 0x03000000;
const XATTR_CAPS_SZ_2 = 20;
const XATTR_CAPS_SZ_3 = 24;

/** Overlayfs keeps its own bookkeeping in these; they never belong in an image. */
export function isLayerXattr(name: string): boolean {
  return !name.startsWith('user.overlay.') && !name.startsWith('trusted.overlay.');
}

/**
 * A v3 (namespaced) file capability names the root uid of the user namespace that set it;
 * an image must carry the namespace-free v2 form instead, so drop the rootid.
 */
export function capabilityToV2(value: Buffer): Buffer {
  if (value.length !== XATTR_CAPS_SZ_3) return value;
  const magic = value.readUInt32LE(0);
  if ((magic & VFS_CAP_REVISION_MASK) >>> 0 !== VFS_CAP_REVISION_3) return value;
  const out = Buffer.alloc(XATTR_CAPS_SZ_2);
  value.copy(out, 0, 0, XATTR_CAPS_SZ_2);
  out.writeUInt32LE((((magic & ~VFS_CAP_REVISION_MASK) >>> 0) | VFS_CAP_REVISION_2) >>> 0, 0);
  return out;
}

/**
 * The xattrs of `path` (not following a symlink) as they go into a layer. Synchronous
 * syscalls: listxattr takes microseconds, and a trip through the thread pool for each entry
 * of a big layer cost more than the call (and kept a promise per file alive).
 */
export async function readLayerXattrs(path: string): Promise<Map<string, Buffer> | undefined> {
  let names: string[];
  try {
    names = listAttributesSync(path);
  } catch (e) {
    if (isUnsupported(e)) return undefined;
    throw e;
  }
  let out: Map<string, Buffer> | undefined;
  for (const name of names.filter(isLayerXattr).sort()) {
    let value: Buffer | null;
    try {
      value = getAttributeSync(path, name);
    } catch (e) {
      if (isUnsupported(e) || isNoData(e)) continue;
      throw e;
    }
    if (value === null) continue;
    out ??= new Map();
    out.set(name, name === 'security.capability' ? capabilityToV2(Buffer.from(value)) : Buffer.from(value));
  }
  return out;
}

function isUnsupported(e: unknown): boolean {
  const text = String((e as Error)?.message ?? e);
  return /ENOTSUP|EOPNOTSUPP|not supported/i.test(text) || (e as NodeJS.ErrnoException)?.code === 'ENOTSUP';
}

function isNoData(e: unknown): boolean {
  const text = String((e as Error)?.message ?? e);
  return /ENODATA|No data available/i.test(text);
}
