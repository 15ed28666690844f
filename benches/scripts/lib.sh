# shellcheck shell=bash
# Shared by benches/scripts/compare.sh, idle.sh and busy_poll_cost.sh: the peer (Postfix's
# smtp-sink/smtp-source), building mxgate, starting and stopping servers, and
# cleaning up every process we started. Source it; do not run it.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/../.." && pwd)
source "$BENCH_DIR/cpus.sh" # on_cpus
MXGATE_BIN=${MXGATE_BIN:-$REPO_DIR/target/release/mxgate}
MXGATE_LOAD_BIN=${MXGATE_LOAD_BIN:-$REPO_DIR/target/release/mxgate-load}
# Scratch space: tables, logs, client output and the spool (or the spool's
# image, see mount_spool_fs). On a real disk: never a tmpfs, where fsync is free.
WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/mxgate-bench.XXXXXX")
PATH=$PATH:/usr/sbin:/sbin

# Optional CPU split (taskset lists, e.g. SERVER_CPUS=1 CLIENT_CPUS=0): every
# server then gets the same cores and the client its own, so a multi-threaded
# server cannot out-draw a single-process peer or starve the client.
SERVER_CPUS=${SERVER_CPUS:-}
CLIENT_CPUS=${CLIENT_CPUS:-}

SERVER_PIDS=()   # every server we started, stopped by cleanup
CLIENT_PID=""    # the load client running right now, if any
STARTED_PID=""   # set by start_server
MXGATE_PROBLEM="" # why the mxgate slots are skipped, if they are
SPOOL_MOUNT=""    # the loop-mounted spool file system, if we made one

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

cleanup() {
    local pid
    if [[ -n $CLIENT_PID ]]; then
        kill -TERM "$CLIENT_PID" 2>/dev/null || true
        wait "$CLIENT_PID" 2>/dev/null || true
    fi
    for pid in "${SERVER_PIDS[@]}"; do stop_server "$pid"; done
    if [[ -n $SPOOL_MOUNT ]]; then umount "$SPOOL_MOUNT" || umount -l "$SPOOL_MOUNT" || true; fi
    if [[ ${KEEP_WORK:-0} == 1 ]]; then
        log "kept scratch files in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# smtp-sink and smtp-source come with Debian's postfix package; /usr/bin/time
# (client CPU) with the time package. Installed if missing.
ensure_tools() {
    local -a missing=()
    command -v smtp-sink >/dev/null && command -v smtp-source >/dev/null || missing+=(postfix)
    [[ -x /usr/bin/time ]] || missing+=(time)
    command -v python3 >/dev/null || missing+=(python3)
    [[ ${#missing[@]} == 0 ]] && return
    log "installing ${missing[*]} (warnings about services are harmless)"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    command -v smtp-sink >/dev/null || die "smtp-sink still missing after installing postfix"
}

# Build release binaries. A failed build is not fatal: the mxgate slots are
# skipped with the reason, and smtp-sink is still measured.
build_mxgate() {
    [[ ${NO_BUILD:-0} == 1 ]] && { log "NO_BUILD=1: using $MXGATE_BIN as is"; return; }
    log "cargo build --release (log: $WORK/build.log)"
    if ! (cd "$REPO_DIR" && cargo build --release --workspace --bins) >"$WORK/build.log" 2>&1; then
        MXGATE_PROBLEM="cargo build --release failed: $(grep -m1 '^error' "$WORK/build.log" || tail -n1 "$WORK/build.log")"
        log "$MXGATE_PROBLEM"
    fi
}

# mount_spool_fs DIR: where the durable spool lives. SPOOL_FS=loop (the
# default when we are root and have mkfs.ext4 and a loop device): a fresh
# journaled ext4 in a sparse image under $WORK, loop-mounted on DIR, as an MX
# spool would have. SPOOL_FS=host: DIR on the host's own file system. Here
# that is an ext4 *without* a journal, shared with busy neighbours: there
# every create scans the inodes others deleted recently (ext4 ialloc.c,
# recently_deleted()), which costs far more than mxgate itself. Sets
# SPOOL_FS_DESC.
mount_spool_fs() {
    local dir=$1 mode=${SPOOL_FS:-auto}
    mkdir -p "$dir"
    if [[ $mode == auto ]]; then
        mode=host
        if [[ $EUID == 0 ]] && command -v mkfs.ext4 >/dev/null && losetup -f >/dev/null 2>&1; then
            mode=loop
        fi
    fi
    case $mode in
    host) ;;
    loop)
        truncate -s "${SPOOL_FS_SIZE:-4G}" "$WORK/spool.img"
        mkfs.ext4 -q -F "$WORK/spool.img"
        mount -o loop "$WORK/spool.img" "$dir" || die "cannot loop-mount the spool image (try SPOOL_FS=host)"
        SPOOL_MOUNT=$dir
        ;;
    *) die "SPOOL_FS must be loop or host, not '$mode'" ;;
    esac
    local dev journal="no journal"
    dev=$(basename "$(findmnt -no SOURCE --target "$dir")")
    # A journaled ext4 (jbd2) shows up as /proc/fs/jbd2/<device>-<inode>.
    compgen -G "/proc/fs/jbd2/$dev-*" >/dev/null && journal="journal"
    SPOOL_FS_DESC="$mode: $(findmnt -no FSTYPE,SOURCE --target "$dir" | tr -s ' '), $journal"
}

# The servers need about one descriptor per session: raise the soft limit to
# the hard one (20,000 here) for them and for our clients.
raise_nofile() {
    local need=$1 hard
    hard=$(ulimit -Hn)
    [[ $hard == unlimited || $hard -ge $need ]] ||
        die "open files hard limit is $hard, need $need (raise it in /etc/security/limits.conf)"
    ulimit -Sn "$hard"
}

# A recipient table with N users in the local domain example.com; any other
# user there (nosuchuser@example.com) gets 550 5.1.1 at RCPT.
make_table() {
    local file=$1 n=$2
    {
        echo "# generated by benches/scripts/lib.sh: $n users"
        echo "user@example.com"
        echo "postmaster@example.com"
        seq 0 $((n - 1)) | sed 's/.*/user&@example.com/'
    } >"$file"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $state != Z ]]
}

