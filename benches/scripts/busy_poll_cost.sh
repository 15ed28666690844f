#!/usr/bin/env bash
# benches/scripts/busy_poll_cost.sh — what `--busy-poll` costs in CPU below
# saturation.
#
# For each busy-poll value and each rate: start mxgate (discard spool, one
# worker, confined to the last core), drive it with `mxgate-load --rate R`
# (open loop, one message per session) on the other cores for DURATION
# seconds, and report the server's CPU time (user + system, all threads) as
# a share of one core. Values alternate at every rate (A B A B ...) and the
# table shows medians of ROUNDS.
#
# Usage: benches/scripts/busy_poll_cost.sh
# Settings (environment):
#   BUSY_POLLS="0 50"        --busy-poll values compared (microseconds)
#   RATES="200 1000 3000"    sessions started per second
#   DURATION=5 ROUNDS=3      seconds per run, runs per value and rate
#   PORT=25270, NO_BUILD=1, KEEP_WORK=1, BENCH_TMP=/tmp as in compare.sh
set -euo pipefail
source "$(dirname "$0")/cpus.sh"
SERVER_CPUS=${SERVER_CPUS-$(last_cpu)}
CLIENT_CPUS=${CLIENT_CPUS-$(other_cpus)}
source "$(dirname "$0")/lib.sh"

BUSY_POLLS=${BUSY_POLLS:-0 50}
RATES=${RATES:-200 1000 3000}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-25270}
RESULTS=$WORK/cost.tsv

# run_once BUSY_POLL RATE: one server, one load run; appends a line.
run_once() {
    local busy_poll=$1 rate=$2 pid before after hz
    start_server "mx-$busy_poll" "$PORT" "$MXGATE_BIN" --recipients "$WORK/recipients.txt" \
        --listen "127.0.0.1:$PORT" --spool "$WORK/spool" --spool-mode discard \
        --workers 1 --busy-poll "$busy_poll" || die "mxgate would not start"
    pid=$STARTED_PID
    before=$(cpu_ticks "$pid")
    run_client $((DURATION + 60)) "$WORK/load.out" "$WORK/load.err" "$MXGATE_LOAD_BIN" \
        --target "127.0.0.1:$PORT" --rate "$rate" --duration "$DURATION" --messages 1 ||
        die "mxgate-load failed: $(tail -n1 "$WORK/load.err")"
    after=$(cpu_ticks "$pid")
    stop_server "$pid"
    hz=$(getconf CLK_TCK)
    awk -v b="$busy_poll" -v r="$rate" -v t=$((after - before)) -v hz="$hz" -v d="$DURATION" \
        'BEGIN { printf "%s\t%s\t%.1f\n", b, r, 100 * t / hz / d }' >>"$RESULTS"
    log "  busy-poll $busy_poll, $rate sessions/s: $(tail -n1 "$RESULTS" | cut -f3) % of a core"
}

report() {
    echo "server CPU, % of one core (median of $ROUNDS runs of $DURATION s; discard spool, 1 worker)"
    python3 - "$RESULTS" <<'EOF'
import sys, statistics
from collections import defaultdict
cpu, polls, rates = defaultdict(list), [], []
for line in open(sys.argv[1]):
    b, r, pct = line.split()
    polls += [b] if b not in polls else []
    rates += [r] if r not in rates else []
    cpu[b, r].append(float(pct))
print(f"{'sessions/s':>10} " + " ".join(f"{'busy-poll ' + b:>14}" for b in polls))
for r in rates:
    print(f"{r:>10} " + " ".join(f"{statistics.median(cpu[b, r]):13.1f}%" for b in polls))
EOF
}

main() {
    ensure_tools
    build_mxgate
    [[ -z $MXGATE_PROBLEM ]] || die "$MXGATE_PROBLEM"
    make_table "$WORK/recipients.txt" 1000
    raise_nofile 4096
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)," \
        "server CPUs ${SERVER_CPUS:-any}, client CPUs ${CLIENT_CPUS:-any}"
    : >"$RESULTS"
    local round rate busy_poll
    for round in $(seq "$ROUNDS"); do
        for rate in $RATES; do
            for busy_poll in $BUSY_POLLS; do run_once "$busy_poll" "$rate"; done
        done
    done
    report
}

main "$@"
