#!/usr/bin/env node
import { execute } from '@oclif/core';
import { normaliseArgv } from '../dist/argv.js';

await execute({ dir: import.meta.url, args: normaliseArgv(process.argv.slice(2)) });
