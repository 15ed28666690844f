#!/usr/bin/env bash
# benches/scripts/idle.sh — user-space memory per idle SMTP session.
#
# For each server: start it, open IDLE_SESSIONS connections (default 19,000),
# read every 220 banner, send nothing more, and report the server's RSS growth
# ÷ sessions (VmRSS from /proc/PID/status before and while they are held;
# benches/scripts/idle_hold.py does the holding and the reading). Issue 3's target for
# mxgate: ≤ 1 KiB per idle session. smtp-sink is measured as the reference.
#
# Usage: benches/scripts/idle.sh [sink] [mxgate]     (default: both)
# Settings (environment):
#   IDLE_SESSIONS=19000  sessions to hold (server and client need ~1 fd each;
#                        the hard open-files limit here is 20,000)
#   PORT=25260           listen port (sink on PORT, mxgate on PORT+1)
#   MXGATE_ARGS=""       extra mxgate flags
#   NO_BUILD=1, KEEP_WORK=1, BENCH_TMP=/tmp as in compare.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"

IDLE_SESSIONS=${IDLE_SESSIONS:-19000}
PORT=${PORT:-25260}
MXGATE_ARGS=${MXGATE_ARGS:-}
RESULTS=$WORK/idle.txt

# measure NAME PID PORT: hold the sessions, append the helper's line.
measure() {
    local name=$1 pid=$2 port=$3 line rc=0
    log "$name: opening $IDLE_SESSIONS idle sessions"
    # The holder prints one key=value line.
    run_client 300 "$WORK/$name.hold" /dev/stderr python3 "$BENCH_DIR/idle_hold.py" \
        --target "127.0.0.1:$port" --pid "$pid" --sessions "$IDLE_SESSIONS" || rc=$?
    line=$(cat "$WORK/$name.hold")
    [[ -n $line ]] || die "$name: idle_hold.py gave no result (status $rc)"
    [[ $rc == 0 ]] || log "$name: not every session was held (status $rc): $line"
    echo "$name $line" >>"$RESULTS"
    alive "$pid" || log "$name: the server died while the sessions were held (log: $WORK/$name.log)"
}

run_sink() {
    # -m: sessions served at once (default 256); -t: command timeout, well
    # above the time the sessions are held.
    start_server smtp-sink "$PORT" smtp-sink -u root -m $((IDLE_SESSIONS + 100)) -t 600 \
        "127.0.0.1:$PORT" 4096 || die "smtp-sink would not start"
    measure smtp-sink "$STARTED_PID" "$PORT"
    stop_server "$STARTED_PID"
}

run_mxgate() {
    local port=$((PORT + 1))
    build_mxgate
    if [[ -z $MXGATE_PROBLEM && ! -x $MXGATE_BIN ]]; then
        MXGATE_PROBLEM="$MXGATE_BIN does not exist"
    fi
    if [[ -z $MXGATE_PROBLEM ]]; then
        make_table "$WORK/recipients.txt" 1000
        # shellcheck disable=SC2086 # MXGATE_ARGS is split on purpose
        start_server mxgate "$port" "$MXGATE_BIN" --recipients "$WORK/recipients.txt" \
            --listen "127.0.0.1:$port" --spool "$WORK/spool" \
            --max-sessions $((IDLE_SESSIONS + 100)) $MXGATE_ARGS ||
            MXGATE_PROBLEM="$MXGATE_BIN is not a working server yet (see above)"
    fi
    if [[ -n $MXGATE_PROBLEM ]]; then
        log "SKIPPING mxgate: $MXGATE_PROBLEM"
        echo "mxgate skipped: $MXGATE_PROBLEM" >>"$RESULTS"
        return
    fi
    measure mxgate "$STARTED_PID" "$port"
    stop_server "$STARTED_PID"
}

report() {
    echo "== idle sessions, $(date -u '+%Y-%m-%d %H:%M UTC')"
    machine_summary
    echo
    python3 "$BENCH_DIR/idle_report.py" "$RESULTS"
    echo
    echo "RSS B/session = (VmRSS held - VmRSS before) / sessions held; anon = the same for RssAnon."
    echo "Before = after 16 warm-up sessions opened and closed; held = 2 s after the last banner."
}

main() {
    local targets=("$@") target
    [[ ${#targets[@]} -gt 0 ]] || targets=(sink mxgate)
    ensure_tools
    # One descriptor per session in the server and in the client, plus a few.
    raise_nofile $((IDLE_SESSIONS + 100))
    : >"$RESULTS"
    for target in "${targets[@]}"; do
        case $target in
        sink) run_sink ;;
        mxgate) run_mxgate ;;
        *) die "unknown target '$target' (sink or mxgate)" ;;
        esac
    done
    report
}

main "$@"
