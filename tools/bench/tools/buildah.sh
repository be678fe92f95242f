#!/usr/bin/env bash
# buildah runner of the benchmark suite (contract: tools/bench/workloads/README.md).
#   tools/bench/tools/buildah.sh WORKLOAD PHASE STATE
#   PHASE=setup   as root, once: install buildah
#   PHASE=prepare as the build user, untimed: STATE into the workload's starting condition
#   PHASE=run     as the build user, timed: build, leave every image in STATE/oci
#
# Rootless `buildah build --layers` (layer cache, like stacker's cache) with runc, the
# kernel's native rootless overlay driver, oci isolation and the host network. Everything
# buildah writes (storage, runroot, config, blob-info cache, tmp, Containerfiles) is under
# STATE:
#   STATE/storage STATE/run   containers-storage graphroot / runroot
#   STATE/conf                storage.conf, containers.conf
#   STATE/home STATE/xdg STATE/tmp   HOME (blob-info cache), XDG_RUNTIME_DIR, TMPDIR
#   STATE/files               generated Containerfiles (+ an empty build context)
#   STATE/oci STATE/pushed    the output OCI layout, the image id last pushed per tag
# Old state goes to TRASH (see the README), not deleted.
set -euo pipefail

workload=${1:?usage: buildah.sh WORKLOAD PHASE STATE}
phase=${2:?usage: buildah.sh WORKLOAD PHASE STATE}
state=${3:?usage: buildah.sh WORKLOAD PHASE STATE}
runc=/usr/sbin/runc

