import type { StorageModule } from '@stacker/plugin-api';
import { overlayFactory } from './factory.js';

export { MAX_CHAIN, OverlayDriver, snapshotId } from './driver.js';
export * from './errors.js';
export { checkOverlay, overlayFactory } from './factory.js';

export const storage: StorageModule['storage'] = [overlayFactory];
