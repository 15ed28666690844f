#!/usr/bin/env bash
# benches/scripts/ab.sh — two builds of mxgate side by side in one run ("before" and
# "after" a change), each against the same Postfix smtp-sink, alternating
# round by round, so a refactor's cost shows as a ratio and not as the
# machine's mood of the hour.
#
#   BEFORE=path/to/old/mxgate AFTER=path/to/new/mxgate benches/scripts/ab.sh
#
# Parts (PARTS, default source pipelined idle):
#   source   smtp-source, one message (accept) or one refused RCPT (reject)
#            per connection; rounds of [smtp-sink, before, after]; per round
#            the ratio of each mxgate to smtp-sink; medians of those ratios.
#            The durable spool is on a fresh loop-mounted journaled ext4.
#   pipelined mxgate-load --pipelining (persistent sessions, many messages
#            each) on each backend; rounds of [before, after] per backend,
#            discard spool (the backends' cost, not the disk's).
#   idle     IDLE sessions that read their greeting and stay: server RSS
#            growth per session, per build and backend.
#   starttls mxgate-load --starttls, one message per session (connect, EHLO,
#            STARTTLS, handshake, EHLO, message, QUIT), TLS_SESSIONS per run,
#            CONCURRENCY_TLS at once, ECDSA P-256 certificate, discard
#            spool; rounds of [before, after]; sessions/s. With it, idle
#            also holds IDLE sessions after STARTTLS (idle_hold.py
#            --starttls) on each build.
# Servers are confined to SERVER_CPUS (default: the last core), clients to
# the other cores. Settings: ROUNDS=15 MESSAGES=10000 CONCURRENCY=200
# SIZE=1024 SESSIONS=50 PIPELINED=4000 IDLE=19000 TLS_SESSIONS=5000
# CONCURRENCY_TLS=50 PORT=25350
# LOAD=path/to/mxgate-load (default: AFTER's directory).
set -euo pipefail
source "$(dirname "$0")/cpus.sh"
SERVER_CPUS=${SERVER_CPUS-$(last_cpu)}
CLIENT_CPUS=${CLIENT_CPUS-$(other_cpus)}
SPOOL_FS_SIZE=${SPOOL_FS_SIZE:-8G} # two spools of 15 rounds: inodes
source "$(dirname "$0")/lib.sh"

BEFORE=${BEFORE:?set BEFORE=path to the old mxgate binary}
AFTER=${AFTER:?set AFTER=path to the new mxgate binary}
LOAD=${LOAD:-$(dirname "$AFTER")/mxgate-load}
PARTS=${PARTS:-source pipelined idle}
ROUNDS=${ROUNDS:-15}
MESSAGES=${MESSAGES:-10000}
CONCURRENCY=${CONCURRENCY:-200}
SIZE=${SIZE:-1024}
SESSIONS=${SESSIONS:-50}
PIPELINED=${PIPELINED:-4000}
IDLE=${IDLE:-19000}
TLS_SESSIONS=${TLS_SESSIONS:-5000}
CONCURRENCY_TLS=${CONCURRENCY_TLS:-50}
PORT=${PORT:-25350}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
RESULTS=$WORK/ab.tsv # part, case, server, round, rate/s, server CPU µs/unit
declare -A PORT_OF PID_OF

start_mx() { # name port binary args...
    local name=$1 port=$2
    shift 2
    start_server "$name" "$port" "$@" --recipients "$WORK/recipients.txt" \
        --listen "127.0.0.1:$port" || die "$name would not start"
    PORT_OF[$name]=$port
    PID_OF[$name]=$STARTED_PID
}

start_source_servers() {
    make_table "$WORK/recipients.txt" 100000
    mount_spool_fs "$WORK/spool"
    start_server sink "$PORT" smtp-sink -u root -m 19500 "127.0.0.1:$PORT" 4096 || die "smtp-sink"
    PORT_OF[sink]=$PORT PID_OF[sink]=$STARTED_PID
    start_server sink-reject "$((PORT + 1))" smtp-sink -u root -m 19500 -f RCPT \
        -B "550 5.1.1 <nosuchuser@example.com>: Recipient address rejected: User unknown" \
        "127.0.0.1:$((PORT + 1))" 4096 || die "smtp-sink -f RCPT"
    PORT_OF[sink-reject]=$((PORT + 1)) PID_OF[sink-reject]=$STARTED_PID
    start_mx before "$((PORT + 2))" "$BEFORE" --spool "$WORK/spool/before"
    start_mx after "$((PORT + 3))" "$AFTER" --spool "$WORK/spool/after"
}

