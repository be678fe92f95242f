# Shared bits of the tools/ scripts (sourced, not run).

# Print a path under which USER can read the checkout at REPO: REPO itself when it can,
# else a read-only bind mount of it (root only) at /var/tmp/stacker-repo-view.
repo_view_for() {
  local user=$1 repo=$2 mnt=/var/tmp/stacker-repo-view
  if runuser -u "$user" -- test -r "$repo/packages/cli/bin/run.js"; then
    echo "$repo"
    return
  fi
  mkdir -p "$mnt"
  if ! mountpoint -q "$mnt"; then
    mount --bind "$repo" "$mnt"
  fi
  echo "$mnt"
}

ensure_deps_built() {
  if [ -n "${CI:-}" ] || [ ! -d node_modules/.bin ]; then
    npm ci --no-audit --no-fund || return 1
  fi
  NX_DAEMON=false npx --no-install nx run-many -t build --outputStyle=static
}
