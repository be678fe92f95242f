// Seeds fast-check for every property test of the unit project.
//
// CI (CI=true) runs one fixed seed, so a submission passes or fails on its own code and the
// same cases run every time; a regression among them still fails. Anywhere else each run draws
// a new seed, so local runs keep exploring. STACKER_FUZZ_SEED=N replays a run (fast-check prints
// the seed of a failure), and STACKER_FUZZ_SCALE=K multiplies the number of cases, which is how
// to hunt: `STACKER_FUZZ_SCALE=40 npx vitest run --project unit fuzz`.
import fc from 'fast-check';

const CI_SEED = 20261127;
const given = process.env.STACKER_FUZZ_SEED;
const seed =
  given !== undefined && given !== ''
    ? Number(given)
    : process.env.CI === 'true' || process.env.CI === '1'
      ? CI_SEED
      : undefined;
if (seed !== undefined) {
  if (!Number.isInteger(seed))
    throw new Error(`STACKER_FUZZ_SEED must be an integer, not ${JSON.stringify(given)}`);
  fc.configureGlobal({ ...fc.readConfigureGlobal(), seed });
}
