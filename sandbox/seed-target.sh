#!/bin/sh
# staircase-seed-target [TARGET_DIR]: seed a cargo target directory (default ./target) with the
# skeleton's dependencies pre-built in release mode at /opt/staircase/target-cache, so that the
# first `cargo build --release` compiles mostly the crate itself. Cargo reuses a cached
# dependency only when its version, features and [profile.release] settings match the skeleton's;
# anything else is simply rebuilt. Does nothing when TARGET_DIR/release already exists.
set -eu
target=${1:-target}
cache=/opt/staircase/target-cache
[ -d "$cache/release" ] || { echo "no target cache at $cache" >&2; exit 0; }
[ -e "$target/release" ] && exit 0
mkdir -p "$target"
cp -a "$cache/." "$target/"
