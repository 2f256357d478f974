#!/bin/bash
# A real single-node Slurm (Debian's slurm-wlm and munge, on localhost, as
# root) runs examples/slurm/array.sbatch: 4 array tasks on 2 CPUs over a
# 24-line prompt file with the demo model. Checks: 24 complete PNGs
# byte-identical to one unsharded run, a merged manifest of exactly 24 lines
# (one per image, each naming its file's SHA-256), `--status` exit 0 and the
# dependent collector job exit 0. Then one task is cancelled mid-run
# (scancel), the collector fails, a rerun with --only-missing on 2 tasks
# completes the set, and the same checks pass.
#
# Everything (munged, slurmctld, slurmd, their state and logs) lives in one
# temporary directory and is stopped at the end; every wait has a timeout.
# Skipped, with a line saying why, only when not root or when the daemons
# are missing or cannot start. Run by `make test-slurm` (and .ci/run).
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=$(realpath "${FM_BIN:-build/fmimage}")
SBATCH_SCRIPT=$(realpath examples/slurm/array.sbatch)
T=""

finish() {
    local st=$?
    if [ -n "$T" ]; then
        for p in slurmd slurmctld munged; do
            [ -f "$T/$p.pid" ] && kill "$(cat "$T/$p.pid")" 2>/dev/null
        done
        sleep 1
        for p in slurmd slurmctld munged; do
            [ -f "$T/$p.pid" ] && kill -9 "$(cat "$T/$p.pid")" 2>/dev/null
        done
        [ "${KEEP:-0}" = 1 ] || rm -rf "$T"
    fi
    exit $st
}
trap finish EXIT

