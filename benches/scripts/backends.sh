#!/usr/bin/env bash
# epoll and io_uring side by side, alternating the backends round by round:
#   - persistent pipelined sessions (mxgate-load --pipelining, many messages
#     per session): messages/s and server system calls per message;
#   - one message per connection (mxgate-load, then Postfix's smtp-source):
#     messages/s and server system calls per session;
#   - sessions refused at RCPT (unknown user): sessions/s;
#   - idle sessions: server RSS growth / sessions (user-space bytes each).
# Also the server's CPU time per message or session (robust on a busy host).
# Discard spool mode by default, so the figures are the backends' and not
# the disk's (SPOOL_MODE=durable for the real thing).
#
# The server is confined to SERVER_CPUS (default: the last core) and the
# clients to CLIENT_CPUS (default: the other cores), so the server's rate
# is not how the scheduler shares the cores with the client. Empty: free.
#
# usage: benches/scripts/backends.sh            (env: LOAD=path/to/mxgate-load,
#        ROUNDS=3, IDLE=19000 (0: skip), WORKERS=1, SPOOL_MODE=discard,
#        SERVER_CPUS=N, CLIENT_CPUS=LIST, PIPELINED=4000, SESSIONS=50,
#        TESTS="pipelined one-per-conn smtp-source rcpt-reject",
#        MXGATE_ARGS="" extra server flags, e.g. "--busy-poll 0")
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MXGATE=${MXGATE:-$ROOT/target/release/mxgate}
LOAD=${LOAD:-mxgate-load}
ROUNDS=${ROUNDS:-3}
IDLE=${IDLE:-19000}
WORKERS=${WORKERS:-1}
SPOOL_MODE=${SPOOL_MODE:-discard}
PIPELINED=${PIPELINED:-4000} # messages per pipelined session
SESSIONS=${SESSIONS:-50}     # concurrent sessions in every test
TESTS=${TESTS:-pipelined one-per-conn smtp-source rcpt-reject}
MXGATE_ARGS=${MXGATE_ARGS:-}
PORT=${PORT:-2700}
source "$ROOT/benches/scripts/cpus.sh"
SERVER_CPUS=${SERVER_CPUS-$(last_cpu)}
CLIENT_CPUS=${CLIENT_CPUS-$(other_cpus)}
WORK=$(mktemp -d)
SERVER_PID=
trap 'stop_server; rm -rf "$WORK"' EXIT
printf 'alice@example.com\n@example.com\nalice@reject.example\n' >"$WORK/table.txt"

start_server() { # backend
    $(on_cpus "$SERVER_CPUS") "$MXGATE" --backend "$1" --workers "$WORKERS" --recipients "$WORK/table.txt" \
        --listen "127.0.0.1:$PORT" --spool "$WORK/spool-$1" --spool-mode "$SPOOL_MODE" \
        $MXGATE_ARGS 2>"$WORK/log-$1" & # MXGATE_ARGS is split on purpose
    SERVER_PID=$!
    for _ in $(seq 100); do
        grep -q "mxgate ready" "$WORK/log-$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "mxgate --backend $1 did not start" >&2
    cat "$WORK/log-$1" >&2
    exit 1
}

stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

# The server's CPU time so far (user + system, all threads), in ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"
}

# Runs a command; prints "<rate> <cpu ticks>", rate being what it printed.
# Nothing traces the server meanwhile: counting its system calls (a
# tracepoint hit per call) would tax epoll's ten times as many calls more.
timed() {
    local rate cpu
    cpu=$(cpu_ticks)
    rate=$("$@")
    cpu=$(($(cpu_ticks) - cpu))
    echo "$rate $cpu"
}

# Runs a command again while perf counts the server's system calls; prints
# the count.
syscalls() {
    perf stat -x, -e raw_syscalls:sys_enter -p "$SERVER_PID" -o "$WORK/perf" &
    local perf=$!
    sleep 0.3
    "$@" >/dev/null
    kill -INT "$perf"
    wait "$perf" 2>/dev/null || true
    grep raw_syscalls "$WORK/perf" | cut -d, -f1
}

# measure BACKEND ROUND TEST UNITS COMMAND...: rate and CPU every round,
# system calls (a second, traced run) in the first round only.
measure() {
    local b=$1 round=$2 test=$3 units=$4 calls=- out
    shift 4
    out=$(timed "$@")
    if [ "$round" = 1 ]; then calls=$(syscalls "$@"); fi
    # Each measurement on stderr too, so the spread behind a median shows.
    echo "$b $test $out $calls $units" | tee -a "$WORK/results" >&2
}

