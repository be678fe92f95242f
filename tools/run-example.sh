#!/usr/bin/env bash
# The main job on a fresh machine: set everything up, then build examples/seed as an
# ordinary user (no root, default overlay storage) into ./oci, and show what was built.
#   bash tools/run-example.sh                 (builds as $STACKER_USER, default stacker-test)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
. tools/lib.sh
if [ "$(id -u)" != 0 ]; then
  echo "error: run this as root (sudo): it installs packages and creates the build user; the build itself runs unprivileged" >&2
  exit 1
fi
user=${STACKER_USER:-stacker-test}
bash tools/setup-host.sh "$user"
ensure_deps_built
bash tools/make-busybox-rootfs.sh examples/seed/centos.tar.gz
view=$(repo_view_for "$user" "$repo")
# The output dirs belong to the build user (what `stacker setup` does for a project).
mkdir -p oci roots .stacker
chown "$user": oci roots .stacker
# the build user needs to write next to the stacker file? no: only to the three dirs
runuser -u "$user" -- node "$view/packages/cli/bin/run.js" \
  --oci-dir "$repo/oci" --roots-dir "$repo/roots" --stacker-dir "$repo/.stacker" \
  build -f "$view/examples/seed/stacker.yaml"
echo
echo "built into $repo/oci:"
for tag in $(jq -r '.manifests[].annotations["org.opencontainers.image.ref.name"]' oci/index.json); do
  layers=$(skopeo inspect "oci:oci:$tag" | jq -r '.Layers | length')
  skopeo inspect --config "oci:oci:$tag" | jq -r --arg t "$tag" --arg n "$layers" \
    '"  \($t): \($n) layer(s), \(.os)/\(.architecture), entrypoint [\(.config.Entrypoint // [] | join(" "))], workdir \(.config.WorkingDir // "/"), labels \(.config.Labels // {} | tostring)"'
done
