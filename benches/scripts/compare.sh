#!/usr/bin/env bash
# benches/scripts/compare.sh — mxgate side by side with Postfix's smtp-sink.
#
# Builds mxgate (release), starts every server once on its own port, then in
# each scenario drives them in turn, A B C A B C ..., with Postfix's
# smtp-source (one message per connection, no pipelining: smtp-source has
# none) and reports medians and mxgate/smtp-sink ratios. Servers:
#
#   smtp-sink        smtp-sink -u root -m M 127.0.0.1:PORT BACKLOG   (accepts everything)
#   smtp-sink reject the same with -f RCPT -B "550 5.1.1 ...": every RCPT gets 550
#   mxgate durable   mxgate --recipients TABLE --listen ... --spool DIR
#   mxgate discard   the same with --spool-mode discard
#
# Scenarios (both from `smtp-source -s CONCURRENCY -m MESSAGES`):
#   accept  one SIZE-byte message per connection to user@example.com:
#           HELO, MAIL, RCPT, DATA, message, QUIT. Unit: messages/s.
#   reject  one RCPT per connection to nosuchuser@example.com (unknown user
#           in a local domain), with -A: HELO, MAIL, RCPT→550, RSET, QUIT.
#           The same exchange against smtp-sink's forced 550. Unit: sessions/s.
#
# Then, only if target/release/mxgate-load exists, the same servers driven by
# mxgate-load at LOAD_LEVELS concurrent sessions (issue 4).
#
# Settings (environment):
#   PORT=25250         first port; servers use PORT .. PORT+3
#   ROUNDS=3           rounds of A B C per scenario (medians over rounds)
#   MESSAGES=10000     messages (= sessions) per smtp-source run
#   CONCURRENCY=200    smtp-source -s
#   SIZE=1024          message payload bytes (smtp-source -l)
#   SCENARIOS="accept reject"
#   TABLE_SIZE=100000  users in the generated recipient table
#   RUN_TIMEOUT=300    seconds before one client run counts as failed
#   MXGATE_ARGS=""     extra mxgate flags (e.g. "--workers 2")
#   LOAD_LEVELS="1 100 1000 10000"  LOAD_ROUNDS=3
#   LOAD_MIN_SESSIONS=2000  sessions per mxgate-load run (at least 2 per slot)
#   LOAD_ARGS=""       extra mxgate-load flags (e.g. "--connect-window 10000")
#   LOAD_HGRM_DIR=DIR  keep round 1's histograms (.hgrm) and percentile plot
#                      (SVG) of each level and server in DIR/LEVEL-SERVER/
#   NO_BUILD=1         use the binaries as they are
#   SERVER_CPUS=N      taskset list every server is confined to; default: the
#                      last core, so each server gets one core, as smtp-sink (one
#                      process) can use no more, and mxgate with its defaults
#                      runs one worker there. Empty: servers may use every core.
#   CLIENT_CPUS=LIST   taskset list of the client; default: the other cores
#                      when SERVER_CPUS is left at its default (as in
#                      backends.sh), so neither side runs on the other's core;
#                      otherwise unconfined. Empty: unconfined.
#   KEEP_WORK=1        keep logs and client output (path printed at exit)
#   BENCH_TMP=/tmp     where scratch, table and spool live (a real disk)
#   SPOOL_FS=loop|host the durable spool on a fresh loop-mounted journaled
#                      ext4 (default when root) or on BENCH_TMP's file system
#                      (see mount_spool_fs in lib.sh for why it matters)
# Output: the tables on stdout, progress on stderr.
set -euo pipefail
source "$(dirname "$0")/cpus.sh"
split_cpus
source "$(dirname "$0")/lib.sh"

PORT=${PORT:-25250}
ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-10000}
CONCURRENCY=${CONCURRENCY:-200}
SIZE=${SIZE:-1024}
SCENARIOS=${SCENARIOS-accept reject} # empty: only the mxgate-load section
TABLE_SIZE=${TABLE_SIZE:-100000}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
MXGATE_ARGS=${MXGATE_ARGS:-}
LOAD_LEVELS=${LOAD_LEVELS-1 100 1000 10000} # empty: skip the section
LOAD_ROUNDS=${LOAD_ROUNDS:-3}
LOAD_MIN_SESSIONS=${LOAD_MIN_SESSIONS:-2000}
LOAD_HGRM_DIR=${LOAD_HGRM_DIR:-}
LOAD_ARGS=${LOAD_ARGS:-}
SINK_MAX_SESSIONS=19500 # smtp-sink -m: above the largest load level
BACKLOG=4096

