#!/usr/bin/env python3
"""Hold many idle SMTP sessions open against one server and measure its memory.

Used by benches/scripts/idle.sh. Opens --sessions TCP connections to --target, reads
each 220 banner, then sends nothing more: every session sits idle in the
server's command-wait state. It reads the server's VmRSS/RssAnon from
/proc/PID/status before the sessions open and while they are all held, and
prints one `key=value` line for the shell script:

    sessions=19000 banners=19000 rejected=0 failed=0 dropped=0
    rss_before_kib=... rss_held_kib=... anon_before_kib=... anon_held_kib=...
    bytes_per_session=... tcp_mem_pages_before=... tcp_mem_pages_held=...

Stdlib only (selectors + sockets). Source addresses are spread over
127.0.0.2, 127.0.0.3, ... (--per-source sessions each) so one source address
never runs out of ephemeral ports; IP_BIND_ADDRESS_NO_PORT defers the port
choice to connect(), so bind() does not reserve a port per socket.
"""

import argparse
import errno
import selectors
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def proc_status_kib(pid, field):
    """Return a `field:  N kB` value from /proc/PID/status, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/{pid}/status")


def tcp_mem_pages():
    """Kernel-wide TCP socket memory in pages (for reference, not user-space)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1])
    return -1


def source_address(index, per_source):
    """127.0.0.2 for the first per_source sessions, then 127.0.0.3, ..."""
    n = 2 + index // per_source
    if n > 254:
        raise SystemExit("idle_hold: too many sessions for 127.0.0.2-254")
    return f"127.0.0.{n}"


class Holder:
    """Opens sessions in waves (at most `wave` awaiting a banner at once, so
    the server's listen backlog never overflows) and keeps them open."""

    def __init__(self, host, port, per_source, wave):
        self.target = (host, port)
        self.per_source = per_source
        self.wave = wave
        self.sel = selectors.DefaultSelector()
        self.pending = {}  # socket -> bytes read so far (banner not complete)
        self.held = []  # sockets whose 220 banner arrived
        self.rejected = 0  # banner was not 220 (e.g. 421 over capacity)
        self.failed = 0  # connect error or closed before a banner
        self.first_error = None

    def _fail(self, sock, why):
        self.failed += 1
        if self.first_error is None:
            self.first_error = why
        self._forget(sock)

    def _forget(self, sock):
        self.sel.unregister(sock)
        self.pending.pop(sock, None)
        sock.close()

    def _start(self, index):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source_address(index, self.per_source), 0))
        sock.setblocking(False)
        err = sock.connect_ex(self.target)
        if err not in (0, errno.EINPROGRESS):
            self.failed += 1
            self.first_error = self.first_error or f"connect: {errno.errorcode.get(err, err)}"
            sock.close()
            return
        self.pending[sock] = b""
        self.sel.register(sock, selectors.EVENT_READ)

    def _on_readable(self, sock):
        try:
            data = sock.recv(512)
        except OSError as e:
            return self._fail(sock, f"recv: {e}")
        if not data:
            return self._fail(sock, "closed before banner")
        buf = self.pending[sock] + data
        # The banner ends at the first line "NNN <text>" (a "220-" line continues it).
        for line in buf.split(b"\n")[:-1]:
            if len(line) >= 4 and line[3:4] != b"-":
                if line.startswith(b"220"):
                    self.pending.pop(sock)
                    # Stay registered: readable from now on means dropped.
                    self.held.append(sock)
                else:
                    self.rejected += 1
                    if self.first_error is None:
                        self.first_error = "banner: " + line.decode(errors="replace").strip()
                    self._forget(sock)
                return
        self.pending[sock] = buf

    def open(self, sessions, deadline):
        started = 0
        while time.monotonic() < deadline:
            while started < sessions and len(self.pending) < self.wave:
                self._start(started)
                started += 1
            if started == sessions and not self.pending:
                return
            for key, _ in self.sel.select(timeout=0.5):
                if key.fileobj in self.pending:
                    self._on_readable(key.fileobj)
        for sock in list(self.pending):
            self._fail(sock, "timed out waiting for banner")

    def count_dropped(self, seconds):
        """Watch the held sessions for `seconds`: any readable one was closed
        (or written to) by the server while it should have stayed idle."""
        dropped = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for key, _ in self.sel.select(timeout=0.2):
                self.sel.unregister(key.fileobj)
                dropped += 1
        return dropped

    def close(self):
        for sock in self.held:
            sock.close()
        self.sel.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="HOST:PORT")
    ap.add_argument("--pid", type=int, required=True, help="server process to measure")
    ap.add_argument("--sessions", type=int, default=19000)
    ap.add_argument("--per-source", type=int, default=10000)
    ap.add_argument("--wave", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=16,
                    help="sessions opened and closed before the baseline reading")
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    port = int(port)

    # Warm-up: the first sessions may fault in code pages and per-worker
    # buffers; those are one-time costs, not per-session ones.
    warm = Holder(host, port, args.per_source, args.wave)
    warm.open(args.warmup, time.monotonic() + 10)
    warm.close()
    time.sleep(args.settle)

    rss_before = proc_status_kib(args.pid, "VmRSS")
    anon_before = proc_status_kib(args.pid, "RssAnon")
    tcp_before = tcp_mem_pages()

    holder = Holder(host, port, args.per_source, args.wave)
    t0 = time.monotonic()
    holder.open(args.sessions, t0 + args.timeout)
    open_secs = time.monotonic() - t0
    time.sleep(args.settle)
    rss_held = proc_status_kib(args.pid, "VmRSS")
    anon_held = proc_status_kib(args.pid, "RssAnon")
    tcp_held = tcp_mem_pages()
    dropped = holder.count_dropped(args.settle)
    held = len(holder.held)
    holder.close()

    per_session = (rss_held - rss_before) * 1024 / held if held else float("nan")
    print(
        f"sessions={args.sessions} banners={held} rejected={holder.rejected} "
        f"failed={holder.failed} dropped={dropped} open_secs={open_secs:.1f} "
        f"rss_before_kib={rss_before} rss_held_kib={rss_held} "
        f"anon_before_kib={anon_before} anon_held_kib={anon_held} "
        f"bytes_per_session={per_session:.0f} "
        f"tcp_mem_pages_before={tcp_before} tcp_mem_pages_held={tcp_held}"
    )
    if holder.first_error:
        print(f"idle_hold: first error: {holder.first_error}", file=sys.stderr)
    return 0 if held == args.sessions and dropped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
