#!/usr/bin/env bash
# benches/scripts/soak.sh — the slow-drip soak (issue 15).
#
# One mxgate (release build, durable spool) with shortened timeouts. First
# a normal load alone: mxgate-load, LOAD_SESSIONS sessions at once, one
# message each, for LOAD_SECS. Then DRIP_SESSIONS slow-drip sessions from
# one process (benches/scripts/trickle.py: half drip a command line, half a
# message body, one octet a second each, at DRIP_PHASES phases of the second
# as independent clients would, not all in one burst), and once all of them drip, the
# same normal load again beside them. Then it waits until the time rules
# have cut off every dripping session, and runs the normal load a third
# time. Reports the load's messages/s and RCPT p99 in each run (target:
# within 2x of the run alone), the server's RSS sampled every second, the
# drippers' outcomes as the client saw them and the server's
# mxgate_time_refusals_total.
#
# Usage: benches/scripts/soak.sh
# Settings (environment):
#   DRIP_SESSIONS=15000  slow-drip sessions (one process; ~1 fd each here
#                        and in the server: the hard limit is 20,000)
#   DRIP_PHASES=20       phases of the second the drippers are spread over
#                        (1: every octet in one burst a second)
#   LOAD_SESSIONS=50     normal sessions at once
#   LOAD_SECS=30         length of each normal load run
#   TIMEOUT_SECS=90      --command-timeout and --data-timeout for the run
#                        (300 and 180 by default: shortened to see the
#                        cut-offs within minutes)
#   PORT=25270           listen port; the metrics on PORT+1
#   MXGATE_ARGS=""       extra mxgate flags
#   NO_BUILD=1, KEEP_WORK=1, BENCH_TMP=/tmp, SPOOL_FS=loop|host as in compare.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DRIP_SESSIONS=${DRIP_SESSIONS:-15000}
DRIP_PHASES=${DRIP_PHASES:-20}
LOAD_SESSIONS=${LOAD_SESSIONS:-50}
LOAD_SECS=${LOAD_SECS:-30}
TIMEOUT_SECS=${TIMEOUT_SECS:-90}
PORT=${PORT:-25270}
METRICS=127.0.0.1:$((PORT + 1))
MXGATE_ARGS=${MXGATE_ARGS:-}
ROWS=$WORK/load.tsv
DRIP_PID=""

# /metrics samples whose name starts with one of the given prefixes.
metrics() {
    python3 - "$METRICS" "$@" <<'EOF'
import sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=10).read().decode()
for line in text.splitlines():
    if line.startswith(tuple(sys.argv[2:])):
        print(line)
EOF
}

# load NAME: one normal load run; appends "NAME <load_summary row>" to $ROWS.
# The messages of the run before are deleted first: a few hundred thousand
# files would use up the spool file system's inodes.
load() {
    local name=$1 json=$WORK/load-$1.json rc=0 line
    find "$WORK/spool/new" -name '*.bsmtp' -delete 2>/dev/null || true
    timed_client "$SERVER_PID" "$json" "$json.err" /usr/bin/time -f '%U %S' -o "$json.time" \
        "$MXGATE_LOAD_BIN" --target "127.0.0.1:$PORT" --sessions "$LOAD_SESSIONS" --messages 1 \
        --sessions-total 100000000 --duration "$LOAD_SECS" --json || rc=$?
    [[ $rc == 0 ]] || die "load $name failed (status $rc): $(tail -n1 "$json.err")"
    line=$(python3 "$BENCH_DIR/load_summary.py" row "$json" "$RUN_SECS" "$RUN_SERVER_CPU" \
        "$(awk '{ print $1 + $2 }' "$json.time")")
    printf '%s\t%s\n' "$name" "$line" >>"$ROWS"
    log "load $name: $line"
}

# Starts the drippers in the background and waits until all of them drip.
start_drip() {
    local ready=$WORK/drip.ready i
    log "opening $DRIP_SESSIONS slow-drip sessions"
    (
        ulimit -Sn "$(ulimit -Hn)"
        exec python3 "$BENCH_DIR/trickle.py" --target "127.0.0.1:$PORT" --pid "$SERVER_PID" \
            --sessions "$DRIP_SESSIONS" --phases "$DRIP_PHASES" --ready "$ready" --limit $((4 * TIMEOUT_SECS + 300))
    ) >"$WORK/drip.json" 2>"$WORK/drip.err" &
    DRIP_PID=$!
    for ((i = 0; i < 600; i++)); do
        [[ -s $ready ]] && break
        alive "$DRIP_PID" || die "trickle.py ended early: $(tail -n3 "$WORK/drip.err")"
        sleep 0.5
    done
    [[ -s $ready ]] || die "the drippers were not all dripping within 300 s"
    log "all dripping after $(cut -d' ' -f1 "$ready") s ($(cut -d' ' -f2 "$ready") sessions)"
}

