#!/usr/bin/env bash
# benches/scripts/milter.sh — content checks at the end of data (issue 16),
# side by side in one run. Two parts (PARTS="speed wait"):
#
# speed  clamav-milter (clamd with one custom signature, no freshclam; set
#        up by benches/scripts/milters.sh) as the one milter of
#          postfix         Postfix 3.7's smtpd (postfix.sh), smtpd_milters =
#                          clamav-milter; accepted mail queued and held
#          mxgate+clamav   mxgate --milter inet:clamav-milter
#          mxgate          mxgate without a milter
#        driven in turn, A B C A B C ..., by mxgate-load: CONCURRENCY
#        sessions at once, one SIZE-byte message each, MESSAGES sessions per
#        run. A run counts only if every message got its 250. Reports
#        messages/s (medians), mxgate+clamav ÷ postfix (issue 16: ≥ 3) and
#        mxgate+clamav ÷ mxgate (≥ 0.5), the end-of-data reply p50/p99 of
#        each (the milter's share is the difference to plain mxgate), and
#        the milter lines of mxgate's /metrics.
#
# wait   mxgate with mxgate-milter (load/src/milter.rs, single-threaded,
#        thousands of connections), which answers every stage at once and
#        the end of a message whose sender holds "hold" after 2 s
#        (HOLD_VERDICT, default discard: nothing to spool, no error counted
#        against the client). Rounds alternate:
#          base   mxgate-load, open loop: LOAD_RATE sessions/s for LOAD_SECS
#          held   the same while HOLD_SESSIONS sessions of a second
#                 mxgate-load (from hold@bench.test, started evenly over 2 s)
#                 wait for that 2 s answer, each sending its next message as
#                 soon as the last is answered; stopped after the run
#        Reports the EHLO, MAIL and RCPT reply p99 (medians over rounds) and
#        held ÷ base (issue 16: within 2×), and how many sessions were
#        waiting during each held run (held answers not yet sent, as the
#        milter counts them every half second).
#
# Cores: each server on SERVER_CPUS (default: the last core), the milters
# on MILTER_CPUS and the clients on CLIENT_CPUS (default: the other cores).
#
# Settings (environment):
#   PORT=25350           first port; the script uses PORT .. PORT+9
#   PARTS="speed wait"   ROUNDS=3
#   MESSAGES=5000  CONCURRENCY=50  SIZE=1024          (speed)
#   HOLD_SESSIONS=2000  HOLD_VERDICT=discard          (wait)
#   LOAD_RATE=200  LOAD_SECS=10                       (wait)
#   MXGATE_ARGS=""       extra mxgate flags, every mxgate server
#   NO_BUILD=1           use target/release/{mxgate,mxgate-load,mxgate-milter} as they are
#   KEEP_WORK=1  BENCH_TMP=/tmp  SPOOL_FS=loop|host   as in compare.sh
# Output: the tables on stdout, progress on stderr.
set -euo pipefail
source "$(dirname "$0")/cpus.sh"
SERVER_CPUS=${SERVER_CPUS-$(last_cpu)}
MILTER_CPUS=${MILTER_CPUS-$(other_cpus)}
CLIENT_CPUS=${CLIENT_CPUS-$(other_cpus)}
source "$(dirname "$0")/lib.sh"
source "$BENCH_DIR/postfix.sh"
source "$BENCH_DIR/milters.sh"
POSTFIX_DIR=""
trap 'stop_postfix; cleanup' EXIT

PORT=${PORT:-25350}
PARTS=${PARTS:-speed wait}
ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-5000}
CONCURRENCY=${CONCURRENCY:-50}
SIZE=${SIZE:-1024}
HOLD_SESSIONS=${HOLD_SESSIONS:-2000}
HOLD_VERDICT=${HOLD_VERDICT:-discard}
LOAD_RATE=${LOAD_RATE:-200}
LOAD_SECS=${LOAD_SECS:-10}
MXGATE_ARGS=${MXGATE_ARGS:-}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
MXGATE_MILTER_BIN=${MXGATE_MILTER_BIN:-$REPO_DIR/target/release/mxgate-milter}
HOLD_FROM=hold@bench.test # the milter holds senders containing "hold"
HOLD_SECS=2               # for HOLD_SECS seconds

