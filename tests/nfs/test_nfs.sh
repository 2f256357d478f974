#!/bin/bash
# Two shards on two mounts of one NFS export (the kernel NFS server from
# Debian's nfs-kernel-server, on localhost): both mounts with nosharecache,
# so each has its own client cache as two machines would. Checks: the set is
# the unsharded run's, byte for byte, and the merged manifests hold one
# line per image, none torn. Needs root and a kernel with nfsd and the NFS
# client; skipped with a line saying why where they are missing (a
# container without the modules). Run by `make test-cluster`.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=$(realpath "${FM_BIN:-build/fmimage}")
T="" M1="" M2=""

skip() {
    echo "[  SKIPPED ] test_nfs: $*"
    echo "test_nfs: 0 passed, 0 failed, 1 skipped"
    exit 0
}
fail() {
    echo "[  FAILED  ] test_nfs: $*"
    echo "test_nfs: 0 passed, 1 failed"
    exit 1
}
finish() {
    local st=$?
    [ -n "$M2" ] && timeout 20 umount -f "$M2" 2>/dev/null
    [ -n "$M1" ] && timeout 20 umount -f "$M1" 2>/dev/null
    [ -n "$T" ] && timeout 20 exportfs -u "127.0.0.1:$T/export" 2>/dev/null
    [ -n "$T" ] && rm -rf "$T"
    exit $st
}
trap finish EXIT

[ "$(id -u)" = 0 ] || skip "needs root (exportfs, mount)"
modprobe nfsd 2>/dev/null
modprobe nfs 2>/dev/null
grep -qw nfsd /proc/filesystems || skip "this kernel has no NFS server (nfsd not in /proc/filesystems, no module to load)"
grep -qw nfs4 /proc/filesystems || grep -qw nfs /proc/filesystems || skip "this kernel has no NFS client"
for c in exportfs rpc.nfsd rpc.mountd mount.nfs; do
    command -v "$c" >/dev/null || skip "$c not installed (nfs-kernel-server, nfs-common)"
done
[ -x "$BIN" ] || fail "$BIN missing (make all)"

T=$(mktemp -d /tmp/fmimage-nfs.XXXXXX)
mkdir -p "$T/export" "$T/m1" "$T/m2"
chmod 777 "$T/export"
mountpoint -q /proc/fs/nfsd || mount -t nfsd nfsd /proc/fs/nfsd 2>/dev/null
timeout 20 rpc.nfsd 2 || skip "rpc.nfsd does not start here"
pgrep -x rpc.mountd >/dev/null || timeout 20 rpc.mountd || skip "rpc.mountd does not start here"
timeout 20 exportfs -o rw,no_root_squash,insecure,fsid=$RANDOM "127.0.0.1:$T/export" || skip "exportfs failed"
timeout 30 mount -t nfs -o vers=4.2,nosharecache,soft,timeo=50 "127.0.0.1:$T/export" "$T/m1" || skip "NFS mount failed"
M1=$T/m1
timeout 30 mount -t nfs -o vers=4.2,nosharecache,soft,timeo=50 "127.0.0.1:$T/export" "$T/m2" || skip "second NFS mount failed"
M2=$T/m2

P=$T/prompts.txt
for c in red green blue yellow purple cyan; do for s in circle square; do echo "a $c $s"; done; done >"$P"
OPTS=(--prompt-file "$P" --seed 3 -q)
timeout 300 "$BIN" "${OPTS[@]}" -o "$T/ref" || fail "unsharded run failed"
timeout 300 "$BIN" "${OPTS[@]}" -o "$M1/set" --shard 0/2 &
a=$!
timeout 300 "$BIN" "${OPTS[@]}" -o "$M2/set" --shard 1/2 &
b=$!
wait $a || fail "shard 0/2 on mount 1 failed"
wait $b || fail "shard 1/2 on mount 2 failed"
for ref in "$T"/ref/*.png; do
    cmp -s "$ref" "$T/export/set/${ref##*/}" || fail "${ref##*/} differs from the unsharded run's"
done
all=$(cat "$T"/export/set/manifest.d/*.jsonl)
[ "$(echo "$all" | wc -l)" = 12 ] || fail "the manifests hold $(echo "$all" | wc -l) lines, not 12"
echo "$all" | grep -qv '^{.*}$' && fail "a torn manifest line"
[ "$(echo "$all" | grep -o '"file":"[^"]*"' | sort -u | wc -l)" = 12 ] || fail "an image listed twice"
timeout 120 "$BIN" "${OPTS[@]}" -o "$M1/set" --status >/dev/null || fail "--status on mount 1 is not 0"
echo "[  PASSED  ] test_nfs"
echo "test_nfs: 1 passed, 0 failed"
