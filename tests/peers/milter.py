#!/usr/bin/env python3
"""A scripted milter: the filter side of the milter protocol, version 6.

Used by the tests (started as a subprocess by tests/support/milters.rs) and
by the benchmarks (benches/scripts/milter.sh), so one program plays every
milter they need: a polite one, a slow one, a broken one. It owns the
protocol's server side and its script only; it decides nothing about mail.

Protocol (Sendmail's libmilter, version 6): every packet is a 4-octet
big-endian length, then that many octets: a command octet and its data.
The MTA opens with SMFIC_OPTNEG (version, actions, protocol steps); we
answer with the actions we may take and the steps we decline. Then, per
SMTP session: connect, HELO, MAIL, RCPT..., DATA, each header, end of
headers, body chunks, end of message; each preceded by the macros of its
stage (SMFIC_MACRO, never answered). SMFIC_ABORT ends a message,
SMFIC_QUIT the connection, SMFIC_QUIT_NC a session on a connection that
will carry another.

The script, one `--on` per rule:

    --on STAGE[/TEXT]=ACTION[;ACTION]...

STAGE is connect, helo, mail, rcpt, data, header, eoh, body, eom or
unknown. With /TEXT the rule applies only when the stage's data contains
TEXT (for eom: the message as the milter saw it, headers then body). The
first rule that applies wins; a stage with none answers `continue`. The
actions run in order; one that ends the stage's answer (accept, continue,
reject, tempfail, discard, skip, replycode, close, hang) ends the list, and
a list without one gets `continue` appended.

    accept continue reject tempfail discard skip progress
    replycode:CODE X.Y.Z TEXT     SMFIR_REPLYCODE
    quarantine:REASON             SMFIR_QUARANTINE
    addheader:NAME:VALUE          SMFIR_ADDHEADER
    insheader:INDEX:NAME:VALUE    SMFIR_INSHEADER
    chgheader:INDEX:NAME:VALUE    SMFIR_CHGHEADER (empty VALUE deletes)
    chgfrom:ADDR  addrcpt:ADDR  delrcpt:ADDR  replbody:TEXT
    sleep:SECS                    answer late (the connection stays served)
    close                         close the connection without an answer
    hang                          never answer; wait for the MTA to go
    garbage                       a well-framed packet with an unknown command
    raw:TEXT                      TEXT as is, no framing (\\r \\n \\t \\\\ escapes)
    oversized[:N]                 a packet declaring N octets (default 16 MiB), sent whole

Nothing checks that a modification was negotiated: a test that wants a
milter asking for what it did not negotiate says `--actions none` and
`addheader:...` anyway.

--actions and --protocol name the SMFIF_ actions we claim and the SMFIP_
steps we ask for (comma-separated names as below, a number, or `none`);
the steps are masked by what the MTA offered, as libmilter does. An
SMFIP_NR_* step (no reply) silences that stage's answer.

--quit-nc ignore answers nothing after SMFIC_QUIT_NC, as clamav-milter
1.4.6 (libmilter) was found to do: a client that reuses connections must
not wait on it forever. The default serves the next session.

--log FILE writes one line per packet received, tab-separated:
`CONN.SESSION STAGE KEY=VALUE...`, values escaped (\\t \\r \\n \\\\ \\xNN),
flushed per line. Stages logged: optneg, macros (for=the command octet),
connect, helo, mail, rcpt, data, header, eoh, body, eom, unknown, abort,
quit, quit_nc, and bad (a packet we could not read, then close).

It prints `milter listening on inet:HOST:PORT` (or `unix:PATH`) on stdout
once it listens, and on SIGTERM/SIGINT a summary on stderr: connections,
messages (eom packets), the most answers held back by sleep at once.
"""

import argparse
import asyncio
import os
import resource
import signal
import struct
import sys

VERSION = 6
# The largest packet we read: SMFIP_MDS_1M's limit, with room for the header.
MAX_PACKET = 1024 * 1024 + 64

