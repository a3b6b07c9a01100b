#!/bin/sh
# staircase-seed-target [--release-only] [TARGET_DIR]: seed a cargo target directory (default
# ./target) with the skeleton's dependencies pre-built in the image, so that the first build
# compiles mostly the crate itself:
#   TARGET_DIR/         from /opt/staircase/target-cache        (the release profile, as the scorer builds)
#   TARGET_DIR/quick/   from /opt/staircase/target-cache-quick  (`devbench --quick`: lto=off,
#                                                                codegen-units=16), unless --release-only
# Cargo reuses a cached dependency only when its version, features and profile settings match;
# anything else is simply rebuilt. A destination whose release/ folder exists is left alone.
set -eu
quick=1
if [ "${1:-}" = "--release-only" ]; then quick=0; shift; fi
target=${1:-target}

seed() {  # seed CACHE DEST
  [ -d "$1/release" ] || { echo "no target cache at $1" >&2; return 0; }
  [ -e "$2/release" ] && return 0
  mkdir -p "$2"
  cp -a "$1/." "$2/"
}

seed /opt/staircase/target-cache "$target"
if [ "$quick" = 1 ]; then seed /opt/staircase/target-cache-quick "$target/quick"; fi
