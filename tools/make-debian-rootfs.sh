#!/usr/bin/env bash
# A Debian minbase root filesystem tarball (about 200 MB unpacked) for benchmarks, made
# with debootstrap from the machine's own Debian mirror. Made once and kept.
#   sudo tools/make-debian-rootfs.sh OUT.tar.gz [SUITE]
set -euo pipefail
out=${1:?usage: make-debian-rootfs.sh OUT.tar.gz [SUITE]}
suite=${2:-bookworm}
[ -s "$out" ] && { echo "$out exists"; exit 0; }
[ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root: sudo $0 $*" >&2; exit 1; }
command -v debootstrap >/dev/null || { apt-get install -y -q debootstrap >/dev/null; }
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
[ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
mirror=${mirror:-http://deb.debian.org/debian}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
debootstrap --variant=minbase "$suite" "$tmp/rootfs" "$mirror" >"$tmp/log" 2>&1 || { tail -20 "$tmp/log" >&2; exit 1; }
rm -rf "$tmp/rootfs"/var/cache/apt/archives/*.deb "$tmp/rootfs"/var/lib/apt/lists/* "$tmp/rootfs"/dev/*
mkdir -p "$(dirname "$out")"
tar --sort=name --mtime=@1700000000 --clamp-mtime --numeric-owner --xattrs -C "$tmp/rootfs" -cf - . | gzip -n -6 > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(du -sh "$out" | cut -f1), $(du -sh "$tmp/rootfs" | cut -f1) unpacked)"