ACTION_FLAGS = {
    "addhdrs": 0x01, "chgbody": 0x02, "addrcpt": 0x04, "delrcpt": 0x08,
    "chghdrs": 0x10, "quarantine": 0x20, "chgfrom": 0x40,
    "addrcpt_par": 0x80, "setsymlist": 0x100,
}
STEP_FLAGS = {
    "noconnect": 0x01, "nohelo": 0x02, "nomail": 0x04, "norcpt": 0x08,
    "nobody": 0x10, "nohdrs": 0x20, "noeoh": 0x40, "nr_hdr": 0x80,
    "nounknown": 0x100, "nodata": 0x200, "skip": 0x400, "rcpt_rej": 0x800,
    "nr_conn": 0x1000, "nr_helo": 0x2000, "nr_mail": 0x4000,
    "nr_rcpt": 0x8000, "nr_data": 0x10000, "nr_unkn": 0x20000,
    "nr_eoh": 0x40000, "nr_body": 0x80000, "hdr_leadspc": 0x100000,
}
# Command octet -> stage name, for the commands that get an answer.
STAGES = {
    b"C": "connect", b"H": "helo", b"M": "mail", b"R": "rcpt", b"T": "data",
    b"L": "header", b"N": "eoh", b"B": "body", b"E": "eom", b"U": "unknown",
}
NO_REPLY_STEP = {
    "connect": "nr_conn", "helo": "nr_helo", "mail": "nr_mail",
    "rcpt": "nr_rcpt", "data": "nr_data", "header": "nr_hdr",
    "eoh": "nr_eoh", "body": "nr_body", "unknown": "nr_unkn",
}
# Actions that are one reply octet and end the answer.
SIMPLE_FINAL = {
    "accept": b"a", "continue": b"c", "reject": b"r", "tempfail": b"t",
    "discard": b"d", "skip": b"s",
}
FINAL = set(SIMPLE_FINAL) | {"replycode", "close", "hang"}


def flags(text, table):
    """A flag word from `a,b,c`, a number, or `none`."""
    if text == "none":
        return 0
    try:
        return int(text, 0)
    except ValueError:
        pass
    word = 0
    for name in text.split(","):
        if name not in table:
            raise argparse.ArgumentTypeError(f"unknown flag {name!r}; known: {', '.join(table)}")
        word |= table[name]
    return word


def unescape(text):
    """`\\r`, `\\n`, `\\t` and `\\\\` in a script argument."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append({"r": "\r", "n": "\n", "t": "\t", "\\": "\\"}.get(text[i + 1], text[i : i + 2]))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out).encode("latin-1")


def parse_action(text):
    name, _, arg = text.partition(":")
    known = FINAL | {"progress", "quarantine", "addheader", "insheader", "chgheader", "chgfrom",
                     "addrcpt", "delrcpt", "replbody", "sleep", "garbage", "raw", "oversized"}
    if name not in known:
        raise argparse.ArgumentTypeError(f"unknown action {name!r}")
    if name in ("insheader", "chgheader") and (arg.count(":") < 2 or not arg.split(":")[0].isdigit()):
        raise argparse.ArgumentTypeError(f"{name} needs INDEX:NAME:VALUE, not {arg!r}")
    if name == "addheader" and ":" not in arg:
        raise argparse.ArgumentTypeError(f"addheader needs NAME:VALUE, not {arg!r}")
    if name == "sleep":
        float(arg)
    return (name, arg)


def parse_rule(text):
    """`STAGE[/TEXT]=ACTIONS` -> (stage, match bytes or None, [actions])."""
    head, sep, actions = text.partition("=")
    stage, _, match = head.partition("/")
    if not sep or stage not in STAGES.values():
        raise argparse.ArgumentTypeError(f"a rule is STAGE[/TEXT]=ACTIONS with STAGE one of "
                                         f"{', '.join(STAGES.values())}: {text!r}")
    steps = [parse_action(a) for a in actions.split(";") if a]
    if not any(name in FINAL for name, _ in steps):
        steps.append(("continue", ""))
    return (stage, match.encode("latin-1") if match else None, steps)


def escape(value):
    if isinstance(value, str):
        value = value.encode("latin-1", "replace")
    out = []
    for b in value:
        c = chr(b)
        if c == "\\":
            out.append("\\\\")
        elif c in "\t\r\n":
            out.append({"\t": "\\t", "\r": "\\r", "\n": "\\n"}[c])
        elif b < 0x20 or b >= 0x7F:
            out.append(f"\\x{b:02x}")
        else:
            out.append(c)
    return "".join(out)


def cstrings(data):
    """The NUL-terminated strings of a packet's data."""
    parts = data.split(b"\0")
    return parts[:-1] if parts and parts[-1] == b"" else parts


