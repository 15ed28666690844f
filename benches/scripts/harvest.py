#!/usr/bin/env python3
"""A directory-harvest client: try unknown recipients as fast as the server lets.

Used by benches/scripts/harvest.sh. From one source address (--source), it
keeps --sessions sessions going at once (1: one session at a time): each
connects, says EHLO and MAIL FROM, then sends RCPT TO for made-up users of
the local domain in pipelined batches of --batch, reading every reply. A
session that gets 421 (the hard error limit), or is refused at connect,
connects again, as a harvester would (after --retry seconds, so that the
refusals do not spin a core). It stops after --seconds and prints one
`key=value` line for the shell script:

    seconds=180 sessions=1 answered=29 per_minute=9.7 first_minute=26
    last_minute=10 max_minute=26 refused_at_connect=812 refused_later=3
    connections=818

`answered` counts the RCPTs answered 550 (the recipient is unknown: the
harvester learnt something); `per_minute` is answered / seconds x 60;
`first_minute`, `last_minute` and `max_minute` count them per whole minute
of the run. Stdlib only; one thread per session.
"""

import argparse
import socket
import threading
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="HOST:PORT of the server")
    p.add_argument("--source", default="127.0.0.2", help="source address to bind")
    p.add_argument("--sessions", type=int, default=1, help="sessions at once")
    p.add_argument("--seconds", type=float, default=180, help="how long to harvest")
    p.add_argument("--batch", type=int, default=10, help="RCPTs pipelined per write")
    p.add_argument("--retry", type=float, default=0.2, help="pause before reconnecting")
    p.add_argument("--domain", default="example.com", help="the server's local domain")
    return p.parse_args()


class Tally:
    """What every session saw, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.answered = []  # times of the 550 replies
        self.refused_at_connect = 0
        self.refused_later = 0
        self.connections = 0
        self.next_user = 0

    def users(self, n):
        with self.lock:
            first = self.next_user
            self.next_user += n
        return [f"harvest{i}" for i in range(first, first + n)]

    def add(self, **counts):
        with self.lock:
            for key, n in counts.items():
                setattr(self, key, getattr(self, key) + n)


class Closed(Exception):
    pass


def replies(stream):
    """Yields (code, last line) of each reply read from `stream`."""
    while True:
        line = stream.readline()
        if not line:
            raise Closed()
        if line[3:4] != b"-":
            yield int(line[:3]), line.rstrip(b"\r\n")


def session(args, tally, deadline):
    """One session, until it is closed, refused or the run is over."""
    host, port = args.target.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(max(deadline - time.monotonic(), 0.1) + 30)
    try:
        sock.bind((args.source, 0))
        sock.connect((host, int(port)))
        tally.add(connections=1)
        stream = sock.makefile("rb")
        read = replies(stream)
        code, _ = next(read)
        if code == 421:
            tally.add(refused_at_connect=1)
            return
        for line in (b"EHLO harvester.example", b"MAIL FROM:<h@harvester.example>"):
            sock.sendall(line + b"\r\n")
            if next(read)[0] == 421:
                tally.add(refused_later=1)
                return
        while time.monotonic() < deadline:
            users = tally.users(args.batch)
            batch = "".join(f"RCPT TO:<{u}@{args.domain}>\r\n" for u in users)
            sock.sendall(batch.encode())
            for _ in users:
                code, _ = next(read)
                if code == 421:
                    tally.add(refused_later=1)
                    return
                if code == 550:
                    with tally.lock:
                        tally.answered.append(time.monotonic())
    except (Closed, OSError, StopIteration):
        pass
    finally:
        sock.close()


def harvester(args, tally, deadline):
    while time.monotonic() < deadline:
        session(args, tally, deadline)
        time.sleep(args.retry)


def main():
    args = parse_args()
    tally = Tally()
    start = time.monotonic()
    deadline = start + args.seconds
    threads = [
        threading.Thread(target=harvester, args=(args, tally, deadline), daemon=True)
        for _ in range(args.sessions)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(deadline - time.monotonic(), 0) + 40)
    minutes = int(args.seconds // 60)
    per = [0] * max(minutes, 1)
    for at in tally.answered:
        m = int((at - start) // 60)
        if m < len(per):
            per[m] += 1
    n = len(tally.answered)
    print(
        f"seconds={args.seconds:g} sessions={args.sessions} answered={n} "
        f"per_minute={n / args.seconds * 60:.1f} first_minute={per[0]} "
        f"last_minute={per[-1]} max_minute={max(per)} "
        f"refused_at_connect={tally.refused_at_connect} "
        f"refused_later={tally.refused_later} connections={tally.connections}"
    )


if __name__ == "__main__":
    main()
