#!/usr/bin/env bash
# One-time machine set-up, as root: the Debian packages stacker and its tests use, and an
# unprivileged build user with a subuid/subgid range. Idempotent.
#   sudo tools/setup-host.sh [USER]      (default user: stacker-test)
set -euo pipefail
user=${1:-${STACKER_TEST_USER:-stacker-test}}
if [ "$(id -u)" != 0 ]; then
  echo "error: tools/setup-host.sh sets up the machine and must run as root (sudo)" >&2
  exit 1
fi
pkgs=(uidmap runc btrfs-progs umoci skopeo docker-registry busybox-static squashfs-tools squashfs-tools-ng jq
      util-linux mount e2fsprogs attr tmux hyperfine debootstrap pigz ca-certificates git
      apache2-utils mmdebstrap python3 openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# docker-registry's own service is not wanted: tests start their own on 127.0.0.1.
if command -v systemctl >/dev/null && systemctl is-active -q docker-registry 2>/dev/null; then
  systemctl stop docker-registry || true
fi
if ! id "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$user"
  echo "created user $user"
fi
uid=$(id -u "$user")
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  if ! grep -qE "^($user|$uid):" "$f"; then
    # pick a range above every range already handed out
    start=$(awk -F: 'BEGIN{m=100000} {e=$2+$3; if (e>m) m=e} END{print m}' "$f")
    echo "$user:$start:65536" >> "$f"
    echo "added $user:$start:65536 to $f"
  fi
done
# rootless overlay + whiteouts need an unprivileged user namespace
if [ -e /proc/sys/kernel/unprivileged_userns_clone ] && [ "$(cat /proc/sys/kernel/unprivileged_userns_clone)" = 0 ]; then
  sysctl -q kernel.unprivileged_userns_clone=1
fi
echo "host ready for $user ($(grep "^$user:" /etc/subuid))"