declare -A PORT_OF PID_OF
# scenario, server, round, rate/s, server and client CPU µs per session
RESULTS=$WORK/results.tsv

# --- servers ----------------------------------------------------------------

start_all() {
    local spool_dir=$WORK/spool
    make_table "$WORK/recipients.txt" "$TABLE_SIZE"
    mount_spool_fs "$spool_dir"

    PORT_OF[sink]=$PORT
    start_server sink "$PORT" smtp-sink -u root -m "$SINK_MAX_SESSIONS" "127.0.0.1:$PORT" "$BACKLOG" ||
        die "smtp-sink would not start"
    PID_OF[sink]=$STARTED_PID

    # -f RCPT answers every RCPT with the -B reply (and implies -p, no
    # PIPELINING, which smtp-source never uses anyway).
    PORT_OF[sink-reject]=$((PORT + 1))
    start_server sink-reject "$((PORT + 1))" smtp-sink -u root -m "$SINK_MAX_SESSIONS" \
        -f RCPT -B "550 5.1.1 <nosuchuser@example.com>: Recipient address rejected: User unknown" \
        "127.0.0.1:$((PORT + 1))" "$BACKLOG" || die "smtp-sink (reject) would not start"
    PID_OF[sink-reject]=$STARTED_PID

    if [[ -n $MXGATE_PROBLEM ]]; then return; fi
    if [[ ! -x $MXGATE_BIN ]]; then
        MXGATE_PROBLEM="$MXGATE_BIN does not exist"
        return
    fi
    local mode port
    for mode in durable discard; do
        port=$((PORT + 2))
        [[ $mode == discard ]] && port=$((PORT + 3))
        PORT_OF[mx-$mode]=$port
        local -a args=(--recipients "$WORK/recipients.txt" --listen "127.0.0.1:$port"
            --spool "$spool_dir/$mode")
        [[ $mode == discard ]] && args+=(--spool-mode discard)
        # shellcheck disable=SC2206 # MXGATE_ARGS is split on purpose
        args+=($MXGATE_ARGS)
        if start_server "mx-$mode" "$port" "$MXGATE_BIN" "${args[@]}"; then
            PID_OF[mx-$mode]=$STARTED_PID
        else
            MXGATE_PROBLEM="$MXGATE_BIN is not a working server yet (see above)"
            return
        fi
    done
}

server_label() {
    case $1 in
    sink) echo "smtp-sink" ;;
    sink-reject) echo "smtp-sink -f RCPT" ;;
    mx-durable) echo "mxgate durable" ;;
    mx-discard) echo "mxgate discard" ;;
    esac
}

# The servers of a scenario, peer first (ratios are against the first).
servers_for() {
    local peer=sink
    [[ $1 == reject ]] && peer=sink-reject
    echo "$peer"
    if [[ -z $MXGATE_PROBLEM ]]; then echo mx-durable mx-discard; fi
}

# --- one smtp-source run ----------------------------------------------------

# Messages in the durable spool's new/. They stay there until the end: on an
# ext4 without a journal (this machine's), deleting thousands of files makes
# the next creates slow (the inode allocator skips recently deleted inodes,
# ext4 ialloc.c recently_deleted()), which would bill our cleanup to mxgate.
spooled_count() { find "$WORK/spool/durable/new" -name '*.bsmtp' 2>/dev/null | wc -l; }

record_failure() { printf '%s\t%s\t%s\tfail\tfail\tfail\n' "$@" >>"$RESULTS"; }

