#!/bin/bash
# staircase-relock [DIR]: make the Cargo.lock of the crate in DIR (default .) resolvable
# against the vendored crates. A lock file written elsewhere may name versions that are not
# vendored; each such entry is moved to the nearest vendored version with
# `cargo update --offline -p name@version`, leaving every other entry as it was.
# Prints what it changed; exits non-zero when the crate still does not resolve.
set -uo pipefail
cd "${1:-.}"
for _ in $(seq 1 100); do
    err=$(cargo metadata --offline --format-version 1 2>&1 >/dev/null) && exit 0
    # "failed to select a version for the requirement `itoa = "^1.0.5"` (locked to 1.0.99)"
    spec=$(sed -n 's/.*requirement `\([A-Za-z0-9_-]*\) = [^`]*` (locked to \([^)]*\)).*/\1@\2/p' <<<"$err" | head -1)
    if [ -z "$spec" ]; then
        echo "$err" >&2
        exit 1
    fi
    echo "staircase-relock: $spec is not vendored; resolving it against the vendored set" >&2
    cargo update --offline -p "$spec" >&2 || exit 1
done
echo "staircase-relock: gave up after 100 changes" >&2
exit 1