load_rate() { # field, load flags...
    local field=$1 out
    shift
    # Parsed once the load is over: python's start-up would otherwise run
    # beside it, on any core.
    out=$($(on_cpus "$CLIENT_CPUS") "$LOAD" --target "127.0.0.1:$PORT" --threads 1 --json "$@")
    python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['$field']))" "$out"
}

smtp_source_rate() { # sessions, messages
    local start end
    start=$(date +%s.%N)
    $(on_cpus "$CLIENT_CPUS") /usr/sbin/smtp-source -s "$1" -m "$2" -l 1024 -f a@test.example \
        -t bob@example.com "127.0.0.1:$PORT" >/dev/null
    end=$(date +%s.%N)
    python3 -c "print(round($2 / ($end - $start)))"
}

# Opens $IDLE connections that read their greeting and stay; prints the
# server's RSS growth in octets per session.
idle_bytes() {
    $(on_cpus "$CLIENT_CPUS") python3 - "$SERVER_PID" "$PORT" "$IDLE" <<'EOF'
import socket, sys, time
pid, port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
time.sleep(0.2)
before = rss()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    socks.append(s)
    if len(socks) % 256 == 0:
        for t in socks[-256:]:
            t.recv(128)
for t in socks[len(socks) // 256 * 256:]:
    t.recv(128)
time.sleep(0.5)
print(round((rss() - before) / n))
for s in socks:
    s.close()
EOF
}

run_test() { # backend round test
    local b=$1 r=$2
    case $3 in
    pipelined)
        measure "$b" "$r" pipelined $((SESSIONS * PIPELINED)) load_rate messages_per_s \
            --sessions "$SESSIONS" --messages "$PIPELINED" --pipelining
        ;;
    one-per-conn)
        measure "$b" "$r" one-per-conn 10000 load_rate sessions_per_s \
            --sessions "$SESSIONS" --sessions-total 10000 --messages 1
        ;;
    smtp-source) measure "$b" "$r" smtp-source 10000 smtp_source_rate "$SESSIONS" 10000 ;;
    rcpt-reject)
        measure "$b" "$r" rcpt-reject 10000 load_rate sessions_per_s \
            --sessions "$SESSIONS" --sessions-total 10000 \
            --messages 1 --invalid-ratio 1 --invalid-domain reject.example
        ;;
    *) echo "unknown test '$3' in TESTS" >&2 && exit 2 ;;
    esac
}

run_round() { # backend round
    local b=$1 r=$2 test
    start_server "$b"
    for test in $TESTS; do run_test "$b" "$r" "$test"; done
    stop_server
}

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)," \
    "git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')," \
    "server CPUs ${SERVER_CPUS:-any}, client CPUs ${CLIENT_CPUS:-any}, $SESSIONS sessions," \
    "server flags: ${MXGATE_ARGS:-(defaults)}"
for round in $(seq "$ROUNDS"); do
    for b in epoll uring; do
        echo "round $round: $b" >&2
        run_round "$b" "$round"
    done
done
touch "$WORK/idle"
for b in epoll uring; do
    [ "$IDLE" -gt 0 ] || break
    start_server "$b"
    echo "$b idle $(idle_bytes)" >>"$WORK/idle"
    stop_server
done

python3 - "$WORK/results" "$WORK/idle" <<'EOF'
import statistics, sys
import os
tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
rows = {}
for line in open(sys.argv[1]):
    b, test, rate, ticks, calls, units = line.split()
    n = float(units)
    calls = float(calls) / n if calls != "-" else None
    rows.setdefault((test, b), []).append((float(rate), calls, float(ticks) * tick_us / n))
med = lambda rs, i: statistics.median(r[i] for r in rs if r[i] is not None)
print(f"{'test':13} {'epoll/s':>8} {'uring/s':>8} {'ratio':>5} | {'ep sc/u':>7} {'ur sc/u':>7} {'ratio':>5} | {'ep us/u':>7} {'ur us/u':>7} {'ratio':>5}")
for test in ["pipelined", "one-per-conn", "smtp-source", "rcpt-reject"]:
    if (test, "epoll") not in rows or (test, "uring") not in rows:
        continue
    e, u = rows[(test, "epoll")], rows[(test, "uring")]
    cells = []
    for i, fmt in [(0, "8.0f"), (1, "7.1f"), (2, "7.1f")]:
        a, b = med(e, i), med(u, i)
        cells.append(f"{a:{fmt}} {b:{fmt}} {b / a:5.2f}")
    print(f"{test:13} " + " | ".join(cells))
print("(medians of rounds; /u = per message (pipelined) or per session; sc = server system calls,")
print(" counted in a separate traced run of round 1; us = server CPU µs)")
for line in open(sys.argv[2]):
    b, _, per = line.split()
    print(f"idle sessions, {b}: {per} user-space octets each (RSS growth / sessions)")
EOF
