#!/usr/bin/env bash
# benches/scripts/harvest.sh — how fast a directory harvest walks the table.
#
# A client tries made-up recipients of the local domain (each a 550) as fast
# as mxgate lets it, from one non-exempt address (127.0.0.2, with
# --client-limit-exceptions ""), through benches/scripts/harvest.py:
#   exempt   — the control: from 127.0.0.1, exempt by default, for 10 s;
#   serial   — one session at a time, reconnecting whenever it is closed;
#   parallel — HARVEST_SESSIONS sessions at once, each reconnecting.
# Each non-exempt run gets a fresh server (a fresh error score) and lasts
# HARVEST_SECONDS. Reported: unknown recipients answered per minute (issue
# 15's target with the default --error-limits 10,20: at most 50), and the
# server's tarpit counters from /metrics.
#
# Usage: benches/scripts/harvest.sh [exempt] [serial] [parallel]  (default: all)
# Settings (environment):
#   HARVEST_SECONDS=180   length of each non-exempt run
#   HARVEST_SESSIONS=20   sessions at once in the parallel run
#   PORT=25270            listen port (metrics on PORT+1)
#   MXGATE_ARGS=""        extra mxgate flags (e.g. --error-limits 5,10)
#   NO_BUILD=1, KEEP_WORK=1, BENCH_TMP=/tmp as in compare.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"

HARVEST_SECONDS=${HARVEST_SECONDS:-180}
HARVEST_SESSIONS=${HARVEST_SESSIONS:-20}
PORT=${PORT:-25270}
MXGATE_ARGS=${MXGATE_ARGS:-}
RESULTS=$WORK/harvest.txt

# The tarpit's counters, from /metrics on PORT+1.
tarpit_metrics() {
    python3 - "127.0.0.1:$((PORT + 1))" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=10).read().decode()
keep = ("mxgate_tarpit_delays_total", 'mxgate_client_refusals_total{reason="too-many-errors"}')
print(" ".join(f"{l.split()[0].split('{')[0].removeprefix('mxgate_')}={l.split()[1]}"
               for l in text.splitlines() if l.startswith(keep)))
EOF
}

# run NAME SOURCE SESSIONS SECONDS [MXGATE FLAGS...]: a fresh server, one
# harvest, one result line.
run() {
    local name=$1 source=$2 sessions=$3 seconds=$4 line rc=0
    shift 4
    # shellcheck disable=SC2086 # MXGATE_ARGS is split on purpose
    start_server "mxgate-$name" "$PORT" "$MXGATE_BIN" --recipients "$WORK/recipients.txt" \
        --listen "127.0.0.1:$PORT" --spool "$WORK/spool-$name" \
        --metrics "127.0.0.1:$((PORT + 1))" "$@" $MXGATE_ARGS ||
        die "mxgate would not start (log: $WORK/mxgate-$name.log)"
    log "$name: harvesting from $source, $sessions session(s) at once, for ${seconds} s"
    run_client $((${seconds%.*} + 90)) "$WORK/$name.out" /dev/stderr python3 \
        "$BENCH_DIR/harvest.py" --target "127.0.0.1:$PORT" --source "$source" \
        --sessions "$sessions" --seconds "$seconds" || rc=$?
    line=$(cat "$WORK/$name.out")
    [[ -n $line ]] || die "$name: harvest.py gave no result (status $rc)"
    echo "$name $line $(tarpit_metrics)" >>"$RESULTS"
    stop_server "$STARTED_PID"
}

report() {
    echo "== directory harvest, $(date -u '+%Y-%m-%d %H:%M UTC')"
    machine_summary
    echo "mxgate flags: --client-limit-exceptions \"\" ${MXGATE_ARGS:-(default --error-limits 10,20)}"
    echo
    cat "$RESULTS"
    echo
    echo "answered = RCPTs answered 550 (unknown user); per_minute = answered / seconds x 60;"
    echo "first/last/max_minute per whole minute; refused_* = 421 at connect / after a command."
}

main() {
    local targets=("$@") target
    [[ ${#targets[@]} -gt 0 ]] || targets=(exempt serial parallel)
    command -v python3 >/dev/null || die "python3 is needed (apt-get install python3)"
    build_mxgate
    [[ -z $MXGATE_PROBLEM ]] || die "$MXGATE_PROBLEM"
    [[ -x $MXGATE_BIN ]] || die "$MXGATE_BIN does not exist"
    make_table "$WORK/recipients.txt" 1000
    : >"$RESULTS"
    for target in "${targets[@]}"; do
        case $target in
        exempt) run exempt 127.0.0.1 1 10 ;;
        serial) run serial 127.0.0.2 1 "$HARVEST_SECONDS" --client-limit-exceptions "" ;;
        parallel) run parallel 127.0.0.2 "$HARVEST_SESSIONS" "$HARVEST_SECONDS" --client-limit-exceptions "" ;;
        *) die "unknown target '$target' (exempt, serial or parallel)" ;;
        esac
    done
    report
}

main "$@"
