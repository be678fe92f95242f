import type { StorageModule } from '@stacker/plugin-api';
import { overlayFactory } from './factory.js';

export { freshWorkDir, MAX_CHAIN, OVERLAY_FLAGS, OverlayDriver, snapshotId } from './driver.js';
export * from './errors.js';
export { checkOverlay, overlayFactory, probeOverlay } from './factory.js';
export { isMountPoint, mountPoints, unmount, unmountBelow } from './mounts.js';
export { removeTree } from './rmrf.js';
export { dropUnchangedCopyUps, walkUpper } from './upper.js';

export const storage: StorageModule['storage'] = [overlayFactory];
