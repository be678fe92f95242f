#!/usr/bin/env bash
# Benchmarks of stacker's own workloads, as the unprivileged build user, with hyperfine
# (wall time, several runs) and /usr/bin/time (peak RSS). Prints a markdown table.
#   sudo bash tools/bench/run.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
runs=${1:-5}
. tools/lib.sh
[ "$(id -u)" = 0 ] || { echo "error: run as root (it sets up the build user and fixtures): sudo $0" >&2; exit 1; }
user=${STACKER_TEST_USER:-stacker-test}
bash tools/setup-host.sh "$user" >/dev/null
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null
[ -x /usr/bin/time ] || apt-get install -y -q time >/dev/null
ensure_deps_built >/dev/null
mkdir -p build/fixtures
[ -s build/fixtures/busybox.tar.gz ] || bash tools/make-busybox-rootfs.sh build/fixtures/busybox.tar.gz >/dev/null
bash tools/make-debian-rootfs.sh build/fixtures/debian-minbase.tar.gz >/dev/null
view=$(repo_view_for "$user" "$repo")
cli="node $view/packages/cli/bin/run.js"
work=$(mktemp -d /tmp/stacker-bench.XXXXXX)
trap 'unshare_rm' EXIT
unshare_rm() { runuser -u "$user" -- unshare --user --map-auto --map-root-user rm -rf "$work" 2>/dev/null; rm -rf "$work"; }
chown "$user": "$work"
as() { runuser -u "$user" -- "$@"; }

# workloads: name, stacker.yaml, extra files
mk() { # mk NAME YAML_FILE [FILE...]
  local d=$work/$1; shift
  mkdir -p "$d"; cp "$1" "$d/stacker.yaml"; shift
  for f in "$@"; do cp "$f" "$d/"; done
  chown -R "$user": "$d"
  echo "$d"
}
seed=$(mk seed examples/seed/stacker.yaml examples/seed/lighttp.cfg)
cp build/fixtures/busybox.tar.gz "$seed/centos.tar.gz"; chown "$user": "$seed/centos.tar.gz"
deb=$(mk debian3 tools/bench/debian3.yaml)
ten=$(mk ten tools/bench/ten.yaml build/fixtures/busybox.tar.gz)
par=$(mk parallel tools/bench/parallel.yaml build/fixtures/busybox.tar.gz)
subst="--substitute DEBIAN_TAR=$repo/build/fixtures/debian-minbase.tar.gz"
clean='rm -rf oci roots .stacker'
ns_clean="unshare --user --map-auto --map-root-user sh -c '$clean'"

rows=()
measure() { # measure LABEL DIR PREPARE COMMAND
  local label=$1 dir=$2 prep=$3 cmd=$4 json=$work/h.json
  as bash -c "cd $dir && $cmd" >/dev/null 2>&1 || { echo "error: $label failed: (cd $dir && $cmd)" >&2; exit 1; }
  as hyperfine -N --style none --runs "$runs" --prepare "bash -c \"cd $dir && $prep\"" \
    --export-json "$json" "bash -c \"cd $dir && $cmd\"" >/dev/null
  local mean sd rss
  mean=$(jq -r '.results[0].mean' "$json"); sd=$(jq -r '.results[0].stddev // 0' "$json")
  as bash -c "cd $dir && $prep" >/dev/null 2>&1
  rss=$(as bash -c "cd $dir && /usr/bin/time -f %M $cmd 2>&1 >/dev/null | tail -1")
  rows+=("| $label | $(printf '%.2f ± %.2f' "$mean" "$sd") s | $((rss / 1024)) MB |")
}
measure "examples/seed, cold" "$seed" "$ns_clean" "$cli --quiet build"
measure "examples/seed, no-op rebuild" "$seed" "true" "$cli --quiet build"
measure "Debian minbase + 2 derived, cold" "$deb" "$ns_clean" "$cli --quiet build $subst"
measure "Debian minbase + 2 derived, derived changed (--no-cache, base snapshot kept)" "$deb" "true" "$cli --quiet build --no-cache $subst"
measure "10 stanzas, no-op rebuild" "$ten" "true" "$cli --quiet build"
measure "2 independent stanzas sleeping 2 s (--no-cache)" "$par" "true" "$cli --quiet build --no-cache"

echo "| workload | wall time (mean ± sd, $runs runs) | peak RSS |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), node $(node --version), $(date -u +%F)"