# run_source SCENARIO SERVER ROUND: one timed smtp-source run; appends a line
# to $RESULTS, or logs why the run does not count.
run_source() {
    local scenario=$1 server=$2 round=$3
    local port=${PORT_OF[$server]} pid=${PID_OF[$server]}
    local out=$WORK/source-$scenario-$server-$round
    smtp_source_cmd "$scenario"
    local -a cmd=("${SOURCE_CMD[@]}" "127.0.0.1:$port")

    alive "$pid" || die "$(server_label "$server") died before round $round (log: $WORK/$server.log)"
    local rc=0 spooled_before
    spooled_before=$(spooled_count)
    # /usr/bin/time: the client's own CPU (user+sys), to see who saturates.
    timed_client "$pid" "$out.out" "$out.err" /usr/bin/time -f '%U %S' -o "$out.time" "${cmd[@]}" ||
        rc=$?

    if [[ $rc != 0 ]]; then
        log "  $scenario/$(server_label "$server") round $round FAILED (status $rc): $(tail -n1 "$out.err")"
        record_failure "$scenario" "$server" "$round"
        return
    fi
    # Check that the servers did what the scenario says, not just that the
    # client finished.
    local rejected
    rejected=$(grep -c 'recipient rejected' "$out.err" || true)
    if [[ $scenario == reject && $rejected != "$MESSAGES" ]]; then
        log "  $scenario/$server round $round: $rejected of $MESSAGES RCPTs rejected; not counted"
        record_failure "$scenario" "$server" "$round"
        return
    fi
    if [[ $server == mx-durable && $scenario == accept ]]; then
        local spooled=$(($(spooled_count) - spooled_before))
        if [[ $spooled != "$MESSAGES" ]]; then
            log "  mxgate durable round $round: $spooled files in new/ for $MESSAGES messages; not counted"
            record_failure "$scenario" "$server" "$round"
            return
        fi
    fi
    awk -v s="$scenario" -v srv="$server" -v r="$round" -v n="$MESSAGES" \
        -v secs="$RUN_SECS" -v server_cpu="$RUN_SERVER_CPU" -v client="$(tail -n1 "$out.time")" \
        'BEGIN { split(client, c, " ")
                 printf "%s\t%s\t%d\t%.1f\t%.1f\t%.1f\n", s, srv, r, n / secs,
                        server_cpu * 1e6 / n, (c[1] + c[2]) * 1e6 / n }' \
        >>"$RESULTS"
    log "  $scenario/$(server_label "$server") round $round: $(tail -n1 "$RESULTS" | cut -f4)/s"
}

# --- report -----------------------------------------------------------------

# Medians per (scenario, server) and ratios against the scenario's first server.
summarize() {
    python3 - "$RESULTS" "$ROUNDS" <<'EOF'
import sys, statistics
from collections import defaultdict
path, rounds = sys.argv[1], sys.argv[2]
rates, cpus, clients, order = defaultdict(list), defaultdict(list), defaultdict(list), []
for line in open(path):
    scen, server, _, rate, cpu, client = line.rstrip("\n").split("\t")
    if (scen, server) not in order:
        order.append((scen, server))
    if rate == "fail":
        continue
    rates[scen, server].append(float(rate))
    cpus[scen, server].append(float(cpu))
    clients[scen, server].append(float(client))
labels = {"sink": "smtp-sink", "sink-reject": "smtp-sink -f RCPT",
          "mx-durable": "mxgate durable", "mx-discard": "mxgate discard"}
units = {"accept": "messages/s", "reject": "sessions/s"}
print(f"{'scenario':<8} {'server':<18} {'runs':>4} {'median/s':>9} {'min..max':>15} "
      f"{'ratio':>6} {'server CPU µs/sess':>18} {'client CPU µs/sess':>18}")
peer = {}
for scen, server in order:
    r = rates[scen, server]
    if not r:
        print(f"{scen:<8} {labels[server]:<18} 0/{rounds:<2} every run failed (see the log above)")
        continue
    med = statistics.median(r)
    peer.setdefault(scen, med)
    print(f"{scen:<8} {labels[server]:<18} {len(r):>2}/{rounds:<1} {med:>9.0f} "
          f"{min(r):>7.0f}..{max(r):<7.0f} {med / peer[scen]:>6.2f} "
          f"{statistics.median(cpus[scen, server]):>18.0f} "
          f"{statistics.median(clients[scen, server]):>18.0f}")
print()
print("ratio = median / the scenario's smtp-sink median; units:",
      ", ".join(f"{k} = {v}" for k, v in units.items()))
print("CPU columns: user+system time per session (medians), server = all its threads,")
print("client = smtp-source; with 2 cores, server + client near 2 cores × wall time means saturated.")
EOF
}

# --- mxgate-load (issue 4) --------------------------------------------------
# Runs only when target/release/mxgate-load exists. Closed loop: LEVEL
# sessions open at once, one message each (--messages 1), until
# --sessions-total have run. Each run's JSON is kept in $WORK/load-*.json;
# the script times the run itself (as for smtp-source) and reads counts and
# RCPT/session p99 from the JSON (benches/scripts/load_summary.py).

