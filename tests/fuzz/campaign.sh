#!/bin/sh
# A long fuzzing campaign: every harness in parallel (nice'd) until an end
# time, restarted after each crash (the crash stays in build/fuzz/crash-*),
# with libFuzzer's final stats per run in build/fuzz/logs/.
#   tests/fuzz/campaign.sh 09:45        (make fuzz-build first)
#   tests/fuzz/campaign.sh --sum        executions per target over all runs
cd "$(dirname "$0")/../.." || exit 1
if [ "$1" = --sum ]; then
    for l in build/fuzz/logs/*-0.log; do
        t=$(basename "$l" -0.log)
        printf '%-12s %12s executions, %s runs\n' "$t" \
            "$(cat build/fuzz/logs/"$t"-*.log | awk '/number_of_executed_units/ {s += $2} END {print s + 0}')" \
            "$(ls build/fuzz/logs/"$t"-*.log | wc -l)"
    done
    exit 0
fi
end=$(date -d "$1" +%s) || exit 2
mkdir -p build/fuzz/logs
for b in build/fuzz/fuzz_*; do
    t=${b##*/fuzz_}
    (
        i=0
        while [ $(( left = end - $(date +%s) )) -gt 10 ]; do
            mkdir -p build/fuzz/corpus/"$t"
            OMP_NUM_THREADS=1 nice -n 10 "$b" -max_total_time=$left -timeout=30 -print_final_stats=1 \
                -artifact_prefix=build/fuzz/crash-"$t"- build/fuzz/corpus/"$t" tests/fuzz/corpus/"$t" \
                > build/fuzz/logs/"$t"-$i.log 2>&1
            i=$((i + 1))
        done
    ) &
done
wait