# timed NAME UNITS OUT COMMAND...: runs a client against server NAME;
# prints its rate (UNITS per second) and the server's CPU µs per unit.
timed() {
    local name=$1 units=$2 out=$3 rc=0
    shift 3
    alive "${PID_OF[$name]}" || die "$name died (log: $WORK/$name.log)"
    timed_client "${PID_OF[$name]}" "$out" "$out.err" "$@" || rc=$?
    [[ $rc == 0 ]] || die "$name: client failed ($rc): $(tail -n1 "$out.err")"
    awk -v s="$RUN_SECS" -v c="$RUN_SERVER_CPU" -v n="$units" \
        'BEGIN { printf "%.1f\t%.1f\n", n / s, c * 1e6 / n }'
}

source_round() { # case round
    local case=$1 round=$2 name peer=sink out
    [[ $case == reject ]] && peer=sink-reject
    smtp_source_cmd "$case"
    for name in "$peer" before after; do
        out=$WORK/source-$case-$name-$round
        local row
        row=$(timed "$name" "$MESSAGES" "$out" "${SOURCE_CMD[@]}" "127.0.0.1:${PORT_OF[$name]}")
        if [[ $case == reject ]] && [[ $(grep -c 'recipient rejected' "$out.err" || true) != "$MESSAGES" ]]; then
            die "$case/$name round $round: not every RCPT was refused"
        fi
        printf 'source\t%s\t%s\t%s\t%s\n' "$case" "${name/sink-reject/sink}" "$round" "$row" >>"$RESULTS"
        log "  $case $name round $round: $row"
    done
}

start_pipelined_servers() {
    local port=$((PORT + 4)) build backend
    [[ -s $WORK/recipients.txt ]] || make_table "$WORK/recipients.txt" 100000
    for backend in epoll uring; do
        for build in before after; do
            local bin=$BEFORE
            [[ $build == after ]] && bin=$AFTER
            start_mx "$build-$backend" "$port" "$bin" --backend "$backend" --workers 1 \
                --spool "$WORK/spool-$build-$backend" --spool-mode discard
            port=$((port + 1))
        done
    done
}

pipelined_round() { # round
    local round=$1 backend build name row json
    for backend in epoll uring; do
        for build in before after; do
            name=$build-$backend
            json=$WORK/pipelined-$name-$round.json
            row=$(timed "$name" $((SESSIONS * PIPELINED)) "$json" "$LOAD" \
                --target "127.0.0.1:${PORT_OF[$name]}" --threads 1 --json \
                --sessions "$SESSIONS" --messages "$PIPELINED" --pipelining)
            python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["counts"]; sys.exit(c["messages_accepted"] != int(sys.argv[2]))' \
                "$json" $((SESSIONS * PIPELINED)) || die "$name round $round: not every message was accepted"
            printf 'pipelined\t%s\t%s\t%s\t%s\n' "$backend" "$build" "$round" "$row" >>"$RESULTS"
            log "  pipelined $name round $round: $row"
        done
    done
}

start_starttls_servers() {
    local port=$((PORT + 8)) build bin
    [[ -s $WORK/recipients.txt ]] || make_table "$WORK/recipients.txt" 100000
    make_cert ecdsa
    for build in before after; do
        bin=$BEFORE
        [[ $build == after ]] && bin=$AFTER
        start_mx "$build-tls" "$port" "$bin" --workers 1 --spool "$WORK/spool-$build-tls" \
            --spool-mode discard --tls-cert "$WORK/ecdsa.crt" --tls-key "$WORK/ecdsa.key"
        port=$((port + 1))
    done
}

starttls_round() { # round
    local round=$1 build name row json
    for build in before after; do
        name=$build-tls
        json=$WORK/starttls-$name-$round.json
        row=$(timed "$name" "$TLS_SESSIONS" "$json" "$LOAD" --target "127.0.0.1:${PORT_OF[$name]}" \
            --threads 1 --json --starttls --sessions "$CONCURRENCY_TLS" \
            --sessions-total "$TLS_SESSIONS" --messages 1 --size "$SIZE")
        python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["counts"]; sys.exit(c["messages_accepted"] != int(sys.argv[2]))' \
            "$json" "$TLS_SESSIONS" || die "$name round $round: not every message was accepted"
        printf 'starttls\ttls\t%s\t%s\t%s\n' "$build" "$round" "$row" >>"$RESULTS"
        log "  starttls $name round $round: $row"
    done
}

# RSS growth per idle session of server NAME (benches/scripts/idle_hold.py
# holds the sessions and reads the server's memory).
# (--starttls: after the handshake and a second EHLO).
idle_bytes() { # name [--starttls]
    local out=$WORK/idle-$1
    run_client 300 "$out" "$out.err" python3 "$BENCH_DIR/idle_hold.py" \
        --target "127.0.0.1:${PORT_OF[$1]}" --pid "${PID_OF[$1]}" --sessions "$IDLE" "${@:2}" ||
        log "$1: not every idle session was held: $(cat "$out")"
    grep -o 'bytes_per_session=[0-9.]*' "$out" | cut -d= -f2
}

