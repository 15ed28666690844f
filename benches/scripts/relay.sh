#!/usr/bin/env bash
# benches/scripts/relay.sh — mxgate receiving and relaying (issue 14), side
# by side in one run with mxgate receiving only and with Postfix doing the
# same job.
#
# Postfix's smtp-source sends SIZE-byte messages (one per connection, to
# user@example.com) and Postfix's smtp-sink is the next hop. Every round
# drives, in turn:
#
#   mxgate receive-only  mxgate --spool DIR (durable, no relay): the rate is
#                        messages / time until smtp-source is done; its new/
#                        is emptied after each round, untimed.
#   mxgate relay         the same with --relay-to smtp://SINK: messages / time
#                        until the last one has left new/ (smtp-sink's 250),
#                        so the relay must keep up for the rate to hold.
#   Postfix relay        a private Postfix (benches/scripts/postfix.sh): smtpd
#                        in, its queue, its smtp client out to the same sink
#                        (relayhost): messages / time until the log shows every
#                        one `status=sent`.
#
# The servers (mxgate's workers and relay threads; Postfix's master and every
# daemon) share the last core, the client and the sink the others (cpus.sh).
# The spools (mxgate's and Postfix's queue) are on one fresh loop-mounted
# journaled ext4 (SPOOL_FS, see mount_spool_fs in lib.sh).
#
# Latency accepted → delivered, p50/p99: for mxgate from its log, the
# `queued as ID` line to the relay's `ID: relay=… status=sent` line (µs
# timestamps); for Postfix its own `delay=` of each `status=sent` line
# (arrival to delivery, 10 ms resolution).
#
# Settings (environment): PORT=25350 (PORT..PORT+3), ROUNDS=3,
# MESSAGES=5000, CONCURRENCY=100, SIZE=1024, TABLE_SIZE=1000,
# DRAIN_TIMEOUT=300 (seconds for a round's relaying to finish),
# MXGATE_ARGS="" (extra flags for both mxgate servers, e.g.
# "--relay-connections 8"), NO_BUILD, SERVER_CPUS, CLIENT_CPUS, KEEP_WORK,
# BENCH_TMP, SPOOL_FS as in compare.sh. Output: the table on stdout, progress
# on stderr.
set -euo pipefail
source "$(dirname "$0")/cpus.sh"
split_cpus
source "$(dirname "$0")/lib.sh"
source "$BENCH_DIR/postfix.sh"

PORT=${PORT:-25350}
ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-5000}
CONCURRENCY=${CONCURRENCY:-100}
SIZE=${SIZE:-1024}
TABLE_SIZE=${TABLE_SIZE:-1000}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-300}
MXGATE_ARGS=${MXGATE_ARGS:-}
BACKLOG=4096

declare -A PORT_OF PID_OF
SPOOL=$WORK/spool
POSTFIX_DIR=$SPOOL/postfix
RESULTS=$WORK/results.tsv # server, round, rate/s, receive-phase rate/s

# --- servers ----------------------------------------------------------------

start_mxgate() {
    local name=$1 port=$2
    shift 2
    PORT_OF[$name]=$port
    # shellcheck disable=SC2086 # MXGATE_ARGS is split on purpose
    start_server "$name" "$port" env RUST_LOG=info NO_COLOR=1 "$MXGATE_BIN" \
        --recipients "$WORK/recipients.txt" --listen "127.0.0.1:$port" \
        --spool "$SPOOL/$name" "$@" $MXGATE_ARGS || die "$name would not start"
    PID_OF[$name]=$STARTED_PID
}

