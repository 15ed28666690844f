#!/usr/bin/env python3
"""Keeps SESSIONS SMTP sessions waiting for the reply to their end of data,
for benches/scripts/milter.sh ("waiting costs no worker", issue 16).

    milter_hold.py HOST:PORT SESSIONS MARKER

Each session says EHLO, then sends messages one after another to
user@example.com, each holding MARKER (which the scripted milter answers
after 2 s) and waits for the reply to its final dot before the next one:
so, once ramped up, SESSIONS replies are pending at any moment. Every half
second it prints `EPOCH_SECONDS WAITING` (sessions past their final dot
without a reply yet); on SIGTERM it prints a summary line to stderr:
`replies CODE=COUNT... errors N` and exits. A session whose connection
fails is counted as an error and not reopened, so WAITING shows it.

Owns the holding clients only; the script measures and judges.
"""

import asyncio
import resource
import signal
import sys
import time
from collections import Counter


class Holders:
    def __init__(self, host, port, marker):
        self.host, self.port = host, port
        self.message = (
            "From: <hold@bench.test>\r\nTo: <user@example.com>\r\nSubject: held\r\n\r\n"
            f"{marker}\r\n.\r\n"
        ).encode()
        self.waiting = 0
        self.replies = Counter()
        self.errors = 0

    async def reply(self, reader):
        """The code of one (possibly multi-line) reply."""
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed by the server")
            if line[3:4] != b"-":
                return line[:3].decode()

    async def command(self, reader, writer, line, expect):
        writer.write(line.encode() + b"\r\n")
        code = await self.reply(reader)
        if code != expect:
            raise ConnectionError(f"{line.split()[0]}: {code}")

    async def session(self):
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            if await self.reply(reader) != "220":
                raise ConnectionError("no 220 greeting")
            await self.command(reader, writer, "EHLO hold.bench.test", "250")
            while True:
                await self.command(reader, writer, "MAIL FROM:<hold@bench.test>", "250")
                await self.command(reader, writer, "RCPT TO:<user@example.com>", "250")
                await self.command(reader, writer, "DATA", "354")
                writer.write(self.message)
                self.waiting += 1
                try:
                    code = await self.reply(reader)
                finally:
                    self.waiting -= 1
                self.replies[code] += 1
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as error:
            self.errors += 1
            print(f"session failed: {error}", file=sys.stderr, flush=True)


async def main(target, sessions, marker):
    host, _, port = target.rpartition(":")
    holders = Holders(host, int(port), marker)
    tasks = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for _ in range(sessions):
        tasks.append(asyncio.create_task(holders.session()))
        await asyncio.sleep(0.001)  # a ramp, not a SYN flood
    while not stop.is_set():
        print(f"{time.time():.1f} {holders.waiting}", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
    for task in tasks:
        task.cancel()
    codes = " ".join(f"{code}={count}" for code, count in sorted(holders.replies.items()))
    print(f"replies {codes or 'none'} errors {holders.errors}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[1])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