report() {
    echo "== slow-drip soak, $(date -u '+%Y-%m-%d %H:%M UTC')"
    machine_summary
    echo "mxgate: $MXGATE_BIN --command-timeout $TIMEOUT_SECS --data-timeout $TIMEOUT_SECS" \
        "(shortened) ${MXGATE_ARGS:-}; git $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "server: $(grep -m1 -o 'mxgate ready.*' "$WORK/mxgate.log" || echo '?')"
    echo "drip: $DRIP_SESSIONS sessions from one process, 1 octet/s each at $DRIP_PHASES phases (half a command line, half a body)"
    echo "load: mxgate-load --sessions $LOAD_SESSIONS --messages 1 --duration $LOAD_SECS (1,024-octet messages)"
    echo
    printf '%-7s %8s %12s %15s %16s %6s\n' run msgs/s "RCPT p99 µs" "session p99 µs" "server CPU µs/msg" errors
    awk -F'\t' '{ printf "%-7s %8.0f %12.0f %15.0f %16.1f %6d\n", $1, $2, $3, $4, $5, $7 }' "$ROWS"
    awk -F'\t' '$1 == "alone" { r = $2; p = $3 } $1 == "drip" { printf "drip vs alone: throughput %.2fx, RCPT p99 %.2fx\n", $2 / r, $3 / p }' "$ROWS"
    echo "sessions open at the end of the drip load: $OPEN_AFTER_LOAD"
    echo
    python3 - "$WORK/drip.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"drippers: ramp {d['ramp_secs']} s, run {d['run_secs']} s, still dripping at the end: {d['still_dripping']}")
for mode, outcomes in sorted(d["outcomes"].items()):
    print(f"  {mode:<8} outcomes {outcomes}; dripped before the cut (s): {d['dripped_secs'].get(mode)}")
r = d["rss_kib"]
print(f"server VmRSS (MiB): before {r['before'] / 1024:.1f}, peak {r['peak'] / 1024:.1f}, last {r['last'] / 1024:.1f}")
samples = d["rss_samples"]
step = max(1, len(samples) // 12)
print("  every ~%d s: %s" % (step, ", ".join(f"{t:.0f}s {k / 1024:.0f}" for t, k in samples[::step])))
if d["first_error"]:
    print(f"first error: {d['first_error']}")
EOF
    echo "server VmRSS after the last load: $(awk '/^VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$SERVER_PID/status")"
    echo "server counters at the end:"
    sed 's/^/  /' "$WORK/metrics.end"
}

main() {
    command -v python3 >/dev/null || die "python3 is needed"
    [[ -x /usr/bin/time ]] || die "/usr/bin/time is needed (apt-get install time)"
    raise_nofile $((DRIP_SESSIONS + LOAD_SESSIONS + 200))
    build_mxgate
    [[ -z $MXGATE_PROBLEM && -x $MXGATE_BIN && -x $MXGATE_LOAD_BIN ]] ||
        die "release binaries missing: ${MXGATE_PROBLEM:-$MXGATE_BIN or $MXGATE_LOAD_BIN}"
    make_table "$WORK/recipients.txt" 1000
    mount_spool_fs "$WORK/spool"
    # shellcheck disable=SC2086 # MXGATE_ARGS is split on purpose
    start_server mxgate "$PORT" "$MXGATE_BIN" --recipients "$WORK/recipients.txt" \
        --listen "127.0.0.1:$PORT" --spool "$WORK/spool" --metrics "$METRICS" \
        --command-timeout "$TIMEOUT_SECS" --data-timeout "$TIMEOUT_SECS" $MXGATE_ARGS ||
        die "mxgate would not start"
    SERVER_PID=$STARTED_PID
    : >"$ROWS"
    load alone
    start_drip
    load drip
    OPEN_AFTER_LOAD=$(metrics mxgate_sessions_open | awk '{ print $2 }')
    log "waiting for the time rules to cut the drippers off"
    wait "$DRIP_PID" || die "trickle.py failed: $(tail -n3 "$WORK/drip.err")"
    DRIP_PID=""
    load after
    metrics mxgate_time_refusals_total mxgate_sessions_ended_total mxgate_sessions_open >"$WORK/metrics.end"
    report
}

trap '[[ -z $DRIP_PID ]] || kill "$DRIP_PID" 2>/dev/null; cleanup' EXIT
main "$@"
