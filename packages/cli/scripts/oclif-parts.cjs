// What the commands in dist/fast.cjs use of @oclif/core, without its index module (see
// scripts/bundle.mjs): the same modules, so the same parsing, errors and exit handling.
exports.Args = require('@oclif/core/args');
exports.Command = require('@oclif/core/command').Command;
exports.Errors = require('@oclif/core/errors');
exports.Flags = require('@oclif/core/flags');
exports.flush = require('@oclif/core/flush').flush;
exports.handle = require('@oclif/core/handle').handle;
