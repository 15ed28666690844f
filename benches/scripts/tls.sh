#!/usr/bin/env bash
# benches/scripts/tls.sh — STARTTLS (issue 13): idle memory, speed against
# Postfix, the TLS tax, ECDSA P-256 against RSA 2048.
#
# Parts (arguments; default: idle speed):
#   idle   mxgate's server memory per idle session, in plain text and after
#          STARTTLS: IDLE_SESSIONS sessions held by benches/scripts/idle_hold.py
#          (--starttls: EHLO, STARTTLS, handshake, EHLO, then idle), RSS growth
#          ÷ sessions, each on a freshly started mxgate with the ECDSA
#          certificate. Issue 13's target: ≤ 4 KiB per session after STARTTLS.
#   speed  sessions per second; a session is connect, EHLO, STARTTLS and the
#          handshake, EHLO, one SIZE-octet message, QUIT (mxgate-load
#          --starttls, closed loop, CONCURRENCY at once, SESSIONS per run).
#          Servers, in alternating rounds for each of KEYS:
#            mxgate        durable spool, --tls-cert/--tls-key
#            postfix       Postfix smtpd (a fresh private instance made
#                          with postfix.sh: smtpd_tls_security_level = may,
#                          the same certificate and key; what it accepts is
#                          queued and held, as mxgate spools it)
#            mxgate-plain  the same mxgate without --starttls (the TLS tax)
#          Reports medians over rounds of sessions/s, the STARTTLS phase
#          (STARTTLS sent → handshake done) p50/p99, the ratio mxgate ÷
#          Postfix (issue 13's target: ≥ 4) and TLS ÷ plain for mxgate.
# Each server is confined to one core (SERVER_CPUS, default the last), the
# client to the others (CLIENT_CPUS). Certificates are made here with
# openssl req (self-signed; mxgate-load and idle_hold.py accept any).
#
# Settings (environment):
#   PORT=25270           first port: mxgate PORT, Postfix PORT+1
#   KEYS="ecdsa rsa"     key types: ecdsa (P-256), rsa (2048)
#   ROUNDS=3             rounds of mxgate, postfix, mxgate-plain per key type
#   SESSIONS=5000        sessions per mxgate-load run
#   CONCURRENCY=50       sessions open at once (Postfix runs one smtpd each)
#   SIZE=1024            message size in octets
#   IDLE_SESSIONS=19000  sessions held by the idle part
#   MXGATE_ARGS=""       extra mxgate flags
#   LOAD_ARGS=""         extra mxgate-load flags (e.g. --pipelining)
#   RUN_TIMEOUT=300      seconds before one client run counts as failed
#   SERVER_CPUS, CLIENT_CPUS, NO_BUILD=1, KEEP_WORK=1, BENCH_TMP, SPOOL_FS
#                        as in compare.sh
# Output: the tables on stdout, progress on stderr.
set -euo pipefail
source "$(dirname "$0")/cpus.sh"
split_cpus
source "$(dirname "$0")/lib.sh"
# The private Postfix instance (tls-peers' helper, shared with tests/tls_peers.rs).
[[ -f $BENCH_DIR/postfix.sh ]] || die "$BENCH_DIR/postfix.sh (the private Postfix helper) is missing"
source "$BENCH_DIR/postfix.sh"
POSTFIX_DIR="" # the Postfix instance running now, if any
trap 'stop_postfix; cleanup' EXIT

