#!/usr/bin/env bash
# The benchmark suite (issue #10): stacker, buildah and the native-tools floor on the
# workloads of tools/bench/workloads, interleaved, as the unprivileged build user; writes
# docs/performance.md. Sets the host up first (packages, build user, fixtures, the built
# checkout), like the README's commands.
#   sudo npm run bench
#   sudo bash tools/bench/suite.sh [--runs N] [--only seed,cold,...] [--tools stacker,floor] [--out FILE|-]
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
. tools/lib.sh
[ "$(id -u)" = 0 ] || { echo "error: run as root (it sets up the build user, packages and fixtures): sudo npm run bench" >&2; exit 1; }
user=${STACKER_TEST_USER:-stacker-test}
bash tools/setup-host.sh "$user" >/dev/null
[ -x /usr/bin/time ] || apt-get install -y -q time >/dev/null
[ -n "${STACKER_BENCH_NO_BUILD:-}" ] || ensure_deps_built >/dev/null
mkdir -p build/fixtures
[ -s build/fixtures/busybox.tar.gz ] || bash tools/make-busybox-rootfs.sh build/fixtures/busybox.tar.gz >/dev/null
bash tools/make-debian-rootfs.sh build/fixtures/debian-minbase.tar.gz >/dev/null
view=$(repo_view_for "$user" "$repo")
# the state stays for a look; the next run sets it aside and deletes it after measuring
work=/var/tmp/stacker-bench
BENCH_REPO_VIEW=$view STACKER_TEST_USER=$user node tools/bench/suite.mjs --work "$work" "$@"