skip() {
    echo "[  SKIPPED ] test_slurm: $*"
    echo "test_slurm: 0 passed, 0 failed, 1 skipped"
    exit 0
}
fail() {
    echo "[  FAILED  ] test_slurm: $*"
    for f in "$T"/log/*; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
    echo "test_slurm: 0 passed, 1 failed"
    exit 1
}
step() { echo "test_slurm: $*"; }

[ "$(id -u)" = 0 ] || skip "needs root (slurmd runs jobs as any user); CI runs it as root"
for c in munged slurmctld slurmd sbatch squeue scancel sinfo; do
    command -v "$c" >/dev/null || skip "$c not installed (tools/install-deps.sh installs slurm-wlm and munge as root)"
done
[ -x "$BIN" ] || fail "$BIN missing (make all)"

# munged refuses a socket directory others may write: not under build/.
T=$(mktemp -d /tmp/fmimage-slurm.XXXXXX)
chmod 755 "$T"
mkdir -p "$T/log" "$T/state" "$T/spool" "$T/work"
export SLURM_CONF=$T/slurm.conf

# ---- the cluster ----
head -c 1024 /dev/urandom >"$T/munge.key"
chmod 400 "$T/munge.key"
timeout 20 munged --force --key-file="$T/munge.key" --socket="$T/munge.sock" --pid-file="$T/munged.pid" \
    --log-file="$T/log/munged.log" --seed-file="$T/munged.seed" ||
    skip "munged does not start here: $(tail -n 1 "$T/log/munged.log" 2>/dev/null)"
host=$(hostname -s)
port=$((20000 + RANDOM % 20000))
cat >"$SLURM_CONF" <<CONF
ClusterName=fmtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$T/munge.sock
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=10
InactiveLimit=0
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=30 State=UP
CONF
timeout 30 slurmctld -f "$SLURM_CONF" || skip "slurmctld does not start here: $(tail -n 1 "$T/log/slurmctld.log" 2>/dev/null)"
timeout 30 slurmd -f "$SLURM_CONF" || skip "slurmd does not start here: $(tail -n 1 "$T/log/slurmd.log" 2>/dev/null)"
up=0
for _ in $(seq 60); do
    if timeout 5 sinfo -h -o %t 2>/dev/null | grep -qx idle; then up=1; break; fi
    sleep 0.5
done
[ $up = 1 ] || skip "the Slurm node does not come up: $(tail -n 1 "$T/log/slurmd.log" 2>/dev/null)"
step "Slurm $(sinfo -V | cut -d' ' -f2) up on $host (2 CPUs), port $port"

# ---- the image set ----
P=$T/work/prompts.txt
for c in red orange yellow green cyan blue purple pink; do
    for s in circle square triangle; do echo "a $c $s on a white background"; done
done >"$P"
[ "$(wc -l <"$P")" = 24 ] || fail "prompt file is not 24 lines"
OPTS=(--seed 7 -q)
export FMIMAGE=$BIN

step "one unsharded run (the reference)"
timeout 300 "$BIN" --prompt-file "$P" -o "$T/work/ref" "${OPTS[@]}" || fail "unsharded run failed"

# The set in $1 is the reference set, one manifest line per image.
check_set() {
    local dir=$1 n=0
    for ref in "$T"/work/ref/*.png; do
        cmp -s "$ref" "$dir/${ref##*/}" || fail "$dir/${ref##*/} differs from the unsharded run's"
        n=$((n + 1))
    done
    [ $n = 24 ] || fail "the reference has $n images"
    [ "$(ls "$dir" | grep -c '\.png$')" = 24 ] || fail "$dir does not hold exactly 24 PNGs"
    ls -A "$dir" | grep -q '^\.fmimage-' && fail "$dir: temporary or claim files left: $(ls -A "$dir" | grep '^\.fmimage-')"
    local all=$T/work/merged.jsonl
    cat "$dir"/manifest.jsonl "$dir"/manifest.d/*.jsonl 2>/dev/null >"$all"
    [ "$(wc -l <"$all")" = 24 ] || fail "$dir: the manifests hold $(wc -l <"$all") lines, not 24"
    grep -qv '^{.*}$' "$all" && fail "$dir: a manifest line is not one JSON object"
    [ "$(grep -o '"file":"[^"]*"' "$all" | sort -u | wc -l)" = 24 ] || fail "$dir: not 24 distinct files listed"
    while read -r line; do
        local f s
        f=$(echo "$line" | grep -o '"file":"[^"]*"' | cut -d'"' -f4)
        s=$(echo "$line" | grep -o '"sha256":"[0-9a-f]*"' | cut -d'"' -f4)
        [ "$(sha256sum "$dir/$f" | cut -d' ' -f1)" = "$s" ] || fail "$dir/$f: the manifest's sha256 is not the file's"
    done <"$all"
    timeout 120 "$BIN" --prompt-file "$P" -o "$dir" "${OPTS[@]}" --status >"$T/work/status.txt" ||
        fail "--status exit $? on $dir: $(cat "$T/work/status.txt")"
    grep -q '^total: 24 jobs, 24 done, 0 missing, 0 broken$' "$T/work/status.txt" || fail "--status: $(cat "$T/work/status.txt")"
}

# Waits (at most $2 s) until job $1 has left the queue.
wait_gone() {
    for _ in $(seq $(($2 * 2))); do
        [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0
        sleep 0.5
    done
    scancel "$1"
    fail "job $1 still queued after $2 s"
}

step "round 1: sbatch --wait --array=0-3 examples/slurm/array.sbatch"
cd "$T/work"
jid=$(timeout 600 sbatch --parsable --wait --array=0-3 --cpus-per-task=1 -o "$T/log/%A_%a.out" \
    "$SBATCH_SCRIPT" "$P" "$T/work/set1" "${OPTS[@]}") || fail "the array job failed (sbatch exit $?)"
jid=${jid%%;*}
[ -d "$T/work/set1/manifest.d" ] && [ "$(ls "$T/work/set1/manifest.d" | wc -l)" = 4 ] ||
    fail "expected 4 manifests in set1/manifest.d: $(ls "$T/work/set1/manifest.d" 2>&1)"
check_set "$T/work/set1"
timeout 300 sbatch --wait --dependency=afterany:"$jid" -o "$T/log/collect1.out" "$SBATCH_SCRIPT" "$P" "$T/work/set1" \
    "${OPTS[@]}" >/dev/null || fail "the collector job failed: $(cat "$T/log/collect1.out")"
grep -q '^total: 24 jobs, 24 done' "$T/log/collect1.out" || fail "collector said: $(cat "$T/log/collect1.out")"
step "round 1 passed: 24 images identical to the unsharded run, 24 manifest lines, --status 0"

step "round 2: cancel task 1 after its first image"
jid=$(timeout 30 sbatch --parsable --array=0-3 --cpus-per-task=1 -o "$T/log/%A_%a.out" \
    "$SBATCH_SCRIPT" "$P" "$T/work/set2" "${OPTS[@]}") || fail "sbatch failed"
jid=${jid%%;*}
seen=0
for _ in $(seq 240); do
    if ls "$T"/work/set2/00001-*.png >/dev/null 2>&1; then seen=1; break; fi
    sleep 0.5
done
[ $seen = 1 ] || { scancel "$jid"; fail "task 1 made no image in 120 s"; }
scancel "${jid}_1" || fail "scancel failed"
wait_gone "$jid" 300
made=$(ls "$T"/work/set2 | grep -c '\.png$')
step "after the cancel: $made of 24 images"
timeout 120 "$BIN" --prompt-file "$P" -o "$T/work/set2" "${OPTS[@]}" --status >"$T/work/status.txt"
st=$?
[ $st = 1 ] || fail "--status after the cancel: exit $st, expected 1: $(cat "$T/work/status.txt")"
grep -q 'shard 1/4: [0-5] done' "$T/work/status.txt" || fail "--status does not show shard 1 unfinished: $(cat "$T/work/status.txt")"
timeout 300 sbatch --wait --dependency=afterany:"$jid" -o "$T/log/collect2.out" "$SBATCH_SCRIPT" "$P" "$T/work/set2" \
    "${OPTS[@]}" >/dev/null && fail "the collector job succeeded on an incomplete set"
step "rerun: sbatch --wait --array=0-1 ... --only-missing"
timeout 600 sbatch --wait --array=0-1 --cpus-per-task=1 -o "$T/log/%A_%a.out" \
    "$SBATCH_SCRIPT" "$P" "$T/work/set2" "${OPTS[@]}" --only-missing >/dev/null || fail "the --only-missing array failed"
check_set "$T/work/set2"
step "round 2 passed"
echo "[  PASSED  ] test_slurm"
echo "test_slurm: 1 passed, 0 failed"
