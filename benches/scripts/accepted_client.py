#!/usr/bin/env python3
"""A load client that remembers which messages the server accepted, for
benches/scripts/relay_kill.sh: SESSIONS threads, each sending one message
per connection to user@example.com, every message with a unique
Message-ID <N@kill.bench>, until the STOP file exists. A message counts as
accepted only when its end of data got a 250; its number is then written to
the ACCEPTED file at once (one line each, flushed), so a server killed
mid-transaction leaves no message recorded that it did not accept.
Connection failures (the server being restarted) are retried after 50 ms.

    accepted_client.py HOST:PORT SESSIONS SIZE ACCEPTED STOP

Prints on stderr, at the end: tried, accepted, failed attempts.
"""
import itertools
import os
import smtplib
import sys
import threading
import time

host, port = sys.argv[1].rsplit(":", 1)
sessions, size = int(sys.argv[2]), int(sys.argv[3])
accepted_path, stop_path = sys.argv[4], sys.argv[5]

numbers = itertools.count(1)
lock = threading.Lock()
accepted = open(accepted_path, "a", buffering=1)
counts = {"tried": 0, "accepted": 0, "failed": 0}
body = ("x" * 76 + "\r\n") * max(1, size // 78)


def message(n):
    return (f"From: <sender@example.com>\r\nTo: <user@example.com>\r\n"
            f"Message-ID: <{n}@kill.bench>\r\nSubject: kill {n}\r\n\r\n{body}")


def send_one():
    with lock:
        n = next(numbers)
        counts["tried"] += 1
    smtp = None
    try:
        smtp = smtplib.SMTP(host, int(port), local_hostname="client.example.net", timeout=30)
        smtp.sendmail("sender@example.com", ["user@example.com"], message(n))
    except (OSError, smtplib.SMTPException):
        with lock:
            counts["failed"] += 1
        time.sleep(0.05)
        return
    finally:
        if smtp is not None:
            smtp.close()
    # sendmail returned: the end of data got 250 (recorded before any QUIT,
    # which a kill may break).
    with lock:
        accepted.write(f"{n}\n")
        counts["accepted"] += 1


def worker():
    while not os.path.exists(stop_path):
        send_one()


threads = [threading.Thread(target=worker) for _ in range(sessions)]
for t in threads:
    t.start()
for t in threads:
    t.join()
accepted.close()
print(f"tried {counts['tried']}, accepted {counts['accepted']}, failed attempts {counts['failed']}",
      file=sys.stderr)