if [ "$phase" = setup ]; then
  # No recommends: they pull fuse-overlayfs (we want the kernel's rootless overlay) and
  # crun (broken on this hybrid-cgroup host; we use runc).
  pkgs=(buildah uidmap runc jq skopeo)
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
      { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
  fi
  exit 0
fi

: "${FIXTURES:?}" "${REPO:?}" "${WORKLOADS:?}"
nonce=${BENCH_NONCE:-fixed}
state=$(realpath -m "$state")
mkdir -p "$state"

# --- environment: keep every buildah file under STATE -----------------------------------
export HOME=$state/home XDG_RUNTIME_DIR=$state/xdg TMPDIR=$state/tmp
export XDG_CONFIG_HOME=$state/home/.config XDG_DATA_HOME=$state/home/.local/share
export CONTAINERS_STORAGE_CONF=$state/conf/storage.conf
export CONTAINERS_CONF=$state/conf/containers.conf
export BUILDAH_ISOLATION=oci
unset BUILDAH_LAYERS BUILDAH_RUNTIME STORAGE_DRIVER STORAGE_OPTS

write_config() {
  mkdir -p "$state/conf" "$HOME" "$XDG_RUNTIME_DIR" "$TMPDIR" "$state/files/empty"
  chmod 700 "$XDG_RUNTIME_DIR"
  # No mount_program: native overlay in the user namespace (kernel >= 5.11). Rootless,
  # containers-storage ignores graphroot here (only rootless_storage_path counts), so bh()
  # passes --root/--runroot as well.
  cat > "$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$state/storage"
runroot = "$state/run"
rootless_storage_path = "$state/storage"
EOF
  # cgroupfs: no systemd user session to talk to (and v1/hybrid cgroups here).
  cat > "$CONTAINERS_CONF" <<EOF
[containers]
netns = "host"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
runtime = "runc"
image_copy_tmp_dir = "$TMPDIR"
[engine.runtimes]
runc = ["$runc"]
EOF
}

bh() { buildah --root "$state/storage" --runroot "$state/run" --storage-driver overlay "$@"; }

# build TAG CONTAINERFILE CONTEXT [BUILD-OPTION...]: one cached, rootless build
build() {
  local tag=$1 file=$2 ctx=$3 args=()
  shift 3
  # only where the Containerfile declares it (else buildah warns it was not consumed)
  grep -q '^ARG BENCH_NONCE' "$file" && args+=(--build-arg "BENCH_NONCE=$nonce")
  bh build --layers --pull=never --runtime "$runc" --isolation oci --network host \
    "${args[@]}" "$@" -t "$tag" -f "$file" "$ctx"
}

image_id() { bh images --quiet --no-trunc "localhost/$1"; }

# push TAG: export the image to STATE/oci as TAG (gzip layers, like stacker's). The oci
# transport cannot reuse a blob already in the layout (it only looks for the source's
# uncompressed digest), so every push re-compresses every layer, the base's included.
# An image that has not changed since it was pushed to this layout is not pushed again
# (the base of warm and derive20, everything in noop): stacker does not rewrite unchanged
# layers either.
push() {
  local id rec=$state/pushed/$1
  id=$(image_id "$1")
  if [ -f "$rec" ] && [ "$(cat "$rec")" = "$id" ] && [ -f "$state/oci/index.json" ] &&
    jq -e --arg t "$1" 'any(.manifests[]; .annotations["org.opencontainers.image.ref.name"] == $t)' \
      "$state/oci/index.json" >/dev/null; then
    return 0
  fi
  bh push --quiet "$1" "oci:$state/oci:$1" >/dev/null
  mkdir -p "$state/pushed"
  echo "$id" > "$rec"
}

have_image() { image_id "$1" >/dev/null 2>&1; }

# Empty STATE (but conf). Old state is moved into TRASH, not deleted (see the README: a
# big delete slows the next file creations on this host); without TRASH it is deleted, from
# inside the user namespace since rootless storage files belong to our subuids.
wipe_state() {
  local t e
  if [ -n "${TRASH:-}" ]; then
    t=$(mktemp -d "$TRASH/buildah.XXXXXX")
    for e in "$state"/* "$state"/.[!.]*; do
      [ ! -e "$e" ] || [ "$e" = "$state/conf" ] || mv "$e" "$t/"
    done
  else
    write_config
    buildah unshare find "$state" -mindepth 1 -maxdepth 1 ! -name conf -exec rm -rf {} +
  fi
}

# --- Containerfiles ----------------------------------------------------------------------
# A RUN step runs a shell script by content, exactly like stacker's `run:` (stacker:
# `#!/bin/sh -xe` + the script; here `/bin/sh -e -c SCRIPT`). buildah 1.28 has no heredoc
# RUN, so the script goes in the exec (JSON) form of RUN, newlines and all.
run_line() { printf 'RUN ["/bin/sh", "-e", "-c", %s]\n' "$(jq -Rs . < "$1")"; }

# seed's scripts come from examples/seed/stacker.yaml (the `run: |` block of layer $1)
seed_script() {
  awk -v layer="$1" '
    /^[^ #][^:]*:/ { cur = substr($0, 1, index($0, ":") - 1); inrun = 0; next }
    cur == layer && /^  run: \|/ { inrun = 1; next }
    inrun && $0 != "" && !/^    / { inrun = 0 }
    inrun { sub(/^    /, ""); print }
  ' "$REPO/examples/seed/stacker.yaml"
}

# tar base: FROM scratch + ADD (auto-extracts) the fixture tarball. The build context is
# $FIXTURES itself, so nothing is copied.
tar_base() {
  printf 'FROM scratch\nADD %s /\n' "$1"
}

# derived image: FROM the locally built base (--pull=never), BENCH_NONCE reaches the step
derived() { # FROM STEPFILE
  printf 'FROM %s\nARG BENCH_NONCE\n' "$1"
  run_line "$2"
}

write_containerfiles() {
  local f=$state/files s=$WORKLOADS/steps i
  case $workload in
    seed)
      {
        tar_base busybox.tar.gz
        echo 'ENV http_proxy=http://example.com:8080 https_proxy=https://example.com:8080'
        echo 'LABEL foo=bar bar=baz'
      } > "$f/centos.Containerfile"
      seed_script boot > "$f/boot.sh"
      derived centos "$f/boot.sh" > "$f/boot.Containerfile"
      # The script ends with `rm -f /etc/hostname`, but buildah 1.28 (no --no-hostname
      # yet) bind-mounts its own /etc/hostname over the image's for every RUN: rm fails
      # with EBUSY. So it unmounts it first (needs CAP_SYS_ADMIN, see build_image) and the
      # layer gets the same whiteout as stacker's. stacker imports lighttp.cfg at /stacker
      # and drops /stacker afterwards: so does the script's last line.
      { echo 'umount /etc/hostname'; seed_script web; echo 'rm -rf /stacker'; } > "$f/web.sh"
      {
        printf 'FROM centos\nARG BENCH_NONCE\nCOPY lighttp.cfg /stacker/lighttp.cfg\n'
        run_line "$f/web.sh"
        printf 'ENTRYPOINT ["lighthttpd"]\nVOLUME /data/db\nWORKDIR /var/lib/www\n'
      } > "$f/web.Containerfile"
      ;;
    cold | warm | noop)
      tar_base debian-minbase.tar.gz > "$f/base.Containerfile"
      derived base "$s/docs.sh" > "$f/docs.Containerfile"
      derived base "$s/app.sh" > "$f/app.Containerfile"
      ;;
    derive20)
      tar_base debian-minbase.tar.gz > "$f/base.Containerfile"
      for i in $(seq 1 20); do
        printf 'echo "$BENCH_NONCE %s" > /etc/derived-%s\n' "$i" "$i" > "$f/d$i.sh"
        derived base "$f/d$i.sh" > "$f/d$i.Containerfile"
      done
      ;;
    tree500)
      tar_base busybox.tar.gz > "$f/base.Containerfile"
      derived base "$s/tree500.sh" > "$f/tree.Containerfile"
      ;;
    *) echo "buildah.sh: unknown workload $workload" >&2; exit 2 ;;
  esac
}

# --- builds ------------------------------------------------------------------------------
case $workload in # the images of each workload, in build order
  seed) tags=(centos boot web) ;;
  cold | warm | noop) tags=(base docs app) ;;
  # derive20 also rebuilds the base (a cache hit), like stacker's stacker.yaml of it
  derive20) tags=(base); for i in $(seq 1 20); do tags+=("d$i"); done ;;
  tree500) tags=(base tree) ;;
  *) echo "buildah.sh: unknown workload $workload" >&2; exit 2 ;;
esac

build_image() { # TAG: its Containerfile, with its build context
  case $1 in
    base | centos) build "$1" "$state/files/$1.Containerfile" "$FIXTURES" ;;
    web) build web "$state/files/web.Containerfile" "$REPO/examples/seed" --cap-add SYS_ADMIN ;;
    *) build "$1" "$state/files/$1.Containerfile" "$state/files/empty" ;;
  esac
}

case $phase in
  prepare)
    # cold workloads start from empty dirs (nothing built, no cache); the others keep
    # storage and output (stale derived images and blobs pile up a little, but deleting
    # them would cost the next timed run, see wipe_state)
    case $workload in seed | cold | tree500) wipe_state ;; esac
    write_config
    write_containerfiles
    case $workload in
      warm | derive20)
        # the Debian base built and in STATE/oci (kept if there)
        have_image base || build_image base >/dev/null
        push base
        ;;
      noop)
        # everything of "cold" built with BENCH_NONCE=fixed and in STATE/oci (kept if there)
        nonce=fixed
        for t in "${tags[@]}"; do have_image "$t" || build_image "$t" >/dev/null; done
        for t in "${tags[@]}"; do push "$t"; done
        ;;
    esac
    ;;
  run)
    # the timed work: build every image (cache hits where nothing changed), then export
    # each to the OCI layout
    write_config
    for t in "${tags[@]}"; do build_image "$t"; done
    for t in "${tags[@]}"; do push "$t"; done
    ;;
  *) echo "buildah.sh: unknown phase $phase" >&2; exit 2 ;;
esac