PORT=${PORT:-25270}
KEYS=${KEYS:-ecdsa rsa}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-5000}
CONCURRENCY=${CONCURRENCY:-50}
SIZE=${SIZE:-1024}
IDLE_SESSIONS=${IDLE_SESSIONS:-19000}
MXGATE_ARGS=${MXGATE_ARGS:-}
LOAD_ARGS=${LOAD_ARGS:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
MX_PORT=$PORT
PF_PORT=$((PORT + 1))
SPEED=$WORK/speed.tsv # key server round json-file
IDLE=$WORK/idle.txt   # mode key=value...

# start_mxgate KIND [SESSIONS]: mxgate with KIND's certificate on MX_PORT.
start_mxgate() {
    local kind=$1 max=${2:-$((CONCURRENCY + 100))}
    rm -rf "$WORK/fs/spool"
    # shellcheck disable=SC2086 # MXGATE_ARGS is split on purpose
    start_server "mxgate-$kind" "$MX_PORT" "$MXGATE_BIN" --recipients "$WORK/recipients.txt" \
        --listen "127.0.0.1:$MX_PORT" --spool "$WORK/fs/spool" --max-sessions "$max" \
        --tls-cert "$WORK/$kind.crt" --tls-key "$WORK/$kind.key" $MXGATE_ARGS ||
        die "mxgate would not start with TLS (log: $WORK/mxgate-$kind.log)"
}

# start_postfix KIND ROUND: a fresh private Postfix instance (postfix.sh)
# under the spool's file system, smtpd with STARTTLS and KIND's certificate
# on PF_PORT, on the server core with every process it forks; waits for its
# greeting. It queues what it accepts durably and holds it, as mxgate's
# spool does, so nothing may slow intake down for want of delivery
# (in_flow_delay); an smtpd for every session at once.
start_postfix() {
    local kind=$1 i
    POSTFIX_DIR=$WORK/fs/postfix-$kind-$2
    chmod go+x "$WORK" # mktemp made it 0700; Postfix's daemons run as postfix
    postfix_init "$POSTFIX_DIR" || die "postfix_init failed"
    postfix_listen "$POSTFIX_DIR" "127.0.0.1:$PF_PORT"
    postfix_tls_server "$POSTFIX_DIR" "$WORK/$kind.crt" "$WORK/$kind.key"
    postfix_set "$POSTFIX_DIR" "in_flow_delay = 0" "smtpd_tls_loglevel = 0" \
        "default_process_limit = $((CONCURRENCY + 50))" "smtpd_client_connection_count_limit = 0"
    POSTFIX_CPUS=$SERVER_CPUS postfix_start "$POSTFIX_DIR" >"$WORK/postfix-$kind.log" 2>&1 ||
        die "Postfix would not start: $(tail -n 3 "$WORK/postfix-$kind.log")"
    for ((i = 0; i < 100; i++)); do
        banner_ok "$PF_PORT" && return 0
        sleep 0.2
    done
    die "Postfix did not answer with 220 on port $PF_PORT within 20 s (log: $POSTFIX_DIR/maillog)"
}

# stop_postfix: stops the instance start_postfix started, if one runs.
stop_postfix() {
    [[ -n $POSTFIX_DIR ]] || return 0
    postfix_stop "$POSTFIX_DIR"
    POSTFIX_DIR=""
}

# load_run NAME OUT [FLAGS...]: one mxgate-load run against NAME's port.
load_run() {
    local name=$1 out=$2 port=$MX_PORT rc=0
    shift 2
    [[ $name == postfix* ]] && port=$PF_PORT
    # shellcheck disable=SC2086 # LOAD_ARGS is split on purpose
    run_client "$RUN_TIMEOUT" "$out" "$out.err" "$MXGATE_LOAD_BIN" --target "127.0.0.1:$port" \
        --sessions "$CONCURRENCY" --sessions-total "$SESSIONS" --messages 1 --size "$SIZE" \
        --json "$@" $LOAD_ARGS || rc=$?
    [[ $rc == 0 ]] || log "$name: mxgate-load exited with $rc: $(head -c 300 "$out.err")"
}

# speed_round KIND ROUND: mxgate, Postfix and plain mxgate, one run each,
# each server started fresh (so no run inherits another's queue or spool).
speed_round() {
    local kind=$1 round=$2 server
    for server in mxgate postfix mxgate-plain; do
        case $server in
        postfix) start_postfix "$kind" "$round" ;;
        *) start_mxgate "$kind" ;;
        esac
        local flags=(--starttls) out=$WORK/$kind-$server-$round.json
        [[ $server == mxgate-plain ]] && flags=()
        # A short warm-up: Postfix forks its smtpd processes, mxgate faults in its pages.
        SESSIONS=$((CONCURRENCY * 2)) load_run "$server" "$out.warm" "${flags[@]}"
        log "$kind round $round: $server ($SESSIONS sessions, $CONCURRENCY at once)"
        load_run "$server" "$out" "${flags[@]}"
        printf '%s\t%s\t%s\t%s\n' "$kind" "$server" "$round" "$out" >>"$SPEED"
        case $server in
        postfix) stop_postfix ;;
        *) stop_server "$STARTED_PID" ;;
        esac
    done
}

part_speed() {
    local kind round
    for kind in $KEYS; do
        for ((round = 1; round <= ROUNDS; round++)); do speed_round "$kind" "$round"; done
    done
}

part_idle() {
    local mode flags line rc
    for mode in plain starttls; do
        flags=()
        [[ $mode == starttls ]] && flags=(--starttls)
        start_mxgate ecdsa $((IDLE_SESSIONS + 100))
        log "idle: holding $IDLE_SESSIONS sessions ($mode)"
        rc=0
        run_client "$RUN_TIMEOUT" "$WORK/idle-$mode" "$WORK/idle-$mode.err" python3 \
            "$BENCH_DIR/idle_hold.py" --target "127.0.0.1:$MX_PORT" --pid "$STARTED_PID" \
            --sessions "$IDLE_SESSIONS" "${flags[@]}" || rc=$?
        line=$(cat "$WORK/idle-$mode")
        [[ -n $line ]] || die "idle_hold.py gave no result (status $rc): $(cat "$WORK/idle-$mode.err")"
        [[ $rc == 0 ]] || log "idle $mode: not every session was held: $(cat "$WORK/idle-$mode.err")"
        echo "$mode $line" >>"$IDLE"
        stop_server "$STARTED_PID"
    done
}

