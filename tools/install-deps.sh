#!/bin/sh
# Installs the Debian packages fmimage needs to build and test. As root it
# runs apt-get; otherwise it prints the one command to run.
PKGS="build-essential pkg-config libpng-dev libcjson-dev libutf8proc-dev libcmocka-dev libpcre2-dev zlib1g-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
else
    echo "fmimage: missing Debian packages; run:" >&2
    echo "  sudo apt-get install -y$missing" >&2
    exit 1
fi