declare -A PORT_OF PID_OF
PORT_OF[postfix]=$PORT
PORT_OF[mx-clamav]=$((PORT + 1))
PORT_OF[mx-plain]=$((PORT + 2))
PORT_OF[mx-wait]=$((PORT + 3))
CLAMD_PORT=$((PORT + 4))
CLAMAV_PORT=$((PORT + 5))
SCRIPTED_PORT=$((PORT + 6))
METRICS_PORT=$((PORT + 7))

# --- milters ----------------------------------------------------------------

# wait_listening PORT SECS WHAT LOG: until something accepts on PORT.
wait_listening() {
    local port=$1 secs=$2 what=$3 logfile=$4 i
    for ((i = 0; i < secs * 5; i++)); do
        port_busy "$port" && return 0
        sleep 0.2
    done
    die "$what did not listen on port $port within $secs s; log tail: $(tail -n 3 "$logfile" 2>/dev/null)"
}

# start_daemon NAME COMMAND...: a milter daemon in the background on
# MILTER_CPUS, output in $WORK/NAME.log, stopped by cleanup.
start_daemon() {
    local name=$1
    shift
    (
        ulimit -Sn "$(ulimit -Hn)"
        exec $(on_cpus "$MILTER_CPUS") "$@"
    ) >"$WORK/$name.log" 2>&1 &
    SERVER_PIDS+=("$!")
    PID_OF[$name]=$!
}

start_clamav() {
    local dir=$WORK/clamav
    clamav_init "$dir" "$CLAMD_PORT" "$CLAMAV_PORT"
    start_daemon clamd clamd --config-file "$dir/clamd.conf"
    wait_listening "$CLAMD_PORT" 60 clamd "$dir/clamd.log"
    start_daemon clamav-milter clamav-milter --config-file "$dir/clamav-milter.conf"
    wait_listening "$CLAMAV_PORT" 60 clamav-milter "$dir/clamav-milter.log"
}

# start_scripted: mxgate-milter, printing "EPOCH_SECONDS WAITING" to
# $WORK/scripted.log every half second.
start_scripted() {
    start_daemon scripted "$MXGATE_MILTER_BIN" --listen "127.0.0.1:$SCRIPTED_PORT" \
        --hold-from hold --hold-secs "$HOLD_SECS" --hold-verdict "$HOLD_VERDICT" --status-every 0.5
    wait_listening "$SCRIPTED_PORT" 30 "mxgate-milter" "$WORK/scripted.log"
}

# --- servers ----------------------------------------------------------------

# start_postfix: a private Postfix instance on the spool's file system,
# smtpd on the server cores with clamav-milter, holding what it accepts
# (so delivery costs nothing), an smtpd for every session at once.
start_postfix() {
    local i
    POSTFIX_DIR=$WORK/fs/postfix
    chmod go+x "$WORK" "$WORK/fs" # Postfix's daemons run as postfix
    postfix_init "$POSTFIX_DIR" || die "postfix_init failed"
    postfix_listen "$POSTFIX_DIR" "127.0.0.1:${PORT_OF[postfix]}"
    postfix_milters "$POSTFIX_DIR" "inet:127.0.0.1:$CLAMAV_PORT"
    postfix_set "$POSTFIX_DIR" "in_flow_delay = 0" \
        "default_process_limit = $((CONCURRENCY + 50))" "smtpd_client_connection_count_limit = 0"
    POSTFIX_CPUS=$SERVER_CPUS postfix_start "$POSTFIX_DIR" >"$WORK/postfix.log" 2>&1 ||
        die "Postfix would not start: $(tail -n 3 "$WORK/postfix.log")"
    for ((i = 0; i < 100; i++)); do
        if banner_ok "${PORT_OF[postfix]}"; then
            # The master: alive while Postfix runs (its smtpd processes' CPU
            # is not in its own, so Postfix gets no CPU column).
            PID_OF[postfix]=$(tr -d ' ' <"$POSTFIX_DIR/queue/pid/master.pid")
            return 0
        fi
        sleep 0.2
    done
    die "Postfix did not answer with 220 within 20 s (log: $POSTFIX_DIR/maillog)"
}

