#!/usr/bin/env bash
# Make a small, reproducible base rootfs tarball from Debian's busybox-static: the applets,
# /etc/passwd, /etc/group and the usual directories. Used as the `centos` base of
# examples/seed and as a fixture by the tests; nothing is downloaded.
#   tools/make-busybox-rootfs.sh OUT.tar.gz
set -euo pipefail
out=${1:?usage: make-busybox-rootfs.sh OUT.tar.gz}
bb=/bin/busybox
[ -x "$bb" ] || { echo "error: $bb is missing: apt-get install busybox-static" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
r=$tmp/rootfs
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var/tmp,var/log,proc,sys,dev,home,run}
chmod 1777 "$r/tmp" "$r/var/tmp"
chmod 700 "$r/root"
cp "$bb" "$r/bin/busybox"
chmod 755 "$r/bin/busybox"
# one symlink per applet at the path busybox itself prefers
"$bb" --list-full | while read -r p; do
  [ "$p" = bin/busybox ] && continue
  mkdir -p "$r/$(dirname "$p")"
  ln -sf /bin/busybox "$r/$p"
done
cat > "$r/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$r/etc/group" <<'G'
root:x:0:
daemon:x:1:
www-data:x:33:
nogroup:x:65534:
G
echo "stacker-busybox" > "$r/etc/hostname"
printf 'NAME="busybox"\nID=busybox\n' > "$r/etc/os-release"
mkdir -p "$(dirname "$out")"
tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
  -C "$r" -cf - . | gzip -n -9 > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(stat -c %s "$out") bytes)"
