#!/bin/sh
# prebuild-deps.sh DEST [VAR=VALUE ...]: build the skeleton's dependencies (release, offline) into
# the target directory DEST, with the given environment (profile overrides), then remove the
# skeleton's own artifacts: only registry crates are safe to reuse from elsewhere. Run at image
# build time; `staircase-seed-target` copies the results into a workspace's target dir.
set -eu
dest=$1; shift
cd /opt/staircase/src/skeleton
package=$(sed -n 's/^name *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
env CARGO_TARGET_DIR="$dest" "$@" cargo build --release --offline
env CARGO_TARGET_DIR="$dest" "$@" cargo clean --release --offline -p "$package"
rm -f "$dest/release/.cargo-lock"
chmod -R a+rX "$dest"
