#!/usr/bin/env python3
"""Pools the smtp-source rounds of several compare.sh runs.

Each compare.sh run quotes the median of its own rounds; on a noisy host
the medians of separate runs differ. This reads the per-round lines that
compare.sh logs ("[hh:mm:ss]   accept/mxgate durable round 3: 5318.2/s")
from the saved output of several runs and prints each server's median over
all of them, and its ratio to smtp-sink's, per scenario.

usage: benches/scripts/pool_rounds.py RUN_OUTPUT [RUN_OUTPUT ...]
"""

import re
import statistics
import sys
from collections import defaultdict

ROUND = re.compile(r"\]\s+(accept|reject)/(.+?) round \d+: ([\d.]+)/s")
PEER = {"accept": "smtp-sink", "reject": "smtp-sink -f RCPT"}


def pooled(paths):
    """{(scenario, server): [rate, ...]} over every run."""
    rates = defaultdict(list)
    for path in paths:
        with open(path, encoding="utf-8") as run:
            for line in run:
                found = ROUND.search(line)
                if found:
                    scenario, server, rate = found.groups()
                    rates[scenario, server].append(float(rate))
    return rates


def main(paths):
    if not paths:
        sys.exit(__doc__.strip().splitlines()[-1])
    rates = pooled(paths)
    print(f"{'scenario':<8} {'server':<18} {'rounds':>6} {'median/s':>9} {'ratio':>6}")
    for (scenario, server), values in sorted(rates.items()):
        median = statistics.median(values)
        peer = rates.get((scenario, PEER[scenario]))
        ratio = f"{median / statistics.median(peer):6.2f}" if peer else "     -"
        print(f"{scenario:<8} {server:<18} {len(values):>6} {median:>9.0f} {ratio}")


if __name__ == "__main__":
    main(sys.argv[1:])
