#!/usr/bin/env python3
"""Prints the table of idle_hold.py results for idle.sh and tls.sh.

  idle_report.py FILE [LABEL]
      FILE holds one line per run, "NAME key=value ..." as idle_hold.py
      printed it after NAME (a line without key=value pairs, such as
      "mxgate skipped: why", is printed as it is). LABEL heads the NAME
      column (default: server).
"""

import sys


def main(path, label="server"):
    print(f"{label:<10} {'held':>11} {'RSS before':>10} {'RSS held':>10} "
          f"{'RSS B/session':>13} {'anon B/session':>14} {'open s':>6}")
    for line in open(path):
        name, *rest = line.split()
        if not rest or "=" not in rest[0]:
            print(line.rstrip())
            continue
        kv = dict(item.split("=", 1) for item in rest)
        held = int(kv["banners"])
        anon = (int(kv["anon_held_kib"]) - int(kv["anon_before_kib"])) * 1024 / held if held else 0
        print(f"{name:<10} {held:>5}/{kv['sessions']:<5} {kv['rss_before_kib'] + ' KiB':>10} "
              f"{kv['rss_held_kib'] + ' KiB':>10} {kv['bytes_per_session']:>13} {anon:>14.0f} "
              f"{kv['open_secs']:>6}")
        if kv["failed"] != "0" or kv["rejected"] != "0" or kv["dropped"] != "0":
            print(f"{'':<10} failed={kv['failed']} rejected={kv['rejected']} "
                  f"dropped={kv['dropped']}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
