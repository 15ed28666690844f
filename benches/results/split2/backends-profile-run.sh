#!/bin/bash
# As run on 2026-11-27 10:50 UTC from /work/main (paths are that checkout's); writes /tmp/prof/{epoll,uring}.data for backends-profile-classify.py.
# profile the server in the pipelined test, per backend
set -e
cd /work/main
W=$(mktemp -d); printf 'alice@example.com\n@example.com\n' > $W/t.txt
for b in epoll uring; do
  taskset -c 1 target/release/mxgate --backend $b --workers 1 --recipients $W/t.txt --listen 127.0.0.1:2790 --spool $W/s-$b --spool-mode discard 2>$W/log-$b &
  P=$!; sleep 1
  taskset -c 0 target/release/mxgate-load --target 127.0.0.1:2790 --threads 1 --json --sessions 50 --messages 6000 --pipelining > $W/load-$b.json &
  L=$!; sleep 1
  perf record -g -o /tmp/prof/$b.data -p $P -- sleep 3 2>/dev/null >/dev/null
  wait $L; kill -INT $P; wait $P || true
  python3 -c "import json,sys; d=json.load(open('$W/load-$b.json')); print('$b', {k:v for k,v in d.items() if 'rate' in k or 'per_s' in k})"
done
