#!/usr/bin/env bash
# The native-tools floor: tools/bench/tools/floor.sh WORKLOAD PHASE STATE (the contract is in
# tools/bench/workloads/README.md). The same work as stacker and buildah, done by plain tools
# in ONE user+mount namespace per phase: `pigz -d | tar -x` of the base, overlayfs + chroot
# for each step, `tar -c | pigz` of each upper dir, sha256sum. No manifests, no config, no
# cache: a lower bound for this machine.
#
# STATE:
#   base/                  the extracted base rootfs (the overlay lower dir)
#   base.digest            sha256 of the base tarball = the base layer blob (used as is)
#   base.ok                the Debian tarball (path size mtime) once base/ is complete
#   layers/NAME/           upper, work, merged of a step; digest = its layer blob
#   oci/blobs/sha256/HEX   the gzip layer blobs
#   cold.done, cold.nonce  the inputs (sha256sum -c format) and nonce of the last cold build
set -euo pipefail
workload=$1 phase=$2 state=$3

if [ "$phase" = setup ]; then # as root, once
  command -v pigz >/dev/null || apt-get install -y -q pigz >/dev/null
  exit 0
fi

steps=$WORKLOADS/steps
debian=$FIXTURES/debian-minbase.tar.gz
busybox=$FIXTURES/busybox.tar.gz
seed=$REPO/examples/seed
export BENCH_NONCE=${BENCH_NONCE:-fixed}

# a no-op rebuild of cold must check its inputs (and the nonce the steps saw); nothing else
cold_up_to_date() {
  [ -f "$state/cold.done" ] && [ "$(<"$state/cold.nonce")" = "$BENCH_NONCE" ] &&
    sha256sum --quiet --status -c "$state/cold.done"
}

# --- outside the namespace: noop's check, then re-exec inside one --------------------------
if [ -z "${FLOOR_IN_NS:-}" ]; then
  case $phase in
    prepare) mkdir -p "$state" ;;
    run) if [ "$workload" = noop ] && cold_up_to_date; then exit 0; fi ;;
    *) echo "floor.sh: unknown phase $phase" >&2; exit 2 ;;
  esac
  FLOOR_IN_NS=1 exec unshare --user --map-auto --map-root-user --mount -- \
    bash "$0" "$workload" "$phase" "$(realpath "$state")"
fi

# --- inside: root of the user namespace, mounts private to it --------------------------------
oci=$state/oci/blobs/sha256
pids=() # background jobs (blob packing); waitall fails if one failed
waitall() { local p; for p in "${pids[@]}"; do wait "$p"; done; pids=(); }

# blob TMP <DATA: write DATA to TMP (in $oci) while hashing it, rename TMP to its sha256,
# print the hex
blob() {
  local h
  h=$(tee "$1" | sha256sum)
  h=${h%% *}
  mv "$1" "$oci/$h"
  echo "$h"
}

# base TARBALL: extract it to base/; meanwhile the tarball itself becomes the base layer
# blob (hardlinked if allowed, else copied)
base() {
  mkdir -p "$oci" "$state/base"
  (
    if ln -f "$1" "$oci/tmp.base" 2>/dev/null; then
      h=$(sha256sum <"$1") && mv "$oci/tmp.base" "$oci/${h%% *}" && echo "${h%% *}"
    else
      blob "$oci/tmp.base" <"$1"
    fi >"$state/base.digest"
  ) &
  pids+=($!)
  pigz -dc "$1" | tar -x --numeric-owner -C "$state/base"
}

