#!/bin/sh
# A long fuzzing campaign: every harness in parallel (nice'd) until an end
# time or, with RUNS, until it has run that many inputs (summed over its
# restarts); restarted after each crash (the crash stays in build/fuzz/crash-*),
# with libFuzzer's final stats per run in build/fuzz/logs/.
#   tests/fuzz/campaign.sh 09:45 [RUNS] [TARGET...]   (make fuzz-build first)
#   tests/fuzz/campaign.sh --sum                      executions per target over all runs
cd "$(dirname "$0")/../.." || exit 1
executions() {
    cat build/fuzz/logs/"$1"-*.log 2>/dev/null | awk '/number_of_executed_units/ {s += $2} END {print s + 0}'
}
if [ "$1" = --sum ]; then
    for l in build/fuzz/logs/*-0.log; do
        t=$(basename "$l" -0.log)
        printf '%-12s %12s executions, %s runs\n' "$t" "$(executions "$t")" "$(ls build/fuzz/logs/"$t"-*.log | wc -l)"
    done
    exit 0
fi
end=$(date -d "$1" +%s) || exit 2
runs=${2:-0}
[ $# -gt 2 ] && shift 2 || set --
targets=${*:-$(for b in build/fuzz/fuzz_*; do echo "${b##*/fuzz_}"; done)}
mkdir -p build/fuzz/logs
for t in $targets; do
    (
        i=$(ls build/fuzz/logs/"$t"-*.log 2>/dev/null | wc -l)
        while [ $(( left = end - $(date +%s) )) -gt 10 ]; do
            limit=
            if [ "$runs" -gt 0 ]; then
                todo=$((runs - $(executions "$t")))
                [ "$todo" -gt 0 ] || break
                limit=-runs=$todo
            fi
            mkdir -p build/fuzz/corpus/"$t"
            OMP_NUM_THREADS=1 nice -n 10 build/fuzz/fuzz_"$t" -max_total_time=$left $limit -timeout=30 \
                -print_final_stats=1 -artifact_prefix=build/fuzz/crash-"$t"- \
                build/fuzz/corpus/"$t" tests/fuzz/corpus/"$t" > build/fuzz/logs/"$t"-$i.log 2>&1
            i=$((i + 1))
        done
    ) &
done
wait