start_all() {
    [[ -n $MXGATE_PROBLEM ]] && die "$MXGATE_PROBLEM"
    [[ -x $MXGATE_BIN ]] || die "$MXGATE_BIN does not exist"
    make_table "$WORK/recipients.txt" "$TABLE_SIZE"
    chmod 755 "$WORK" # Postfix's daemons reach its queue under it
    mount_spool_fs "$SPOOL"

    # The next hop runs beside the client, not on the servers' core.
    PORT_OF[sink]=$PORT
    SERVER_CPUS=$CLIENT_CPUS start_server sink "$PORT" \
        smtp-sink -u root -m 19500 "127.0.0.1:$PORT" "$BACKLOG" || die "smtp-sink would not start"

    start_mxgate mx-receive $((PORT + 1))
    start_mxgate mx-relay $((PORT + 2)) --relay-to "smtp://127.0.0.1:$PORT"

    PORT_OF[postfix]=$((PORT + 3))
    postfix_init "$POSTFIX_DIR"
    postfix_smtpd "$POSTFIX_DIR" "127.0.0.1:$((PORT + 3))"
    postfix_relay_to "$POSTFIX_DIR" "127.0.0.1:$PORT" none
    # Mail for example.com is relayed (mydestination is empty), from
    # mynetworks (loopback) only; no local mail, no notices to postmaster.
    postfix_set "$POSTFIX_DIR" "notify_classes =" "smtpd_relay_restrictions = permit_mynetworks, reject"
    POSTFIX_CPUS=$SERVER_CPUS postfix_start "$POSTFIX_DIR" >&2 || die "Postfix would not start"
    local i
    for ((i = 0; i < 100; i++)); do banner_ok $((PORT + 3)) && break; sleep 0.2; done
    banner_ok $((PORT + 3)) || die "Postfix's smtpd does not answer on $((PORT + 3))"
}

stop_postfix() { [[ -d $POSTFIX_DIR/etc ]] && postfix_stop "$POSTFIX_DIR" || true; }

# --- one round --------------------------------------------------------------

spool_files() { find "$SPOOL/$1/$2" -name '*.bsmtp' 2>/dev/null | wc -l; }
postfix_sent() { grep -c 'status=sent' "$POSTFIX_DIR/maillog" 2>/dev/null || true; }
postfix_queued() { find "$POSTFIX_DIR/queue"/{incoming,active,deferred,maildrop} -type f 2>/dev/null | wc -l; }

# drained SERVER BASELINE: true once the round's messages have left.
drained() {
    case $1 in
    mx-receive) true ;;
    mx-relay) [[ $(spool_files mx-relay new) == 0 ]] ;;
    postfix) [[ $(postfix_sent) -ge $(($2 + MESSAGES)) && $(postfix_queued) == 0 ]] ;;
    esac
}

# run_round SERVER ROUND: smtp-source, then wait until the messages left;
# appends a line to $RESULTS or logs why the round does not count.
run_round() {
    local server=$1 round=$2 out=$WORK/source-$1-$2 rc=0 baseline=0 t0 t1 t2
    [[ $server == postfix ]] && baseline=$(postfix_sent)
    t0=$(date +%s.%N)
    run_client "$RUN_TIMEOUT" "$out.out" "$out.err" smtp-source -s "$CONCURRENCY" -m "$MESSAGES" \
        -l "$SIZE" -M client.example.net -f sender@example.com -t user@example.com \
        "127.0.0.1:${PORT_OF[$server]}" || rc=$?
    t1=$(date +%s.%N)
    if [[ $rc != 0 ]]; then
        log "  $server round $round FAILED (smtp-source status $rc): $(tail -n1 "$out.err")"
        return
    fi
    local deadline=$((SECONDS + DRAIN_TIMEOUT))
    until drained "$server" "$baseline"; do
        if ((SECONDS > deadline)); then
            log "  $server round $round: not drained within ${DRAIN_TIMEOUT}s; not counted"
            return
        fi
        sleep 0.05
    done
    t2=$(date +%s.%N)
    if [[ $server == mx-receive ]]; then
        local spooled
        spooled=$(spool_files mx-receive new)
        # Emptied after each round, untimed, as the relay keeps its new/:
        # a directory that only grows would handicap receive-only.
        find "$SPOOL/mx-receive/new" -name '*.bsmtp' -delete
        if [[ $spooled != "$MESSAGES" ]]; then
            log "  mx-receive round $round: $spooled files in new/ for $MESSAGES messages; not counted"
            return
        fi
    fi
    if [[ $server == mx-relay && $(spool_files mx-relay dead) != 0 ]]; then
        log "  mx-relay round $round: messages in dead/; not counted"
        return
    fi
    awk -v s="$server" -v r="$round" -v n="$MESSAGES" -v t0="$t0" -v t1="$t1" -v t2="$t2" \
        'BEGIN { printf "%s\t%d\t%.1f\t%.1f\n", s, r, n / (t2 - t0), n / (t1 - t0) }' >>"$RESULTS"
    log "  $server round $round: $(tail -n1 "$RESULTS" | cut -f3)/s end to end"
}