# layer NAME [IMPORT] <SCRIPT: run SCRIPT with /bin/sh -e chrooted in an overlay on base/,
# then pack the upper dir in the background. IMPORT is at /stacker/ during the step only
# (stacker's `import`). `volatile`: no sync of the upper fs at umount.
layer() {
  local name=$1 import=${2:-} d=$state/layers/$1 script
  script=$(cat)
  mkdir -p "$state/layers" "$oci"
  mkdir "$d" "$d/upper" "$d/work" "$d/merged" # fails on stale state: prepare removes it
  if [ -n "$import" ]; then mkdir "$d/upper/stacker" && cp "$import" "$d/upper/stacker/"; fi
  mount -t overlay overlay -o "lowerdir=$state/base,upperdir=$d/upper,workdir=$d/work,userxattr,volatile" "$d/merged"
  mount --rbind /dev "$d/merged/dev"
  mount --rbind /proc "$d/merged/proc"
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    BENCH_NONCE="$BENCH_NONCE" /usr/sbin/chroot "$d/merged" /bin/sh -e -c "$script" </dev/null
  umount -l "$d/merged" # and the rbinds under it
  [ -z "$import" ] || rm -rf "$d/upper/stacker"
  tar -C "$d/upper" --numeric-owner -cf - . | pigz | blob "$oci/tmp.$name" >"$d/digest" &
  pids+=($!)
}

# the `run: |` block of top-level KEY in stacker.yaml FILE
yaml_run() {
  awk -v key="$1" '
    $0 ~ "^" key ":" { inkey = 1; next }
    /^[^ #]/ { inkey = 0 }
    inkey && /^  run: \|/ { inrun = 1; next }
    inrun && /^    |^$/ { sub(/^    /, ""); print; next }
    inrun { exit }' "$2"
}

# old state goes to TRASH, not deleted (tools/bench/workloads/README.md says why)
wipe() {
  local t
  t=$(mktemp -d "$TRASH/floor.XXXXXX")
  find "$state" -mindepth 1 -maxdepth 1 -exec mv -t "$t" {} +
}

base_id() { stat -c '%n %s %Y' "$debian"; } # which Debian tarball base/ holds, cheaply

# warm/derive20 start: the Debian base extracted (kept if complete), nothing derived
debian_base_only() {
  if [ "$(cat "$state/base.ok" 2>/dev/null)" = "$(base_id)" ]; then
    local t
    t=$(mktemp -d "$TRASH/floor.XXXXXX")
    [ ! -e "$state/layers" ] || mv "$state/layers" "$t/"
    rm -f "$state/cold.done"
    find "$oci" -type f ! -name "$(<"$state/base.digest")" -exec mv -t "$t" {} +
  else
    wipe
    base "$debian"
    waitall
    base_id >"$state/base.ok"
  fi
}

docs_app() {
  layer docs <"$steps/docs.sh"
  layer app <"$steps/app.sh"
  waitall
}

# record what cold_up_to_date checks
cold_done() {
  echo "$BENCH_NONCE" >"$state/cold.nonce"
  {
    echo "$(<"$state/base.digest")  $debian"
    sha256sum "$steps/docs.sh" "$steps/app.sh"
  } >"$state/cold.done"
}

case $phase/$workload in
  prepare/seed | prepare/cold | prepare/tree500) wipe ;;
  prepare/warm | prepare/derive20) debian_base_only ;;
  prepare/noop) cold_up_to_date || { debian_base_only; docs_app; cold_done; } ;;
  run/seed)
    base "$busybox"
    layer boot < <(yaml_run boot "$seed/stacker.yaml")
    layer web "$seed/lighttp.cfg" < <(yaml_run web "$seed/stacker.yaml")
    waitall ;;
  run/cold)
    base "$debian"
    docs_app
    base_id >"$state/base.ok"
    cold_done ;;
  run/warm) docs_app ;;
  run/noop) debian_base_only; docs_app; cold_done ;; # only when something changed
  run/derive20)
    for i in $(seq 1 20); do
      layer "d$i" <<<"echo \"\$BENCH_NONCE $i\" > /etc/derived-$i"
    done
    waitall ;;
  run/tree500)
    base "$busybox"
    layer tree <"$steps/tree500.sh"
    waitall ;;
  *) echo "floor.sh: unknown workload $workload" >&2; exit 2 ;;
esac
