#!/usr/bin/env bash
# The whole test suite from a fresh clone: machine set-up (as root), npm deps, build, the
# fixtures, then unit and e2e tests. The last line printed is `N passed, N failed`.
#   bash tools/test-all.sh (as root)           (or: npm test)
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export NX_DAEMON=false NX_NO_CLOUD=true FORCE_COLOR=0
summary() { echo "$1 passed, $2 failed"; }
fail() { echo "error: $*" >&2; summary 0 1; exit 1; }

if [ "$(id -u)" = 0 ]; then
  bash tools/setup-host.sh || fail "machine set-up failed"
fi
. tools/lib.sh
ensure_deps_built || fail "npm ci or the build failed"
mkdir -p build/fixtures
bash tools/make-busybox-rootfs.sh build/fixtures/busybox.tar.gz >/dev/null || fail "fixture failed"

# e2e runs the CLI as the unprivileged test user, who must be able to read the checkout.
if [ "$(id -u)" = 0 ]; then
  STACKER_E2E_REPO=$(repo_view_for "${STACKER_TEST_USER:-stacker-test}" "$repo") || fail "could not make the checkout readable for the test user"
  export STACKER_E2E_REPO
fi

results=build/test-results.json
rm -f "$results"
npx vitest run --reporter=default --reporter=json --outputFile="$results" "$@"
rc=$?
if [ -s "$results" ]; then
  read -r passed failed skipped < <(node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const failedSuites = (r.testResults || []).filter((s) => s.status === "failed" && (s.assertionResults || []).length === 0).length;
    console.log(r.numPassedTests, r.numFailedTests + failedSuites, r.numPendingTests + (r.numTodoTests || 0));' "$results")
else
  passed=0 failed=1 skipped=0
fi
[ "$rc" -ne 0 ] && [ "$failed" = 0 ] && failed=1
[ "${skipped:-0}" -gt 0 ] && echo "($skipped skipped)"
summary "$passed" "$failed"
exit "$rc"