report_idle() {
    [[ -s $IDLE ]] || return 0
    echo "-- mxgate, idle sessions: server memory (ECDSA P-256 certificate configured in both)"
    python3 "$BENCH_DIR/idle_report.py" "$IDLE" mode
    echo "starttls = held after EHLO, STARTTLS, the handshake and EHLO again (idle_hold.py --starttls)."
    echo
}

report_speed() {
    [[ -s $SPEED ]] || return 0
    echo "-- STARTTLS sessions per second: connect, EHLO, STARTTLS + handshake, EHLO, one" \
        "$SIZE-octet message, QUIT; $SESSIONS sessions per run, $CONCURRENCY at once;" \
        "medians of $ROUNDS rounds"
    python3 - "$SPEED" <<'EOF'
import json, statistics, sys
from collections import defaultdict

runs = defaultdict(list)
order = []
for line in open(sys.argv[1]):
    kind, server, _, path = line.rstrip("\n").split("\t")
    try:
        doc = json.load(open(path))
    except (OSError, ValueError):
        doc = None
    if (kind, server) not in order:
        order.append((kind, server))
    runs[kind, server].append(doc)

def phase(doc, name, key):
    return next(p[key] for p in doc["phases"] if p["phase"] == name)

def errors(doc):
    c = doc["counts"]
    return (c["sessions_started"] - c["sessions_completed"]) + c["messages_refused"]

print(f"{'key':<6} {'server':<13} {'runs':>4} {'sessions/s':>10} {'handshake p50 µs':>16} "
      f"{'handshake p99 µs':>16} {'session p99 µs':>14} {'client CPU µs/s.':>16} {'errors':>6}")
rate = {}
for kind, server in order:
    docs = [d for d in runs[kind, server] if d]
    failed = len(runs[kind, server]) - len(docs)
    if not docs:
        print(f"{kind:<6} {server:<13} no run gave a result")
        continue
    med = lambda f: statistics.median(f(d) for d in docs)
    rate[kind, server] = med(lambda d: d["sessions_per_s"])
    hs = (f"{med(lambda d: phase(d, 'starttls', 'p50')):>16.0f} "
          f"{med(lambda d: phase(d, 'starttls', 'p99')):>16.0f}"
          if server != "mxgate-plain" else f"{'-':>16} {'-':>16}")
    print(f"{kind:<6} {server:<13} {len(docs):>4} {rate[kind, server]:>10.0f} {hs} "
          f"{med(lambda d: phase(d, 'session', 'p99')):>14.0f} "
          f"{med(lambda d: d['cpu_per_session_us']):>16.0f} "
          f"{sum(errors(d) for d in docs) + failed:>6}")
print()
for kind in dict.fromkeys(k for k, _ in order):
    r = lambda s: rate.get((kind, s))
    if r("mxgate") and r("postfix"):
        print(f"{kind}: mxgate ÷ Postfix (STARTTLS sessions/s) = {r('mxgate') / r('postfix'):.2f}")
    if r("mxgate") and r("mxgate-plain"):
        print(f"{kind}: mxgate TLS ÷ plain (sessions/s) = {r('mxgate') / r('mxgate-plain'):.2f}")
kinds = list(dict.fromkeys(k for k, _ in order))
if "ecdsa" in kinds and "rsa" in kinds and rate.get(("rsa", "mxgate")):
    print(f"mxgate ECDSA P-256 ÷ RSA 2048 (STARTTLS sessions/s) = "
          f"{rate[('ecdsa', 'mxgate')] / rate[('rsa', 'mxgate')]:.2f}")
EOF
    echo "errors = sessions not completed (any reason) + messages refused."
    echo "client CPU µs/s. = mxgate-load's user + system CPU per session: near 1e6 ÷ sessions/s" \
        "per client core, the client, not the server, sets the pace."
}

main() {
    local parts=("$@") part kind
    [[ ${#parts[@]} -gt 0 ]] || parts=(idle speed)
    for part in "${parts[@]}"; do
        [[ $part == idle || $part == speed ]] || die "unknown part '$part' (idle or speed)"
    done
    ensure_tools
    command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
    build_mxgate
    [[ -z $MXGATE_PROBLEM ]] || die "$MXGATE_PROBLEM"
    [[ -x $MXGATE_BIN && -x $MXGATE_LOAD_BIN ]] || die "$MXGATE_BIN or $MXGATE_LOAD_BIN is missing"
    raise_nofile $((IDLE_SESSIONS + 100))
    mount_spool_fs "$WORK/fs"
    make_table "$WORK/recipients.txt" 1000
    for kind in $KEYS; do make_cert "$kind"; done
    [[ " $KEYS " == *" ecdsa "* ]] || make_cert ecdsa # the idle part's
    : >"$SPEED"
    : >"$IDLE"
    for part in "${parts[@]}"; do "part_$part"; done
    echo "== STARTTLS, $(date -u '+%Y-%m-%d %H:%M UTC')"
    machine_summary
    echo "server cores: ${SERVER_CPUS:-all}; client cores: ${CLIENT_CPUS:-all}; $(postconf -d mail_version)"
    echo
    report_idle
    report_speed
}

main "$@"
