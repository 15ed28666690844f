#!/usr/bin/env bash
# benches/scripts/relay_churn.sh — does a relayed spool stay fast in steady
# state, when a file is created and removed per message all day (issue 14)?
#
# One mxgate (durable spool, --relay-to smtp-sink) takes ROUNDS smtp-source
# runs of MESSAGES messages back to back; each round's rate is MESSAGES /
# (time until smtp-source is done and new/ is empty again), so the relay's
# removals are inside the measurement. On ext4 without a journal the inode
# allocator skips every inode freed in the last minutes (ialloc.c,
# recently_deleted()): if removals make creates slow, the later rounds show
# it. Run it once on a journaled ext4 (SPOOL_FS=loop, the default as root)
# and once on the host's file system (SPOOL_FS=host), with two binaries
# (MXGATE_BIN) to compare designs.
#
# Settings (environment): PORT=25450 (PORT, PORT+1), ROUNDS=6,
# MESSAGES=5000, CONCURRENCY=50, SIZE=1024, MXGATE_ARGS="", NO_BUILD,
# MXGATE_BIN, SERVER_CPUS, CLIENT_CPUS, SPOOL_FS, BENCH_TMP, KEEP_WORK as in
# lib.sh. Output: one line per round on stdout, progress on stderr.
set -euo pipefail
source "$(dirname "$0")/cpus.sh"
split_cpus
source "$(dirname "$0")/lib.sh"

PORT=${PORT:-25450}
ROUNDS=${ROUNDS:-6}
MESSAGES=${MESSAGES:-5000}
CONCURRENCY=${CONCURRENCY:-50}
SIZE=${SIZE:-1024}
MXGATE_ARGS=${MXGATE_ARGS:-}
SINK_PORT=$((PORT + 1))

ensure_tools
build_mxgate
[[ -z $MXGATE_PROBLEM ]] || die "$MXGATE_PROBLEM"
mount_spool_fs "$WORK/spool"
make_table "$WORK/table" 100
NEW=$WORK/spool/mx/new

start_server sink "$SINK_PORT" smtp-sink -u postfix "127.0.0.1:$SINK_PORT" 1000 ||
    die "smtp-sink did not start"
# shellcheck disable=SC2086 # MXGATE_ARGS is a list of words
start_server mxgate "$PORT" "$MXGATE_BIN" --recipients "$WORK/table" \
    --spool "$WORK/spool/mx" --listen "127.0.0.1:$PORT" --hostname mx.bench \
    --relay-to "smtp://127.0.0.1:$SINK_PORT" $MXGATE_ARGS ||
    die "mxgate did not start (log: $WORK/mxgate.log)"

waiting() { find "$NEW" -name '*.bsmtp' | wc -l; }

log "spool: $SPOOL_FS_DESC; binary: $MXGATE_BIN"
printf 'round\tmessages\tseconds\tmsg/s\tleft\n'
for ((round = 1; round <= ROUNDS; round++)); do
    start=$(date +%s.%N)
    run_client 600 "$WORK/source.out" "$WORK/source.err" \
        smtp-source -s "$CONCURRENCY" -m "$MESSAGES" -l "$SIZE" \
        -f sender@remote.example -t user@example.com "127.0.0.1:$PORT" ||
        die "smtp-source failed: $(tail -n1 "$WORK/source.err")"
    for ((i = 0; i < 3000; i++)); do
        [[ $(waiting) == 0 ]] && break
        sleep 0.1
    done
    end=$(date +%s.%N)
    left=$(waiting)
    awk -v r="$round" -v m="$MESSAGES" -v s="$start" -v e="$end" -v l="$left" \
        'BEGIN { printf "%d\t%d\t%.2f\t%.0f\t%d\n", r, m, e - s, m / (e - s), l }'
done
grep -c 'status=sent' "$WORK/mxgate.log" | sed 's/^/relay attempts sent: /' >&2
