#!/usr/bin/env python3
"""Hold many idle SMTP sessions open against one server and measure its memory.

Used by benches/scripts/idle.sh and tls.sh. Opens --sessions TCP connections to
--target, reads each 220 banner, then sends nothing more: every session sits
idle in the server's command-wait state. With --starttls each session first
goes EHLO, STARTTLS, a TLS handshake (Python's ssl module, any certificate
accepted) and EHLO again, and then sits idle inside TLS. It reads the
server's VmRSS/RssAnon from /proc/PID/status before the sessions open and
while they are all held, and prints one `key=value` line for the shell
script:

    sessions=19000 banners=19000 rejected=0 failed=0 dropped=0 starttls=0
    rss_before_kib=... rss_held_kib=... anon_before_kib=... anon_held_kib=...
    bytes_per_session=... tcp_mem_pages_before=... tcp_mem_pages_held=...

(`banners` counts the sessions held: with --starttls, those whose EHLO
inside TLS was answered.)

Stdlib only (selectors + sockets). Source addresses are spread over
127.0.0.2, 127.0.0.3, ... (--per-source sessions each) so one source address
never runs out of ephemeral ports; IP_BIND_ADDRESS_NO_PORT defers the port
choice to connect(), so bind() does not reserve a port per socket.
"""

import argparse
import errno
import selectors
import socket
import ssl
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


def split_reply(buf):
    """(code, text lines, rest) of the first complete reply in buf, or None.
    A reply ends at its first line "NNN <text>" ("NNN-" lines continue it)."""
    lines = []
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        line = line.rstrip(b"\r")
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return line[:3], [l[4:] for l in lines], buf
    return None


class Session:
    """One connection and where it stands: `expect` is the reply awaited
    next (banner, ehlo, starttls, tls-ehlo), or "handshake"."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.expect = "banner"


class Holder:
    """Opens sessions in waves (at most `wave` not yet idle at once, so the
    server's listen backlog never overflows) and keeps them open."""

    def __init__(self, host, port, per_source, wave, tls=None):
        self.target = (host, port)
        self.per_source = per_source
        self.wave = wave
        self.tls = tls  # an ssl.SSLContext with --starttls
        self.sel = selectors.DefaultSelector()
        self.pending = set()  # sessions not idle yet
        self.held = []  # sockets now idle (after the banner, or EHLO in TLS)
        self.rejected = 0  # a negative reply (e.g. 421 over capacity)
        self.failed = 0  # connect or TLS error, or closed before idle
        self.first_error = None

    def _fail(self, session, why):
        self.failed += 1
        if self.first_error is None:
            self.first_error = why
        self._forget(session)

    def _forget(self, session):
        self.sel.unregister(session.sock)
        self.pending.discard(session)
        session.sock.close()

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
        session = Session(sock)
        self.pending.add(session)
        self.sel.register(sock, selectors.EVENT_READ, session)

    def _on_ready(self, session):
        if session.expect == "handshake":
            return self._handshake(session)
        try:
            data = session.sock.recv(4096)
            while isinstance(session.sock, ssl.SSLSocket) and session.sock.pending():
                data += session.sock.recv(4096)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return  # TLS records without application data (a ticket)
        except OSError as e:
            return self._fail(session, f"recv: {e}")
        if not data:
            return self._fail(session, f"closed awaiting the {session.expect} reply")
        session.buf += data
        reply = split_reply(session.buf)
        if reply is None:
            return
        code, lines, session.buf = reply
        if not code.startswith(b"2"):
            self.rejected += 1
            if self.first_error is None:
                text = (code + b" " + b" ".join(lines)).decode(errors="replace")
                self.first_error = f"{session.expect}: {text}"
            return self._forget(session)
        self._advance(session, lines)

    def _advance(self, session, lines):
        """A positive reply to what `session.expect` names arrived."""
        step = session.expect
        if step == "tls-ehlo" or (step == "banner" and self.tls is None):
            return self._idle(session)
        if step == "banner":
            return self._send(session, b"EHLO idle.mxgate.test\r\n", "ehlo")
        if step == "ehlo":
            if not any(l.upper().split(b" ")[0] == b"STARTTLS" for l in lines):
                return self._fail(session, "STARTTLS not offered")
            return self._send(session, b"STARTTLS\r\n", "starttls")
        if session.buf:  # step == "starttls"
            return self._fail(session, "plain text behind the 220 to STARTTLS")
        self.sel.unregister(session.sock)
        session.sock = self.tls.wrap_socket(session.sock, do_handshake_on_connect=False)
        session.expect = "handshake"
        self.sel.register(session.sock, selectors.EVENT_WRITE, session)

    def _handshake(self, session):
        try:
            session.sock.do_handshake()
        except ssl.SSLWantReadError:
            return self.sel.modify(session.sock, selectors.EVENT_READ, session)
        except ssl.SSLWantWriteError:
            return self.sel.modify(session.sock, selectors.EVENT_WRITE, session)
        except OSError as e:
            return self._fail(session, f"TLS handshake: {e}")
        self.sel.modify(session.sock, selectors.EVENT_READ, session)
        self._send(session, b"EHLO idle.mxgate.test\r\n", "tls-ehlo")

    def _send(self, session, line, expect):
        # A short command into an empty socket buffer: it goes out whole.
        try:
            session.sock.sendall(line)
        except OSError as e:
            return self._fail(session, f"send: {e}")
        session.expect = expect

    def _idle(self, session):
        self.pending.discard(session)
        # Stay registered: readable from now on means dropped.
        self.held.append(session.sock)

    def open(self, sessions, deadline):
        started = 0
        while time.monotonic() < deadline:
            while started < sessions and len(self.pending) < self.wave:
                self._start(started)
                started += 1
            if started == sessions and not self.pending:
                return
            for key, _ in self.sel.select(timeout=0.5):
                if key.data in self.pending:
                    self._on_ready(key.data)
        for session in list(self.pending):
            self._fail(session, f"timed out awaiting the {session.expect} reply")

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
    ap.add_argument("--starttls", action="store_true",
                    help="hold each session idle inside TLS, after STARTTLS and EHLO")
    args = ap.parse_args()
    host, port = args.target.rsplit(":", 1)
    port = int(port)
    tls = None
    if args.starttls:
        # For load tests only: the server's test certificate is not checked.
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.minimum_version = ssl.TLSVersion.TLSv1_2

    # Warm-up: the first sessions may fault in code pages and per-worker
    # buffers; those are one-time costs, not per-session ones.
    warm = Holder(host, port, args.per_source, args.wave, tls)
    warm.open(args.warmup, time.monotonic() + 10)
    warm.close()
    time.sleep(args.settle)

    rss_before = proc_status_kib(args.pid, "VmRSS")
    anon_before = proc_status_kib(args.pid, "RssAnon")
    tcp_before = tcp_mem_pages()

    holder = Holder(host, port, args.per_source, args.wave, tls)
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
        f"failed={holder.failed} dropped={dropped} starttls={int(args.starttls)} "
        f"open_secs={open_secs:.1f} "
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