# --- report -----------------------------------------------------------------

summarize() {
    python3 - "$RESULTS" "$WORK/mx-relay.log" "$POSTFIX_DIR/maillog" "$ROUNDS" <<'EOF'
import re, statistics, sys
from collections import defaultdict
from datetime import datetime

results, mx_log, postfix_log, rounds = sys.argv[1:5]
rates, receive = defaultdict(list), defaultdict(list)
for line in open(results):
    server, _, rate, recv = line.split("\t")
    rates[server].append(float(rate))
    receive[server].append(float(recv))

def quantiles(values):
    if not values:
        return "n/a"
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return f"p50 {pick(0.5) * 1e3:.1f} ms, p99 {pick(0.99) * 1e3:.1f} ms ({len(values)} messages)"

def stamp(line):
    return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()

queued, sent = {}, {}
for line in open(mx_log, errors="replace"):
    if m := re.search(r"queued as (\w+)", line):
        queued[m.group(1)] = stamp(line)
    elif (m := re.search(r" (\w+): relay=\S+ .*status=sent", line)):
        sent.setdefault(m.group(1), stamp(line))
mx_latency = [sent[i] - queued[i] for i in sent if i in queued]
pf_latency = [float(m.group(1)) for line in open(postfix_log, errors="replace")
              if "status=sent" in line and (m := re.search(r" delay=([\d.]+)", line))]

labels = {"mx-receive": "mxgate receive-only (durable)", "mx-relay": "mxgate receive+relay",
          "postfix": "Postfix smtpd+queue+smtp"}
med = {s: statistics.median(r) for s, r in rates.items() if r}
print(f"{'server':<30} {'runs':>4} {'median msg/s':>12} {'min..max':>15} {'receive phase msg/s':>20}")
for server in labels:
    r = rates.get(server, [])
    if not r:
        print(f"{labels[server]:<30} 0/{rounds}  every round failed (see the log above)")
        continue
    print(f"{labels[server]:<30} {len(r):>2}/{rounds} {med[server]:>12.0f} "
          f"{min(r):>7.0f}..{max(r):<7.0f} {statistics.median(receive[server]):>20.0f}")
print()
if "mx-relay" in med and "mx-receive" in med:
    print(f"receive+relay / receive-only: {med['mx-relay'] / med['mx-receive']:.2f}  (issue 14 asks >= 0.7)")
if "mx-relay" in med and "postfix" in med:
    print(f"receive+relay / Postfix:      {med['mx-relay'] / med['postfix']:.2f}  (issue 14 asks >= 3)")
print(f"mxgate latency accepted -> delivered: {quantiles(mx_latency)}")
print(f"Postfix latency (its delay=):         {quantiles(pf_latency)}")
EOF
}

# --- main -------------------------------------------------------------------

main() {
    ensure_tools
    raise_nofile 20000
    build_mxgate
    trap 'stop_postfix; cleanup' EXIT
    start_all
    : >"$RESULTS"
    local round server load_start
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)
    log "$ROUNDS rounds of [mx-receive mx-relay postfix], $MESSAGES messages each"
    for ((round = 1; round <= ROUNDS; round++)); do
        for server in mx-receive mx-relay postfix; do
            run_round "$server" "$round"
        done
    done

    echo "== mxgate relaying vs receive-only vs Postfix, $(date -u '+%Y-%m-%d %H:%M UTC')"
    machine_summary
    echo "load average at start: $load_start (the machine is shared: alternation and medians absorb some noise)"
    echo "servers confined to CPUs: ${SERVER_CPUS:-(none)}; client and smtp-sink: ${CLIENT_CPUS:-(any)}"
    echo "mxgate: $MXGATE_BIN ${MXGATE_ARGS:-(default flags)}; git $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "Postfix: $(postconf -d mail_version 2>/dev/null | sed 's/.*= //'), relayhost = the same smtp-sink"
    echo "driver: smtp-source -s $CONCURRENCY -m $MESSAGES -l $SIZE (one message per connection)"
    echo
    summarize
}

main "$@"
