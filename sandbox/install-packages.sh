#!/bin/sh
# Install the Debian packages listed in $1 that the base image lacks. On the offline base
# mmdebstrap already included all of them, so this touches no network there; on
# rust:*-slim-bookworm it apt-installs what is missing. "name?" = optional package.
set -eu
missing=""
optional=""
for entry in $(grep -v '^[[:space:]]*#' "$1"); do
    name=${entry%\?}
    if dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q "install ok installed"; then
        continue
    fi
    if [ "$name" = "$entry" ]; then missing="$missing $name"; else optional="$optional $name"; fi
done
[ -z "$missing$optional" ] && { echo "all packages present"; exit 0; }
export DEBIAN_FRONTEND=noninteractive
apt-get update
[ -n "$missing" ] && apt-get install -y --no-install-recommends $missing
for name in $optional; do
    apt-get install -y --no-install-recommends "$name" || echo "warning: optional package $name not installed"
done
rm -rf /var/lib/apt/lists/*