summarize() {
    python3 - "$RESULTS" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = defaultdict(dict)  # (part, case, round) -> server -> (rate, cpu)
idle = []
for line in open(sys.argv[1]):
    part, case, server, rnd, rate, cpu = line.rstrip("\n").split("\t")
    if part == "idle":
        idle.append((case, server, rate))
        continue
    rows[part, case, rnd][server] = (float(rate), float(cpu))
med = statistics.median
def report(part, case, ref):
    rounds = [r for (p, c, _), r in rows.items() if (p, c) == (part, case)]
    if not rounds:
        return
    if ref:
        b = [r["before"][0] / r[ref][0] for r in rounds]
        a = [r["after"][0] / r[ref][0] for r in rounds]
        print(f"{part:9} {case:7} {len(rounds):>3}  {med(r[ref][0] for r in rounds):>9.0f}"
              f" {med(b):>7.3f} {med(a):>7.3f} {med(a) / med(b):>7.3f}"
              f" {med(r['before'][1] for r in rounds):>8.1f} {med(r['after'][1] for r in rounds):>8.1f}")
    else:
        rb = med(r["before"][0] for r in rounds)
        ra = med(r["after"][0] for r in rounds)
        per = med(r["after"][0] / r["before"][0] for r in rounds)
        print(f"{part:9} {case:7} {len(rounds):>3}  {'-':>9} {rb:>7.0f} {ra:>7.0f} {per:>7.3f}"
              f" {med(r['before'][1] for r in rounds):>8.1f} {med(r['after'][1] for r in rounds):>8.1f}")
print(f"{'part':9} {'case':7} {'rds':>3}  {'sink/s':>9} {'before':>7} {'after':>7} {'a/b':>7} {'cpu b':>8} {'cpu a':>8}")
for case in ("accept", "reject"):
    report("source", case, "sink")
for case in ("epoll", "uring"):
    report("pipelined", case, None)
report("starttls", "tls", None)
print("source: before/after = median over rounds of (mxgate rate / smtp-sink rate in that round);")
print("pipelined, starttls: medians of messages (sessions)/s; a/b = median of per-round after/before ratios;")
print("cpu = server CPU µs per message or session (median).")
for case, server, per in idle:
    print(f"idle sessions, {case} {server}: {per} octets each (RSS growth / sessions)")
EOF
}

main() {
    ensure_tools
    raise_nofile 20000
    [[ -x $BEFORE && -x $AFTER && -x $LOAD ]] || die "need executable BEFORE, AFTER and LOAD ($LOAD)"
    : >"$RESULTS"
    local load_start round
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)
    if [[ $PARTS == *source* ]]; then
        start_source_servers
        for ((round = 1; round <= ROUNDS; round++)); do
            source_round accept "$round"
            source_round reject "$round"
        done
    fi
    if [[ $PARTS == *pipelined* || $PARTS == *idle* ]]; then start_pipelined_servers; fi
    if [[ $PARTS == *pipelined* ]]; then
        for ((round = 1; round <= ROUNDS; round++)); do pipelined_round "$round"; done
    fi
    if [[ $PARTS == *starttls* ]]; then
        start_starttls_servers
        for ((round = 1; round <= ROUNDS; round++)); do starttls_round "$round"; done
    fi
    if [[ $PARTS == *idle* ]]; then
        local name
        for name in before-epoll after-epoll before-uring after-uring; do
            printf 'idle\t%s\t%s\t-\t%s\t-\n' "${name#*-}" "${name%-*}" "$(idle_bytes "$name")" >>"$RESULTS"
        done
        if [[ $PARTS == *starttls* ]]; then
            for name in before-tls after-tls; do
                printf 'idle\tstarttls\t%s\t-\t%s\t-\n' "${name%-*}" "$(idle_bytes "$name" --starttls)" >>"$RESULTS"
            done
        fi
    fi
    echo "== before/after, $(date -u '+%Y-%m-%d %H:%M UTC'), load average at start $load_start"
    machine_summary
    echo "before: $BEFORE"
    echo "after:  $AFTER"
    echo "servers on CPUs ${SERVER_CPUS:-any}, clients on ${CLIENT_CPUS:-any}; smtp-source -s $CONCURRENCY" \
        "-m $MESSAGES -l $SIZE; mxgate-load --sessions $SESSIONS --messages $PIPELINED --pipelining"
    echo
    summarize
}

main "$@"
