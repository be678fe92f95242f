import type { StorageModule } from '@stacker/plugin-api';
import { btrfsFactory } from './factory.js';

export { applyUpper } from './apply-upper.js';
export { addTree } from './diff.js';
export { BtrfsDriver, ID_LENGTH, snapshotId } from './driver.js';
export * from './errors.js';
export { btrfsFactory, checkBtrfs } from './factory.js';

export const storage: StorageModule['storage'] = [btrfsFactory];
