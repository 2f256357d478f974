#!/bin/sh
# Installs the Debian packages fmimage needs to build and test. As root it
# runs apt-get; otherwise it prints the one command to run.
# --cluster adds what `make test-cluster` runs: Slurm and munge, and the
# kernel NFS server where the kernel has one (not in most containers).
PKGS="build-essential pkg-config libpng-dev libcjson-dev libutf8proc-dev libcmocka-dev libpcre2-dev zlib1g-dev libmicrohttpd-dev libfreetype-dev fonts-dejavu-core"
if [ "${1:-}" = --cluster ]; then
    PKGS="$PKGS slurm-wlm munge"
    if grep -qw nfsd /proc/filesystems 2>/dev/null || modprobe -n nfsd 2>/dev/null; then
        PKGS="$PKGS nfs-kernel-server nfs-common"
    fi
fi
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
