#!/usr/bin/env python3
"""Slow-drip clients for benches/scripts/soak.sh: many SMTP sessions, one
octet per second each, from one process.

Opens --sessions connections to --target (in waves of --wave not yet
dripping, so the listen queue never overflows). Half of them, after the
220, start a command line (`EHLO ` then an `a` a second, never a line
end); the other half send EHLO, MAIL, RCPT and DATA at once and, after
the 354, drip the body an octet a second. A session ends when the server
replies while it drips (421: cut off, as the time rules should) or
closes. Every second it also samples the server's VmRSS (--pid).

Each session drips at its own phase of the second (one of --phases,
evenly spread), as independent clients would; --phases 1 sends every
octet in one burst a second.

Once every session is dripping (or over), it writes the time to --ready,
so the caller can start its normal load. At the end (every session over,
or --limit seconds) it prints one JSON object: outcomes per mode
(`cut` = a 421 while dripping), how long the cut sessions dripped, the
ramp time and the RSS samples.

Stdlib only; shares the socket helpers of idle_hold.py (source addresses
127.0.0.2, 127.0.0.3, ... so one address never runs out of ports).
"""

import argparse
import errno
import json
import selectors
import socket
import statistics
import time
from collections import Counter, defaultdict

from idle_hold import IP_BIND_ADDRESS_NO_PORT, proc_status_kib, source_address, split_reply

ENVELOPE = (b"EHLO drip.example\r\nMAIL FROM:<drip@drip.example>\r\n"
            b"RCPT TO:<user@example.com>\r\nDATA\r\n")
# Replies to ENVELOPE: EHLO, MAIL, RCPT, then the 354.
ENVELOPE_REPLIES = 4


class Drip:
    """One session: its mode (command or data), its phase of the second
    and where it stands."""

    def __init__(self, sock, mode, phase):
        self.sock = sock
        self.mode = mode
        self.phase = phase
        self.buf = b""
        self.state = "banner"  # banner, envelope, drip
        self.replies = 0
        self.started = None  # when it began to drip


class Trickler:
    def __init__(self, args):
        host, port = args.target.rsplit(":", 1)
        self.target = (host, int(port))
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.pending = set()  # connected, not dripping yet
        self.dripping = [set() for _ in range(args.phases)]  # by phase
        self.outcomes = defaultdict(Counter)  # mode -> outcome -> n
        self.dripped = defaultdict(list)  # mode -> seconds dripped before the cut
        self.first_error = None

    def start(self, index):
        mode = "command" if index % 2 == 0 else "data"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source_address(index, self.args.per_source), 0))
        sock.setblocking(False)
        err = sock.connect_ex(self.target)
        if err not in (0, errno.EINPROGRESS):
            self.outcomes[mode]["connect-failed"] += 1
            self.first_error = self.first_error or errno.errorcode.get(err, err)
            sock.close()
            return
        drip = Drip(sock, mode, index % self.args.phases)
        self.pending.add(drip)
        self.sel.register(sock, selectors.EVENT_READ, drip)

    def finish(self, drip, outcome, now):
        self.outcomes[drip.mode][outcome] += 1
        if outcome == "cut":
            self.dripped[drip.mode].append(now - drip.started)
        self.sel.unregister(drip.sock)
        drip.sock.close()
        self.pending.discard(drip)
        self.dripping[drip.phase].discard(drip)

    def on_ready(self, drip, now):
        try:
            data = drip.sock.recv(4096)
        except OSError as e:
            self.first_error = self.first_error or f"recv: {e}"
            return self.finish(drip, f"{drip.state}-error", now)
        if not data:
            return self.finish(drip, f"{drip.state}-closed", now)
        drip.buf += data
        while drip.sock.fileno() >= 0 and (reply := split_reply(drip.buf)):
            code, _, drip.buf = reply
            self.on_reply(drip, code.decode(errors="replace"), now)

    def on_reply(self, drip, code, now):
        if drip.state == "drip":
            return self.finish(drip, "cut" if code == "421" else f"reply-{code}", now)
        if code[0] not in "23":
            return self.finish(drip, f"{drip.state}-{code}", now)
        if drip.state == "banner" and drip.mode == "command":
            drip.sock.send(b"EHLO ")
            return self.begin(drip, now)
        if drip.state == "banner":
            drip.sock.send(ENVELOPE)
            drip.state = "envelope"
            return
        drip.replies += 1
        if drip.replies == ENVELOPE_REPLIES:
            self.begin(drip, now)

    def begin(self, drip, now):
        drip.state = "drip"
        drip.started = now
        self.pending.discard(drip)
        self.dripping[drip.phase].add(drip)

    def dripping_now(self):
        return sum(len(phase) for phase in self.dripping)

    def tick(self, phase):
        """One octet to every dripping session of `phase`."""
        for drip in list(self.dripping[phase]):
            try:
                drip.sock.send(b"a")
            except OSError:
                pass  # a full buffer, or closed under us: its reply is read next

    def run(self):
        args = self.args
        t0 = time.monotonic()
        rss = [(0.0, proc_status_kib(args.pid, "VmRSS"))]
        phases = args.phases
        next_index, next_tick, tick, ready = 0, t0 + 1 / phases, 0, None
        while time.monotonic() - t0 < args.limit:
            while next_index < args.sessions and len(self.pending) < args.wave:
                self.start(next_index)
                next_index += 1
            timeout = max(0.0, next_tick - time.monotonic())
            for key, _ in self.sel.select(timeout):
                self.on_ready(key.data, time.monotonic())
            now = time.monotonic()
            if now >= next_tick:
                self.tick(tick % phases)
                if tick % phases == 0:
                    rss.append((round(now - t0, 1), proc_status_kib(args.pid, "VmRSS")))
                tick += 1
                next_tick += 1 / phases
            if ready is None and next_index == args.sessions and not self.pending:
                ready = now - t0
                with open(args.ready, "w") as f:
                    f.write(f"{ready:.1f} {self.dripping_now()}\n")
            if ready is not None and not self.dripping_now():
                break
        return self.report(t0, ready, rss)

    def report(self, t0, ready, rss):
        def spread(values):
            if not values:
                return None
            return {"min": round(min(values), 1), "median": round(statistics.median(values), 1),
                    "max": round(max(values), 1)}
        kib = [k for _, k in rss]
        return {
            "sessions": self.args.sessions,
            "outcomes": {mode: dict(c) for mode, c in self.outcomes.items()},
            "still_dripping": self.dripping_now(),
            "dripped_secs": {mode: spread(v) for mode, v in self.dripped.items()},
            "ramp_secs": None if ready is None else round(ready, 1),
            "run_secs": round(time.monotonic() - t0, 1),
            "rss_kib": {"before": kib[0], "peak": max(kib), "last": kib[-1]},
            "rss_samples": rss,
            "first_error": self.first_error,
        }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", required=True, help="HOST:PORT")
    p.add_argument("--pid", type=int, required=True, help="the server, for VmRSS")
    p.add_argument("--sessions", type=int, default=15000)
    p.add_argument("--per-source", type=int, default=5000, help="sessions per source address")
    p.add_argument("--wave", type=int, default=500, help="sessions connecting at once")
    p.add_argument("--phases", type=int, default=20, help="drip phases per second")
    p.add_argument("--ready", required=True, help="file written once all are dripping")
    p.add_argument("--limit", type=float, default=600, help="give up after this many seconds")
    print(json.dumps(Trickler(p.parse_args()).run()))


if __name__ == "__main__":
    main()
