#!/usr/bin/env bash
# Benchmark runner for stacker itself: tools/bench/tools/stacker.sh WORKLOAD PHASE STATE
# (the contract is in tools/bench/workloads/README.md). The stacker.yaml of each workload is
# generated from the shared steps in prepare; run is one `stacker build` in STATE, which
# leaves .stacker, roots and the OCI layout `oci` there (stacker's defaults).
set -euo pipefail
workload=$1 phase=$2 state=$3
steps=$WORKLOADS/steps
cli=(node "$REPO/packages/cli/bin/run.js")

# the steps of a workload, indented as a YAML block scalar
block() { sed 's/^/    /' "$1"; }

yaml() {
  case $workload in
    seed)
      cp "$REPO/examples/seed/stacker.yaml" "$REPO/examples/seed/lighttp.cfg" "$state/" ;;
    cold | warm | noop)
      cat >"$state/stacker.yaml" <<YAML
base:
  from:
    type: tar
    url: $FIXTURES/debian-minbase.tar.gz
docs:
  from: { type: built, tag: base }
  build_env: { BENCH_NONCE: "\${{NONCE}}" }
  run: |
$(block "$steps/docs.sh")
app:
  from: { type: built, tag: base }
  build_env: { BENCH_NONCE: "\${{NONCE}}" }
  run: |
$(block "$steps/app.sh")
YAML
      ;;
    derive20)
      printf 'base:\n  from:\n    type: tar\n    url: %s\n' "$FIXTURES/debian-minbase.tar.gz" >"$state/stacker.yaml"
      for i in $(seq 1 20); do
        printf 'd%s:\n  from: { type: built, tag: base }\n  build_env: { BENCH_NONCE: "${{NONCE}}" }\n  run: echo "$BENCH_NONCE %s" > /etc/derived-%s\n' \
          "$i" "$i" "$i" >>"$state/stacker.yaml"
      done
      ;;
    tree500)
      cat >"$state/stacker.yaml" <<YAML
base:
  from:
    type: tar
    url: $FIXTURES/busybox.tar.gz
tree:
  from: { type: built, tag: base }
  run: |
$(block "$steps/tree500.sh")
YAML
      ;;
    *) echo "stacker.sh: unknown workload $workload" >&2; exit 2 ;;
  esac
}

build() { # build NONCE
  (cd "$state" && "${cli[@]}" --quiet build --substitute "NONCE=$1" \
    --substitute "CENTOS_TAR=$FIXTURES/busybox.tar.gz")
}

# the old state goes to TRASH (see the README: deleting it now would slow the timed run)
wipe() {
  local t
  t=$(mktemp -d "$TRASH/stacker.XXXXXX")
  for d in .stacker roots oci; do [ ! -e "$state/$d" ] || mv "$state/$d" "$t/"; done
}

case $phase in
  setup) ;; # nothing beyond tools/setup-host.sh and the built checkout
  prepare)
    mkdir -p "$state"
    yaml
    case $workload in
      seed | cold | tree500) wipe ;;
      # the base built (and the derived layers of an older nonce): only they change in run
      warm | derive20) [ -d "$state/oci" ] || build prepared >/dev/null ;;
      noop) build fixed >/dev/null ;;
    esac
    ;;
  run) build "${BENCH_NONCE:-fixed}" ;;
  *) echo "stacker.sh: unknown phase $phase" >&2; exit 2 ;;
esac