def describe(stage, data):
    """A stage's data as (key, value) pairs for the log."""
    if stage == "connect":
        host, _, rest = data.partition(b"\0")
        fields = [("host", host), ("family", rest[:1])]
        if rest[:1] in (b"4", b"6") and len(rest) >= 3:
            fields += [("port", str(struct.unpack(">H", rest[1:3])[0])), ("addr", rest[3:].rstrip(b"\0"))]
        elif rest[:1] == b"L":
            fields.append(("addr", rest[3:].rstrip(b"\0")))
        return fields
    if stage in ("mail", "rcpt"):
        args = cstrings(data)
        return [("addr", args[0] if args else b"")] + [("arg", a) for a in args[1:]]
    if stage == "header":
        parts = cstrings(data) + [b"", b""]
        return [("name", parts[0]), ("value", parts[1])]
    if stage in ("helo", "unknown"):
        return [("text", data.rstrip(b"\0"))]
    if stage in ("body", "eom"):
        return [("size", str(len(data))), ("data", data)]
    return []


class Milter:
    def __init__(self, args):
        self.rules = args.on
        self.actions = args.actions
        self.steps = args.protocol
        self.quit_nc = args.quit_nc
        self.log_file = open(args.log, "a", encoding="ascii") if args.log else None
        self.connections = 0
        self.messages = 0
        self.held = 0
        self.held_peak = 0

    def log(self, who, stage, fields=()):
        if self.log_file:
            line = "\t".join([who, stage] + [f"{k}={escape(v)}" for k, v in fields])
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def script_for(self, stage, data):
        for rule_stage, match, steps in self.rules:
            if rule_stage == stage and (match is None or match in data):
                return steps
        return [("continue", "")]

    async def serve(self, reader, writer):
        self.connections += 1
        conn = Connection(self, reader, writer, self.connections)
        try:
            await conn.run()
        except (ConnectionError, asyncio.IncompleteReadError):
            conn.log("closed", [("by", "mta")])
        finally:
            writer.close()


class Connection:
    """One MTA connection: negotiation, then sessions until QUIT."""

    def __init__(self, milter, reader, writer, number):
        self.milter = milter
        self.reader = reader
        self.writer = writer
        self.number = number
        self.session = 1
        self.steps = 0  # negotiated SMFIP_ steps
        self.message = bytearray()  # headers and body of the message so far

    def log(self, stage, fields=()):
        self.milter.log(f"{self.number}.{self.session}", stage, fields)

    def send(self, command, data=b""):
        self.writer.write(struct.pack(">I", len(command) + len(data)) + command + data)

    async def read_packet(self):
        """(command, data); None at the end of the stream or a packet we refuse."""
        head = await self.reader.read(4)
        if not head:
            self.log("closed", [("by", "mta")])
            return None
        if len(head) < 4:
            head += await self.reader.readexactly(4 - len(head))
        (length,) = struct.unpack(">I", head)
        if length == 0 or length > MAX_PACKET:
            self.log("bad", [("length", str(length))])
            return None
        body = await self.reader.readexactly(length)
        return (body[:1], body[1:])

    async def run(self):
        while True:
            packet = await self.read_packet()
            if packet is None or not await self.handle(*packet):
                return

    async def handle(self, command, data):
        """Answers one packet; False when the connection is to end."""
        if command == b"O":
            return self.negotiate(data)
        if command == b"D":
            pairs = cstrings(data[1:])
            named = [(k.decode("latin-1"), v) for k, v in zip(pairs[0::2], pairs[1::2])]
            self.log("macros", [("for", data[:1])] + named)
            return True
        if command == b"A":
            self.log("abort")
            self.message.clear()
            return True
        if command == b"Q":
            self.log("quit")
            return False
        if command == b"K":
            self.log("quit_nc")
            self.session += 1
            self.message.clear()
            if self.milter.quit_nc == "ignore":
                await self.reader.read()  # silent until the MTA gives up, as clamav-milter is
                return False
            return True
        stage = STAGES.get(command)
        if stage is None:
            self.log("bad", [("command", command)])
            return False
        self.log(stage, describe(stage, data))
        return await self.answer(stage, self.collect(stage, data))

    def negotiate(self, data):
        if len(data) < 12:
            self.log("bad", [("optneg", data)])
            return False
        version, actions, steps = struct.unpack(">III", data[:12])
        self.log("optneg", [("version", str(version)), ("actions", hex(actions)), ("steps", hex(steps))])
        self.steps = self.milter.steps & steps
        self.send(b"O", struct.pack(">III", VERSION, self.milter.actions, self.steps))
        return True

    def collect(self, stage, data):
        """What a rule for `stage` is matched against."""
        if stage == "header":
            name, value = (cstrings(data) + [b"", b""])[:2]
            self.message += name + b": " + value + b"\r\n"
        elif stage == "eoh":
            self.message += b"\r\n"
        elif stage == "body":
            self.message += data
        elif stage == "eom":
            self.message += data
            self.milter.messages += 1
            whole = bytes(self.message)
            self.message.clear()
            return whole
        return data

    async def answer(self, stage, data):
        step = NO_REPLY_STEP.get(stage)
        if step and self.steps & STEP_FLAGS[step]:
            return True
        for name, arg in self.milter.script_for(stage, data):
            if name == "sleep":
                await self.hold(float(arg))
            elif name == "close":
                self.log("action", [("close", stage)])
                return False
            elif name == "hang":
                self.log("action", [("hang", stage)])
                await self.reader.read()  # until the MTA gives up
                return False
            else:
                self.send_action(name, arg)
                await self.writer.drain()
        return True

    async def hold(self, seconds):
        self.milter.held += 1
        self.milter.held_peak = max(self.milter.held_peak, self.milter.held)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.milter.held -= 1

    def send_action(self, name, arg):
        if name in SIMPLE_FINAL:
            self.send(SIMPLE_FINAL[name])
        elif name == "progress":
            self.send(b"p")
        elif name == "replycode":
            self.send(b"y", arg.encode() + b"\0")
        elif name == "quarantine":
            self.send(b"q", arg.encode() + b"\0")
        elif name == "addheader":
            header, _, value = arg.partition(":")
            self.send(b"h", header.encode() + b"\0" + value.encode() + b"\0")
        elif name in ("insheader", "chgheader"):
            index, header, value = arg.split(":", 2)
            command = b"i" if name == "insheader" else b"m"
            self.send(command, struct.pack(">I", int(index)) + header.encode() + b"\0" + value.encode() + b"\0")
        elif name in ("chgfrom", "addrcpt", "delrcpt"):
            self.send({"chgfrom": b"e", "addrcpt": b"+", "delrcpt": b"-"}[name], arg.encode() + b"\0")
        elif name == "replbody":
            self.send(b"b", unescape(arg))
        elif name == "garbage":
            self.send(b"Z", b"not a milter reply")
        elif name == "raw":
            self.writer.write(unescape(arg))
        elif name == "oversized":
            size = int(arg) if arg else 16 * 1024 * 1024
            self.writer.write(struct.pack(">I", size) + b"h" + b"x" * (size - 1))