run_load_section() {
    if [[ ! -x $MXGATE_LOAD_BIN ]]; then
        echo "mxgate-load section skipped: $MXGATE_LOAD_BIN does not exist."
        return
    fi
    if [[ -z $LOAD_LEVELS ]]; then
        echo "mxgate-load section skipped: LOAD_LEVELS is empty."
        return
    fi
    local load_results=$WORK/load.tsv level round server
    : >"$load_results"
    for level in $LOAD_LEVELS; do
        # Sessions in all: LOAD_MIN_SESSIONS, and at least 2 per concurrent
        # slot so that ramp-up and drain do not dominate.
        local messages=$((2 * level > LOAD_MIN_SESSIONS ? 2 * level : LOAD_MIN_SESSIONS))
        for ((round = 1; round <= LOAD_ROUNDS; round++)); do
            for server in $(servers_for accept); do
                run_load "$server" "$level" "$messages" "$round" "$load_results"
            done
        done
    done
    echo
    echo "mxgate-load ${LOAD_ARGS:-(default flags)}: one ${SIZE}-byte message per session, closed loop, median of $LOAD_ROUNDS rounds"
    python3 "$BENCH_DIR/load_summary.py" table "$load_results"
}

run_load() {
    local server=$1 level=$2 messages=$3 round=$4 results=$5
    local json=$WORK/load-$server-$level-$round.json rc=0
    local pid=${PID_OF[$server]}
    local -a hgrm=()
    if [[ -n $LOAD_HGRM_DIR && $round == 1 ]]; then
        mkdir -p "$LOAD_HGRM_DIR/$level-$server"
        hgrm=(--hgrm-dir "$LOAD_HGRM_DIR/$level-$server")
    fi
    alive "$pid" || die "$(server_label "$server") died (log: $WORK/$server.log)"
    # shellcheck disable=SC2086 # LOAD_ARGS is split on purpose
    timed_client "$pid" "$json" "$json.err" /usr/bin/time -f '%U %S' -o "$json.time" "$MXGATE_LOAD_BIN" \
        --target "127.0.0.1:${PORT_OF[$server]}" --sessions "$level" --messages 1 \
        --sessions-total "$messages" --size "$SIZE" --json "${hgrm[@]}" $LOAD_ARGS || rc=$?
    if [[ $rc != 0 ]]; then
        log "  load $level/$(server_label "$server") round $round FAILED (status $rc): $(tail -n1 "$json.err")"
        return
    fi
    local line
    if ! line=$(python3 "$BENCH_DIR/load_summary.py" row "$json" "$RUN_SECS" "$RUN_SERVER_CPU" \
        "$(awk '{ print $1 + $2 }' "$json.time")"); then
        log "  load $level/$(server_label "$server") round $round: unreadable JSON ($json)"
        return
    fi
    printf '%s\t%s\t%s\t%s\n' "$level" "$server" "$round" "$line" >>"$results"
    log "  load $level/$(server_label "$server") round $round: $line"
}

# --- main -------------------------------------------------------------------

main() {
    ensure_tools
    raise_nofile $((SINK_MAX_SESSIONS + 100))
    build_mxgate
    start_all
    if [[ -n $MXGATE_PROBLEM ]]; then
        log "SKIPPING the mxgate servers: $MXGATE_PROBLEM"
    fi

    : >"$RESULTS"
    local scenario round server load_start
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)
    for scenario in $SCENARIOS; do
        log "scenario $scenario: $ROUNDS rounds of [$(servers_for "$scenario" | tr '\n' ' ')]"
        for ((round = 1; round <= ROUNDS; round++)); do
            for server in $(servers_for "$scenario"); do
                run_source "$scenario" "$server" "$round"
            done
        done
    done

    echo "== mxgate vs smtp-sink, $(date -u '+%Y-%m-%d %H:%M UTC')"
    machine_summary
    echo "load average at start: $load_start (the machine is shared: alternation and medians absorb some noise)"
    echo "servers confined to CPUs: ${SERVER_CPUS:-(none)}; client: ${CLIENT_CPUS:-(any)}"
    echo "mxgate: $MXGATE_BIN ${MXGATE_ARGS:-(default flags)}; git $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "driver: smtp-source -s $CONCURRENCY -m $MESSAGES -l $SIZE (one message or one RCPT per connection)"
    echo
    if [[ -s $RESULTS ]]; then summarize; else echo "smtp-source section skipped: SCENARIOS is empty."; fi
    if [[ -n $MXGATE_PROBLEM ]]; then
        echo
        echo "mxgate rows missing: $MXGATE_PROBLEM"
    fi
    echo
    run_load_section
}

main "$@"
