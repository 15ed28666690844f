#!/usr/bin/env python3
"""Reads mxgate-load's --json output for benches/scripts/compare.sh.

  load_summary.py row JSON WALL_SECS SERVER_CPU_SECS CLIENT_CPU_SECS
      prints one tab-separated row: messages/s, RCPT p99 µs, session p99 µs,
      server and client (mxgate-load) CPU µs per message, errors
  load_summary.py table TSV
      TSV rows are "level server round <row>"; prints medians per (level,
      server) and ratios against smtp-sink at the same level.

The script times each run itself (wall clock and CPU, as it does for
smtp-source), so only counts and percentiles are taken from the JSON.
"""

import json
import statistics
import sys
from collections import defaultdict


def p99(doc, phase):
    """The p99 (µs) of one phase: mxgate-load writes "phases" as a list of
    {"phase": name, "p50": ..., "p99": ...}."""
    for entry in doc.get("phases", []):
        if entry.get("phase") == phase and entry.get("count"):
            return float(entry["p99"])
    return float("nan")


def row(path, wall, cpu, client_cpu):
    with open(path) as f:
        doc = json.load(f)
    counts = doc["counts"]
    accepted = counts["messages_accepted"]
    errors = sum(counts.get(k, 0) for k in ("connect_errors", "timeouts", "io_errors",
                                            "protocol_errors", "tls_errors",
                                            "messages_refused"))
    def per_msg(secs):
        return float(secs) * 1e6 / accepted if accepted else float("nan")
    print(f"{accepted / float(wall):.1f}\t{p99(doc, 'rcpt'):.0f}\t"
          f"{p99(doc, 'session'):.0f}\t{per_msg(cpu):.1f}\t{per_msg(client_cpu):.1f}\t{errors}")


LABELS = {"sink": "smtp-sink", "mx-durable": "mxgate durable", "mx-discard": "mxgate discard"}


def table(path):
    cols = defaultdict(lambda: defaultdict(list))
    order = []
    for line in open(path):
        level, server, _, rate, rcpt, sess, cpu, client, errors = line.rstrip("\n").split("\t")
        if (level, server) not in order:
            order.append((level, server))
        c = cols[level, server]
        for name, value in (("rate", rate), ("rcpt", rcpt), ("sess", sess),
                            ("cpu", cpu), ("client", client), ("err", errors)):
            c[name].append(float(value))
    print(f"{'sessions':>8} {'server':<15} {'runs':>4} {'msgs/s':>8} {'ratio':>6} "
          f"{'RCPT p99 µs':>11} {'session p99 µs':>14} {'server CPU µs/msg':>17} "
          f"{'client CPU µs/msg':>17} {'errors':>6}")
    peer = {}
    for level, server in order:
        c = cols[level, server]
        med = {k: statistics.median(v) for k, v in c.items()}
        peer.setdefault(level, med["rate"])
        print(f"{level:>8} {LABELS.get(server, server):<15} {len(c['rate']):>4} "
              f"{med['rate']:>8.0f} {med['rate'] / peer[level]:>6.2f} {med['rcpt']:>11.0f} "
              f"{med['sess']:>14.0f} {med['cpu']:>17.1f} {med['client']:>17.1f} "
              f"{sum(c['err']):>6.0f}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "row":
        row(*sys.argv[2:])
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        raise SystemExit(__doc__)
