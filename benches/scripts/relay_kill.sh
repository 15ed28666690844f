#!/usr/bin/env bash
# benches/scripts/relay_kill.sh — kill -9 of mxgate while it receives and
# relays (issue 14): nothing that got a 250 may be lost.
#
# mxgate relays to Postfix's smtp-sink, which dumps every message it accepts
# to a file of its own. accepted_client.py sends SESSIONS concurrent streams
# of one-message sessions, each message with a unique Message-ID, and records
# the ones whose end of data got 250. Every INTERVAL seconds mxgate is killed
# with SIGKILL and started again on the same spool, KILLS times. Then the
# client stops, the relay drains, and the script compares:
#
#   lost        accepted (250) but neither at the sink nor in new/ nor dead/
#   duplicates  arrivals at the sink beyond the first of a Message-ID
#               (at-least-once: a kill between the sink's 250 and the
#               file's removal delivers a message twice)
#
# It exits 1 if anything was lost. Settings (environment): PORT=25450
# (PORT, PORT+1), KILLS=3, INTERVAL=4, SESSIONS=20, SIZE=1024,
# DRAIN_TIMEOUT=120, MXGATE_ARGS="", NO_BUILD, SERVER_CPUS, CLIENT_CPUS,
# KEEP_WORK, BENCH_TMP, SPOOL_FS as in compare.sh.
set -euo pipefail
source "$(dirname "$0")/cpus.sh"
split_cpus
source "$(dirname "$0")/lib.sh"

PORT=${PORT:-25450}
KILLS=${KILLS:-3}
INTERVAL=${INTERVAL:-4}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-1024}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-120}
MXGATE_ARGS=${MXGATE_ARGS:-}
SPOOL=$WORK/spool
SINK_DUMP=$WORK/sink
MX_PID=""

start_mxgate() {
    local n=$1 i
    # A killed io_uring worker's listener can outlive the process for a
    # moment (the ring is torn down asynchronously).
    for ((i = 0; i < 100; i++)); do port_busy $((PORT + 1)) || break; sleep 0.1; done
    # shellcheck disable=SC2086 # MXGATE_ARGS is split on purpose
    start_server "mxgate-$n" $((PORT + 1)) env RUST_LOG=info NO_COLOR=1 "$MXGATE_BIN" \
        --recipients "$WORK/recipients.txt" --listen "127.0.0.1:$((PORT + 1))" \
        --spool "$SPOOL/mx" --relay-to "smtp://127.0.0.1:$PORT" --relay-backoff 1,2 \
        $MXGATE_ARGS || die "mxgate would not start (run $n)"
    MX_PID=$STARTED_PID
}

files_in() { find "$1" -name '*.bsmtp' 2>/dev/null | wc -l; }

# The Message-ID numbers in the files under DIR, one per line.
ids_in() { grep -rhoa '<[0-9]*@kill\.bench>' "$1" 2>/dev/null | tr -dc '0-9\n' || true; }

main() {
    ensure_tools
    raise_nofile 20000
    build_mxgate
    [[ -n $MXGATE_PROBLEM ]] && die "$MXGATE_PROBLEM"
    make_table "$WORK/recipients.txt" 10
    mount_spool_fs "$SPOOL"
    mkdir -p "$SINK_DUMP"
    SERVER_CPUS=$CLIENT_CPUS start_server sink "$PORT" \
        smtp-sink -u root -d "$SINK_DUMP/%H%M%S." "127.0.0.1:$PORT" 1024 || die "smtp-sink would not start"
    start_mxgate 0

    log "client: $SESSIONS sessions; kill -9 every ${INTERVAL}s, $KILLS times"
    $(on_cpus "$CLIENT_CPUS") python3 "$BENCH_DIR/accepted_client.py" "127.0.0.1:$((PORT + 1))" \
        "$SESSIONS" "$SIZE" "$WORK/accepted" "$WORK/stop" 2>"$WORK/client.err" &
    CLIENT_PID=$!
    local kill
    for ((kill = 1; kill <= KILLS; kill++)); do
        sleep "$INTERVAL"
        log "kill -9 #$kill: $(wc -l <"$WORK/accepted") accepted so far, $(files_in "$SPOOL/mx/new") in new/"
        kill -KILL "$MX_PID"
        wait "$MX_PID" 2>/dev/null || true
        start_mxgate "$kill"
    done
    sleep "$INTERVAL"
    touch "$WORK/stop"
    wait "$CLIENT_PID" || true
    CLIENT_PID=""

    local deadline=$((SECONDS + DRAIN_TIMEOUT))
    while [[ $(files_in "$SPOOL/mx/new") != 0 ]] && ((SECONDS < deadline)); do sleep 0.2; done
    stop_server "$MX_PID"

    echo "== kill -9 of mxgate while relaying, $(date -u '+%Y-%m-%d %H:%M UTC')"
    machine_summary
    echo "mxgate: $MXGATE_BIN ${MXGATE_ARGS:-(default flags)}; git $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "$KILLS kills, one every ${INTERVAL}s; client: $SESSIONS sessions of one ${SIZE}-byte message; $(cat "$WORK/client.err")"
    ids_in "$SINK_DUMP" >"$WORK/arrived"
    { ids_in "$SPOOL/mx/new"; ids_in "$SPOOL/mx/dead"; } >"$WORK/kept"
    python3 - "$WORK/accepted" "$WORK/arrived" "$WORK/kept" <<'EOF'
import sys
from collections import Counter
accepted = set(open(sys.argv[1]).read().split())
arrived = Counter(open(sys.argv[2]).read().split())
kept = set(open(sys.argv[3]).read().split())
lost = accepted - set(arrived) - kept
duplicates = sum(n - 1 for n in arrived.values())
print(f"accepted (250): {len(accepted)}; at the next hop: {len(arrived)} distinct, "
      f"{sum(arrived.values())} arrivals; still in new/ or dead/: {len(kept)}")
print(f"duplicates: {duplicates} ({sum(1 for n in arrived.values() if n > 1)} messages delivered more than once)")
print(f"unaccepted messages that arrived anyway: {len(set(arrived) - accepted)} (a 250 the kill kept from the client)")
print(f"LOST: {len(lost)}" + (f" e.g. {sorted(lost, key=int)[:10]}" if lost else ""))
sys.exit(1 if lost else 0)
EOF
}

main "$@"