stop_postfix() {
    [[ -n $POSTFIX_DIR ]] || return 0
    postfix_stop "$POSTFIX_DIR"
    POSTFIX_DIR=""
}

# start_mxgate NAME [FLAGS...]: mxgate on NAME's port with its own spool;
# sets MXGATE_PROBLEM (and returns 1) if it does not start.
start_mxgate() {
    local name=$1 port=${PORT_OF[$1]}
    shift
    # shellcheck disable=SC2086 # MXGATE_ARGS is split on purpose
    if start_server "$name" "$port" "$MXGATE_BIN" --recipients "$WORK/recipients.txt" \
        --listen "127.0.0.1:$port" --spool "$WORK/fs/$name" "$@" $MXGATE_ARGS; then
        PID_OF[$name]=$STARTED_PID
        return 0
    fi
    MXGATE_PROBLEM="$name would not start (log: $WORK/$name.log): $(tail -n 1 "$WORK/$name.log")"
    return 1
}

# core_times: "busy total" jiffies per core, one core per line (/proc/stat).
core_times() { awk '/^cpu[0-9]/ { print $1, $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }

# core_busy BEFORE AFTER: "cpuN busy%" for each core between two core_times.
core_busy() {
    join <(echo "$1") <(echo "$2") | awk '{ printf "%s %.0f%% ", $1, 100 * ($4 - $2) / ($5 - $3) }'
}

# --- speed --------------------------------------------------------------------

SPEED=$WORK/speed.tsv # server round messages/s eod-p50 eod-p99 server-CPU-µs/msg milter-CPU-µs/msg

# milter_ticks: the CPU ticks clamd and clamav-milter have used (each
# process's, threads that ended included).
milter_ticks() { echo $(($(cpu_ticks "${PID_OF[clamd]}") + $(cpu_ticks "${PID_OF[clamav-milter]}"))); }

# speed_run SERVER ROUND: one mxgate-load run; a row in $SPEED if every
# message was accepted.
speed_run() {
    local server=$1 round=$2 rc=0 row
    local json=$WORK/speed-$server-$round.json pid=${PID_OF[$server]}
    alive "$pid" || die "$server died (log: $WORK/$server.log)"
    local milter0 cores0
    milter0=$(milter_ticks)
    cores0=$(core_times)
    timed_client "$pid" "$json" "$json.err" "$MXGATE_LOAD_BIN" --target "127.0.0.1:${PORT_OF[$server]}" \
        --sessions "$CONCURRENCY" --sessions-total "$MESSAGES" --messages 1 --size "$SIZE" --json || rc=$?
    local milter_cpu
    milter_cpu=$(awk -v a="$milter0" -v b="$(milter_ticks)" -v hz="$(getconf CLK_TCK)" 'BEGIN { print (b - a) / hz }')
    log "  $server round $round: cores busy (everyone's) $(core_busy "$cores0" "$(core_times)")"
    if [[ $rc != 0 ]]; then
        log "  $server round $round FAILED (status $rc): $(tail -n 1 "$json.err")"
        return
    fi
    local cpu=$RUN_SERVER_CPU
    [[ $server != postfix ]] || cpu=nan
    if ! row=$(python3 - "$json" "$MESSAGES" "$RUN_SECS" "$cpu" "$milter_cpu" <<'EOF'
import json, sys
path, expected, secs, cpu = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
milter_cpu = float(sys.argv[5])
doc = json.load(open(path))
accepted = doc["counts"]["messages_accepted"]
if accepted != expected:
    sys.exit(f"{accepted} of {expected} messages accepted: {doc['counts']}")
eod = next(p for p in doc["phases"] if p["phase"] == "eod")
print(f"{accepted / secs:.1f}\t{eod['p50']}\t{eod['p99']}\t{cpu * 1e6 / accepted:.1f}\t{milter_cpu * 1e6 / accepted:.1f}")
EOF
    ); then
        log "  $server round $round not counted"
        return
    fi
    printf '%s\t%s\t%s\n' "$server" "$round" "$row" >>"$SPEED"
    log "  $server round $round: $(cut -f1 <<<"$row") messages/s"
}

run_speed() {
    local round server servers=(postfix)
    start_clamav
    start_postfix
    if [[ -z $MXGATE_PROBLEM ]]; then
        start_mxgate mx-clamav --milter "inet:127.0.0.1:$CLAMAV_PORT" --metrics "127.0.0.1:$METRICS_PORT" &&
            start_mxgate mx-plain && servers+=(mx-clamav mx-plain)
    fi
    [[ -z $MXGATE_PROBLEM ]] || log "SKIPPING the mxgate rows: $MXGATE_PROBLEM"
    : >"$SPEED"
    log "speed: $ROUNDS rounds of [${servers[*]}]"
    for ((round = 1; round <= ROUNDS; round++)); do
        for server in "${servers[@]}"; do speed_run "$server" "$round"; done
    done
    echo "== speed: clamav-milter (one signature) as the one milter; mxgate-load, $CONCURRENCY sessions at once, one ${SIZE}-byte message each, $MESSAGES per run"
    python3 - "$SPEED" "$ROUNDS" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
for line in open(sys.argv[1]):
    server, _, rate, p50, p99, cpu, milter = line.split("\t")
    rows[server].append((float(rate), float(p50), float(p99), float(cpu), float(milter)))
labels = {"postfix": "Postfix smtpd + clamav", "mx-clamav": "mxgate + clamav", "mx-plain": "mxgate, no milter"}
med = {s: [statistics.median(col) for col in zip(*r)] for s, r in rows.items()}
print(f"{'server':<24} {'runs':>5} {'msgs/s':>8} {'eod p50 µs':>11} {'eod p99 µs':>11} {'server CPU µs/msg':>18} {'milter CPU µs/msg':>18}")
for server, label in labels.items():
    if server in med:
        rate, p50, p99, cpu, milter = med[server]
        print(f"{label:<24} {len(rows[server]):>2}/{sys.argv[2]:<2} {rate:>8.0f} {p50:>11.0f} {p99:>11.0f} {cpu:>18.1f} {milter:>18.1f}")
    else:
        print(f"{label:<24}  0/{sys.argv[2]:<2} no run counted")
if "mx-clamav" in med and med["mx-clamav"][4] > 0:
    milter = med["mx-clamav"][4]
    print(f"clamd + clamav-milter alone cost {milter:.0f} µs of CPU per message: on their one core, at most "
          f"{1e6 / milter:.0f} messages/s, whoever drives them")
    if "mx-plain" in med:
        half = med["mx-plain"][0] / 2
        verdict = "within" if 1e6 / milter >= half else "beyond"
        print(f"half of mxgate alone is {half:.0f} messages/s: {verdict} what the milter's core can do")
def ratio(a, b):
    return f"{med[a][0] / med[b][0]:.2f}" if a in med and b in med else "n/a"
print(f"mxgate + clamav ÷ Postfix + clamav: {ratio('mx-clamav', 'postfix')} (issue 16: ≥ 3)")
print(f"mxgate + clamav ÷ mxgate alone:     {ratio('mx-clamav', 'mx-plain')} (issue 16: ≥ 0.5)")
EOF
    if [[ -n ${PID_OF[mx-clamav]:-} ]]; then
        echo "mxgate's /metrics, milter lines (latency summary in seconds):"
        python3 -c 'import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
print("\n".join(l for l in text.splitlines() if "milter" in l and not l.startswith("#")) or "(none)")' \
            "http://127.0.0.1:$METRICS_PORT/metrics" || echo "(could not read /metrics)"
    fi
    echo
}

# --- wait ---------------------------------------------------------------------

WAIT=$WORK/wait.tsv # mode round ehlo-p99 mail-p99 rcpt-p99 waiting-min waiting-median

# wait_run MODE ROUND: one open-loop mxgate-load run, with HOLD_SESSIONS
# sessions waiting on the milter when MODE is held.
wait_run() {
    local mode=$1 round=$2 rc=0 holder="" t0 t1 waiting="-\t-"
    local json=$WORK/wait-$mode-$round.json hold_err=$WORK/hold-$round.err
    if [[ $mode == held ]]; then
        # Their starts spread over one hold (--rate), so that their answers
        # come evenly after, not in waves of HOLD_SESSIONS at once.
        $(on_cpus "$CLIENT_CPUS") "$MXGATE_LOAD_BIN" --target "127.0.0.1:${PORT_OF[mx-wait]}" \
            --rate $((HOLD_SESSIONS / HOLD_SECS)) --sessions-total "$HOLD_SESSIONS" --messages 1000000 \
            --size "$SIZE" --from "$HOLD_FROM" --threads 1 >/dev/null 2>"$hold_err" &
        holder=$!
        SERVER_PIDS+=("$holder")
        wait_for_waiting $((HOLD_SESSIONS * 99 / 100)) "$HOLD_SESSIONS" 60 ||
            log "  only $(milter_waiting) of $HOLD_SESSIONS sessions waiting; measuring anyway"
    fi
    t0=$(date +%s.%N)
    local cores0
    cores0=$(core_times)
    timed_client "${PID_OF[mx-wait]}" "$json" "$json.err" "$MXGATE_LOAD_BIN" \
        --target "127.0.0.1:${PORT_OF[mx-wait]}" --rate "$LOAD_RATE" --duration "$LOAD_SECS" \
        --messages 1 --size "$SIZE" --json || rc=$?
    t1=$(date +%s.%N)
    log "  wait/$mode round $round: mxgate used $(awk -v c="$RUN_SERVER_CPU" -v s="$RUN_SECS" \
        'BEGIN { printf "%.0f%%", 100 * c / s }') of a core; cores busy (everyone's) $(core_busy "$cores0" "$(core_times)")"
    if [[ -n $holder ]]; then
        alive "$holder" || log "  the holding mxgate-load ended early: $(tail -n 1 "$hold_err")"
        kill -TERM "$holder" 2>/dev/null || true
        wait "$holder" 2>/dev/null || true
        waiting=$(milter_status | awk -v a="$t0" -v b="$t1" '$1 >= a && $1 <= b { print $2 }' | sort -n |
            awk '{ v[NR] = $1 } END { if (NR) printf "%d\t%d", v[1], v[int((NR + 1) / 2)]; else printf "-\t-" }')
        # The next base run starts with no answer held.
        wait_for_waiting 0 0 10 || log "  $(milter_waiting) answers still held after 10 s"
    fi
    if [[ $rc != 0 ]]; then
        log "  wait/$mode round $round FAILED (status $rc): $(tail -n 1 "$json.err")"
        return
    fi
    local p99s
    p99s=$(python3 -c 'import json, sys
doc = json.load(open(sys.argv[1]))
p = {e["phase"]: e["p99"] for e in doc["phases"] if e.get("count")}
print("\t".join(str(p.get(k, "nan")) for k in ("ehlo", "mail", "rcpt")))' "$json")
    printf '%s\t%s\t%s\t%b\n' "$mode" "$round" "$p99s" "$waiting" >>"$WAIT"
    log "  wait/$mode round $round: EHLO/MAIL/RCPT p99 $(tr '\t' ' ' <<<"$p99s") µs"
}

# milter_status: mxgate-milter's "EPOCH_SECONDS WAITING" lines so far.
milter_status() { awk 'NF == 2 && $1 ~ /^[0-9.]+$/ && $2 ~ /^[0-9]+$/' "$WORK/scripted.log"; }
milter_waiting() { milter_status | tail -n 1 | cut -d' ' -f2; }

# wait_for_waiting MIN MAX SECS: until MIN ≤ the milter's waiting count ≤ MAX.
wait_for_waiting() {
    local min=$1 max=$2 secs=$3 i now
    for ((i = 0; i < secs * 2; i++)); do
        now=$(milter_waiting)
        [[ -n $now ]] && ((now >= min && now <= max)) && return 0
        sleep 0.5
    done
    return 1
}

run_wait() {
    local round mode
    [[ -x $MXGATE_MILTER_BIN ]] || MXGATE_PROBLEM=${MXGATE_PROBLEM:-"$MXGATE_MILTER_BIN does not exist"}
    [[ -n $MXGATE_PROBLEM ]] || start_scripted
    if [[ -n $MXGATE_PROBLEM ]] || ! start_mxgate mx-wait --milter "inet:127.0.0.1:$SCRIPTED_PORT" \
        --max-sessions $((HOLD_SESSIONS + 2000)); then
        echo "== wait: skipped: $MXGATE_PROBLEM"
        return
    fi
    : >"$WAIT"
    log "wait: $ROUNDS rounds of [base held], $HOLD_SESSIONS held sessions"
    for ((round = 1; round <= ROUNDS; round++)); do
        for mode in base held; do wait_run "$mode" "$round"; done
    done
    echo "== wait: mxgate-load at $LOAD_RATE sessions/s for $LOAD_SECS s, alone (base) and while $HOLD_SESSIONS sessions wait 2 s on mxgate-milter (held)"
    python3 - "$WAIT" "$ROUNDS" <<'EOF'
import statistics, sys
from collections import defaultdict
rows = defaultdict(list)
waiting = []
for line in open(sys.argv[1]):
    mode, _, ehlo, mail, rcpt, wmin, wmed = line.rstrip("\n").split("\t")
    rows[mode].append((float(ehlo), float(mail), float(rcpt)))
    if mode == "held" and wmin != "-":
        waiting.append((int(wmin), int(wmed)))
med = {m: [statistics.median(c) for c in zip(*r)] for m, r in rows.items()}
print(f"{'mode':<6} {'runs':>5} {'EHLO p99 µs':>12} {'MAIL p99 µs':>12} {'RCPT p99 µs':>12}")
for mode in ("base", "held"):
    if mode in med:
        print(f"{mode:<6} {len(rows[mode]):>2}/{sys.argv[2]:<2} " + " ".join(f"{v:>12.0f}" for v in med[mode]))
if "base" in med and "held" in med:
    print("held ÷ base:  " + "  ".join(f"{n} {h / b:.2f}" for n, h, b in zip(("EHLO", "MAIL", "RCPT"), med["held"], med["base"]))
          + "  (issue 16: ≤ 2)")
for i, (lo, mid) in enumerate(waiting, 1):
    print(f"held run {i}: sessions waiting on the milter during the load: min {lo}, median {mid}")
EOF
    echo
}

# --- main -----------------------------------------------------------------------

main() {
    ensure_tools
    local tool
    for tool in clamd clamav-milter; do
        command -v "$tool" >/dev/null || die "$tool is missing (apt-get install clamav-daemon clamav-milter)"
    done
    raise_nofile $((HOLD_SESSIONS * 3 + 1000))
    build_mxgate
    [[ -x $MXGATE_LOAD_BIN ]] || die "$MXGATE_LOAD_BIN does not exist (the load generator drives every part)"
    [[ -x $MXGATE_BIN ]] || MXGATE_PROBLEM=${MXGATE_PROBLEM:-"$MXGATE_BIN does not exist"}
    make_table "$WORK/recipients.txt" 1000
    mount_spool_fs "$WORK/fs"
    local load_start
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "== mxgate with milters, $(date -u '+%Y-%m-%d %H:%M UTC')"
    machine_summary
    echo "load average at start: $load_start (shared machine: figures are provisional)"
    echo "servers on CPUs ${SERVER_CPUS:-(any)}; milters on ${MILTER_CPUS:-(any)}; clients on ${CLIENT_CPUS:-(any)}"
    echo "mxgate: $MXGATE_BIN ${MXGATE_ARGS:-(default flags)}; git $(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "$(postconf -d mail_version 2>/dev/null); $(clamd --version)"
    echo
    local part
    for part in $PARTS; do
        case $part in
        speed) run_speed ;;
        wait) run_wait ;;
        *) die "unknown part '$part' (speed, wait)" ;;
        esac
    done
}

main "$@"
