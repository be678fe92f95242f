#!/usr/bin/env bash
# btrfs vs overlay storage: 20 images derived from one base (each a small change,
# `echo $i > /etc/derived`), built as the unprivileged build user, one stanza at a time
# (--jobs 1). For each base (Debian minbase, busybox) and each driver:
#   base       the base stanza alone, cold (unpack into storage)
#   round 1    the 20 derived stanzas, the base cached
#   round 2    all 20 changed and rebuilt, the base snapshot reused again
# Per-image time is the median gap between consecutive `filesystem dN built successfully`
# lines (start-up excluded); disk use is what storage holds after round 2: `btrfs
# filesystem du -s` (total/exclusive) and `df` of the loop mount for btrfs, `du -sx` of the
# roots dir for overlay. Prints a markdown table (and, with BTRFS_BENCH_JSON=FILE, writes
# the figures there as JSON for the suite's report). Other load on the machine shows in the
# times: the load average is printed with them.
#   sudo bash tools/bench/btrfs-vs-overlay.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
. tools/lib.sh
[ "$(id -u)" = 0 ] || { echo "error: run as root (it mounts a btrfs loop file): sudo $0" >&2; exit 1; }
user=${STACKER_TEST_USER:-stacker-test}
n=${STACKER_BENCH_IMAGES:-20}
bash tools/setup-host.sh "$user" >/dev/null
[ -n "${STACKER_BENCH_NO_BUILD:-}" ] || ensure_deps_built >/dev/null
mkdir -p build/fixtures
[ -s build/fixtures/busybox.tar.gz ] || bash tools/make-busybox-rootfs.sh build/fixtures/busybox.tar.gz >/dev/null
bash tools/make-debian-rootfs.sh build/fixtures/debian-minbase.tar.gz >/dev/null
view=$(repo_view_for "$user" "$repo")
cli="node $view/packages/cli/bin/run.js"
work=$(mktemp -d /tmp/stacker-bench-btrfs.XXXXXX)
chmod 755 "$work"
mnt=$work/btrfs
cleanup() {
  mountpoint -q "$mnt" && { umount "$mnt" || umount -l "$mnt"; }
  runuser -u "$user" -- unshare --user --map-auto --map-root-user rm -rf "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
as() { runuser -u "$user" -- "$@"; }

# one btrfs for every btrfs run: a sparse loop file, as `stacker setup --btrfs` makes it
mkdir -p "$mnt"
truncate -s 16G "$work/btrfs.loop"
mkfs.btrfs -q "$work/btrfs.loop"
mount -o loop,user_subvol_rm_allowed "$work/btrfs.loop" "$mnt"
chown "$user": "$mnt"

yaml() { # yaml BASE_TAR ROUND COUNT
  printf 'base:\n  from:\n    type: tar\n    url: %s\n' "$1"
  for i in $(seq 1 "$3"); do
    printf 'd%s:\n  from:\n    type: built\n    tag: base\n  run: echo %s round %s > /etc/derived\n' "$i" "$i" "$2"
  done
}

now() { date +%s.%N; }
# median gap (seconds) between consecutive "built successfully" lines of a --log-timestamp log
median_gap() {
  node -e '
    const ts = require("fs").readFileSync(process.argv[1], "utf8").split("\n")
      .filter((l) => / filesystem d\d+ built successfully/.test(l)).map((l) => Date.parse(l.split(" ")[0]));
    const gaps = ts.slice(1).map((t, i) => (t - ts[i]) / 1000).sort((a, b) => a - b);
    console.log(gaps.length ? gaps[Math.floor(gaps.length / 2)].toFixed(3) : "n/a");' "$1"
}
human() { numfmt --to=iec --suffix=B "$1"; }

load0=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()
json=()
run_case() { # run_case BASE_LABEL BASE_TAR DRIVER
  local label=$1 tar=$2 driver=$3 dir=$work/$1-$3 flags=() roots
  mkdir -p "$dir"
  chown "$user": "$dir"
  if [ "$driver" = btrfs ]; then
    roots=$mnt/$label
    mkdir -p "$roots"
    chown "$user": "$roots"
    flags=(--storage-type btrfs --roots-dir "$roots")
  else
    roots=$dir/roots
  fi
  local used0=0
  [ "$driver" = btrfs ] && used0=$(df -B1 --output=used "$mnt" | tail -1)
  local build="cd $dir && SOURCE_DATE_EPOCH=1700000000 $cli --log-timestamp ${flags[*]} build --jobs 1"

  yaml "$tar" 1 0 | as tee "$dir/stacker.yaml" >/dev/null
  local t0 t1 t2 t3 t4 t5
  t0=$(now)
  as bash -c "$build" >"$work/log0" 2>&1 || { cat "$work/log0" >&2; exit 1; }
  t1=$(now)
  yaml "$tar" 1 "$n" | as tee "$dir/stacker.yaml" >/dev/null
  t2=$(now)
  as bash -c "$build" >"$work/log1" 2>&1 || { cat "$work/log1" >&2; exit 1; }
  t3=$(now)
  grep -q 'found cached layer base' "$work/log1" || { echo "error: round 1 of $label/$driver rebuilt the base" >&2; exit 1; }
  yaml "$tar" 2 "$n" | as tee "$dir/stacker.yaml" >/dev/null
  t4=$(now)
  as bash -c "$build" >"$work/log2" 2>&1 || { cat "$work/log2" >&2; exit 1; }
  t5=$(now)
  grep -q 'found cached layer base' "$work/log2" || { echo "error: round 2 of $label/$driver rebuilt the base" >&2; exit 1; }
  sync

  local disk
  if [ "$driver" = btrfs ]; then
    local fsdu used
    fsdu=$(btrfs filesystem du -s --raw "$roots" | tail -1)
    used=$(df -B1 --output=used "$mnt" | tail -1)
    disk="df +$(human $((used - used0))) (data $(human "$(awk '{print $3}' <<<"$fsdu")") shared by $(ls "$roots/btrfs/snapshots" | wc -l) snapshots)"
  else
    disk="$(du -sxB1 "$roots" | awk '{print $1}' | xargs -I{} numfmt --to=iec --suffix=B {}) (du -sx)"
  fi
  local cold r1 g1 r2 g2
  cold=$(printf '%.2f' "$(echo "$t1 - $t0" | bc)")
  r1=$(printf '%.2f' "$(echo "$t3 - $t2" | bc)")
  g1=$(median_gap "$work/log1")
  r2=$(printf '%.2f' "$(echo "$t5 - $t4" | bc)")
  g2=$(median_gap "$work/log2")
  rows+=("| $label | $driver | $cold s | $r1 s | $g1 s | $r2 s | $g2 s | $disk |")
  json+=("{\"base\":\"$label\",\"driver\":\"$driver\",\"cold\":$cold,\"round1\":$r1,\"perImage1\":$g1,\"round2\":$r2,\"perImage2\":$g2,\"disk\":\"$disk\"}")
}

for base in "debian-minbase:$view/build/fixtures/debian-minbase.tar.gz" "busybox:$view/build/fixtures/busybox.tar.gz"; do
  for driver in btrfs overlay; do
    run_case "${base%%:*}" "${base#*:}" "$driver"
  done
done

echo "| base | storage | base, cold | round 1: $n derived | per image | round 2: $n changed | per image | storage disk use after round 2 |"
echo "|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
echo "base sizes: debian-minbase $(tar tzf build/fixtures/debian-minbase.tar.gz | wc -l) entries ($(du -h build/fixtures/debian-minbase.tar.gz | cut -f1) gzip), busybox $(tar tzf build/fixtures/busybox.tar.gz | wc -l) entries"
echo "load average before/after: $load0 / $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${BTRFS_BENCH_JSON:-}" ]; then
  (IFS=,; echo "{\"images\":$n,\"entries\":{\"debian-minbase\":$(tar tzf build/fixtures/debian-minbase.tar.gz | wc -l),\"busybox\":$(tar tzf build/fixtures/busybox.tar.gz | wc -l)},\"rows\":[${json[*]}]}") >"$BTRFS_BENCH_JSON"
fi
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), node $(node --version), $(date -u +%F)"