# Reads the banner on PORT; true if it starts with 220.
banner_ok() {
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        IFS= read -r line <&3 || exit 1
        printf "QUIT\r\n" >&3
        [[ $line == 220* ]]' _ "$1" 2>/dev/null
}

# start_server NAME PORT COMMAND...: starts it (logs in $WORK/NAME.log), waits
# up to 20 s for a 220 banner, sets STARTED_PID. Returns 1, with the reason
# logged, if it exits or never answers.
start_server() {
    local name=$1 port=$2 i rc
    shift 2
    STARTED_PID=""
    port_busy "$port" && die "port $port is already in use (set PORT=... to move)"
    (
        ulimit -Sn "$(ulimit -Hn)"
        exec $(on_cpus "$SERVER_CPUS") "$@"
    ) >"$WORK/$name.log" 2>&1 &
    STARTED_PID=$!
    SERVER_PIDS+=("$STARTED_PID")
    for ((i = 0; i < 100; i++)); do
        if ! alive "$STARTED_PID"; then
            wait "$STARTED_PID" && rc=0 || rc=$?
            log "$name exited at start-up with status $rc; log tail:"
            tail -n 5 "$WORK/$name.log" | sed 's/^/    /' >&2
            return 1
        fi
        banner_ok "$port" && return 0
        sleep 0.2
    done
    log "$name did not answer with 220 on port $port within 20 s"
    return 1
}

stop_server() {
    local pid=$1 i
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# run_client SECONDS OUT ERR COMMAND...: runs a client under `timeout`, in
# the background so that a signal to this script reaches the trap (which
# stops the client) at once. timeout puts itself in its own process group and
# passes a signal, ours or its own at expiry, to the whole group. Returns the
# client's status.
run_client() {
    local secs=$1 out=$2 err=$3 rc=0
    shift 3
    timeout "$secs" $(on_cpus "$CLIENT_CPUS") "$@" >"$out" 2>"$err" &
    CLIENT_PID=$!
    wait "$CLIENT_PID" || rc=$?
    CLIENT_PID=""
    return "$rc"
}

# smtp_source_cmd SCENARIO: sets SOURCE_CMD to smtp-source's command line
# for a scenario, target left off: accept sends one message to a known user
# per connection, reject one RCPT to an unknown user (-A: no DATA).
smtp_source_cmd() {
    SOURCE_CMD=(smtp-source -s "$CONCURRENCY" -m "$MESSAGES" -l "$SIZE" -M client.example.net
        -f sender@example.com)
    if [[ $1 == accept ]]; then
        SOURCE_CMD+=(-t user@example.com)
    else
        SOURCE_CMD+=(-A -t nosuchuser@example.com)
    fi
}

# timed_client SERVER_PID OUT ERR COMMAND...: run_client under the wall clock
# and the server's CPU clock; sets RUN_SECS and RUN_SERVER_CPU (seconds).
timed_client() {
    local pid=$1 t0 cpu0 rc=0
    shift
    cpu0=$(cpu_ticks "$pid")
    t0=$(date +%s.%N)
    run_client "${RUN_TIMEOUT:-300}" "$@" || rc=$?
    RUN_SECS=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    RUN_SERVER_CPU=$(awk -v a="$cpu0" -v b="$(cpu_ticks "$pid")" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { print (b - a) / hz }')
    return "$rc"
}

# make_cert KIND: $WORK/KIND.crt and $WORK/KIND.key, self-signed.
make_cert() {
    local kind=$1
    local -a key_opts
    case $kind in
    ecdsa) key_opts=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) key_opts=(-newkey rsa:2048) ;;
    *) die "unknown key type '$kind' (ecdsa or rsa)" ;;
    esac
    openssl req -x509 "${key_opts[@]}" -nodes -days 2 -subj "/CN=mx.bench.test" \
        -addext "subjectAltName=DNS:mx.bench.test,IP:127.0.0.1" \
        -keyout "$WORK/$kind.key" -out "$WORK/$kind.crt" 2>/dev/null ||
        die "openssl req could not make the $kind certificate"
}

# CPU time (user+system, all threads) of a process, in clock ticks.
cpu_ticks() {
    # Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
    sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# The machine, for the record.
machine_summary() {
    echo "nproc: $(nproc); kernel: $(uname -r); load: $(cut -d' ' -f1-3 /proc/loadavg)"
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Hypervisor)' | sed 's/  */ /g'
    echo "scratch file system: $(df -T "$WORK" | awk 'NR==2{print $2" on "$1}')"
    if [[ -n ${SPOOL_FS_DESC:-} ]]; then echo "durable spool file system: $SPOOL_FS_DESC"; fi
}