def listen_address(text):
    if text.startswith("unix:"):
        return ("unix", text[5:])
    address = text[5:] if text.startswith("inet:") else text
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants inet:HOST:PORT or unix:PATH, not {text!r}")
    return ("inet", (host, int(port)))


async def main(args):
    milter = Milter(args)
    kind, where = args.listen
    # Many MTA connections at once (the benchmark holds 2,000): every descriptor the hard limit allows.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if kind == "unix":
        if os.path.exists(where):
            os.unlink(where)
        server = await asyncio.start_unix_server(milter.serve, path=where, backlog=4096)
        shown = f"unix:{where}"
    else:
        server = await asyncio.start_server(milter.serve, host=where[0], port=where[1], backlog=4096)
        host, port = server.sockets[0].getsockname()[:2]
        shown = f"inet:{host}:{port}"
    print(f"milter listening on {shown}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"milter: {milter.connections} connections, {milter.messages} messages, "
          f"at most {milter.held_peak} answers held at once", file=sys.stderr, flush=True)


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=listen_address, default=listen_address("inet:127.0.0.1:0"),
                        help="inet:HOST:PORT (port 0: any free one) or unix:PATH")
    parser.add_argument("--actions", type=lambda t: flags(t, ACTION_FLAGS),
                        default=flags("addhdrs,chghdrs,quarantine", ACTION_FLAGS),
                        help=f"SMFIF_ actions claimed: {','.join(ACTION_FLAGS)}, a number, or none")
    parser.add_argument("--protocol", type=lambda t: flags(t, STEP_FLAGS), default=0,
                        help=f"SMFIP_ steps asked for: {','.join(STEP_FLAGS)}, a number, or none")
    parser.add_argument("--on", type=parse_rule, action="append", default=[],
                        help="STAGE[/TEXT]=ACTION[;ACTION]... (see the module text)")
    parser.add_argument("--quit-nc", choices=["serve", "ignore"], default="serve",
                        help="after SMFIC_QUIT_NC: serve the next session on the connection, or "
                        "never answer again (what clamav-milter 1.4 does)")
    parser.add_argument("--log", help="append one line per packet received to this file")
    return parser.parse_args()


if __name__ == "__main__":
    try:
        asyncio.run(main(arguments()))
    except OSError as error:
        sys.exit(f"milter: {error}")
