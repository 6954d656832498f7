"""Websocket bots for bench/ws_gateway.py, on plain sockets (no websocket
library): cheap enough that the bots do not compete with the proxy for the
VM's two cores, and timed by the kernel, not by the bots' own Python.

    python wsraw.py bots  PORT SECONDS BOTS STREAMS_JSON PROBES
    python wsraw.py relay PORT XPORT OUT_JSON
    python wsraw.py idle  PORT SECONDS BOTS
    python wsraw.py forward PORT UPSTREAM_PORT STREAMS_JSON

- ``bots``: BOTS bots through the proxy (``/ws``), each subscribing STREAMS
  with one ``SUBSCRIBE`` (raw framing, as ccxt's bots do): all in one of the
  gateway's cohorts. PROBES of them, spread evenly over the connection order
  (the gateway's fan-out writes a cohort's bots one after another: a probe
  opened after all the others, or before, would see only one end of it),
  have ``SO_TIMESTAMPNS``: every ``recvmsg`` carries the kernel's receive
  time of its data, so a frame's arrival is when the kernel got it, whenever
  this process gets to read it (on loopback the receive time is the
  sender's ``send``). The others read and discard (one ``recv`` per readable
  socket). Prints ``{"opened": n}`` once every bot is open; 2 s later
  (every subscription acknowledged and flowing) the probes note each data
  frame's digest, kernel receive time and user-space time (``time.time()``
  after ``recvmsg``, to show what a reading client adds) for SECONDS, then
  print them (``{"seen": [...]}``).
- ``relay``: a plain TCP relay in front of the fake exchange that notes when
  each data frame leaves it for the proxy (see ``relay``).
- ``idle``: BOTS bots that connect and subscribe nothing; prints once all are
  open, then holds them SECONDS.
- ``forward``: the floor for ``ws_gateway.py --floor``, in the proxy's place:
  a minimal fan-out forwarder on plain sockets, no framework. One combined
  connection upstream for STREAMS; each bot that connects gets a 101 and,
  for every read from upstream, one ``send`` of that read's messages in raw
  framing (each message's data, Binance's bytes, as the gateway sends a raw
  bot). What bots send is read and ignored. No limits, no checks, no
  bookkeeping: what one Python process on this machine needs at least to
  carry a frame from upstream to the bots.

Server pings are not answered: runs are shorter than the proxy's pong
deadline (60 s spot).
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time

from bnproxy.testing.rawws import upgrade

SCM_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def masked(payload: bytes, opcode: int = 1) -> bytes:
    """A client's frame (clients mask)."""
    key = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + body


def connect(port: int, path: str, timestamps: bool = False) -> tuple[socket.socket, bytes]:
    """An open websocket (blocking handshake); the bytes read past the
    handshake."""
    options = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
               *(((socket.SOL_SOCKET, SCM_TIMESTAMPNS, 1),) if timestamps else ()))
    s, head, rest = upgrade(port, path, options=options)
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head[:200])
    s.setblocking(False)
    return s, rest


def subscribe(s: socket.socket, names: list[str]) -> None:
    s.setblocking(True)
    s.sendall(masked(json.dumps({"method": "SUBSCRIBE", "params": names, "id": 1}).encode()))
    s.setblocking(False)


class Frames:
    """Splits one connection's bytes into (opcode, payload) frames."""

    __slots__ = ("buf",)

    def __init__(self, data: bytes = b"") -> None:
        self.buf = data

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.buf + data
        out = []
        i, n = 0, len(buf)
        while n - i >= 2:
            b1 = buf[i + 1] & 0x7F
            at = i + 2
            if b1 == 126:
                if n - at < 2:
                    break
                b1 = struct.unpack_from("!H", buf, at)[0]
                at += 2
            elif b1 == 127:
                if n - at < 8:
                    break
                b1 = struct.unpack_from("!Q", buf, at)[0]
                at += 8
            if n - at < b1:
                break
            out.append((buf[i] & 0x0F, buf[at:at + b1]))
            i = at + b1
        self.buf = buf[i:]
        return out


def kernel_time(ancdata) -> float | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec * 1e-9
    return None


def probed(bots: int, probes: int) -> set[int]:
    """Which of ``bots`` (by connection order) are probes: ``probes`` of them,
    evenly spread (the middle of each of ``probes`` equal slices)."""
    return {int((k + 0.5) * bots / probes) for k in range(min(probes, bots))}


def run_bots(port: int, seconds: float, bots: int, names: list[str], probes: int) -> None:
    sel = selectors.DefaultSelector()
    timed = probed(bots, probes)
    parsers: dict[socket.socket, Frames] = {}
    for i in range(bots):
        s, rest = connect(port, "/ws", timestamps=i in timed)
        subscribe(s, [names[(i + j) % len(names)] for j in range(len(names))])
        sel.register(s, selectors.EVENT_READ)
        if i in timed:
            parsers[s] = Frames(rest)
    print(json.dumps({"opened": bots}), flush=True)
    seen: list[tuple[str, float, float]] = []  # digest, kernel, user
    received = closed = 0
    # One buffer for every read: ``recv(1 << 20)`` allocates (and the
    # allocator maps and unmaps) a megabyte a call, CPU the bots would take
    # from the proxy on a small machine.
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    warm = time.monotonic() + 2.0
    end = warm + seconds
    while time.monotonic() < end:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            frames = parsers.get(s)
            try:
                if frames is None:
                    n = s.recv_into(buf)
                else:
                    n, anc, _, _ = s.recvmsg_into([buf], 64)
            except BlockingIOError:
                continue
            if not n:
                sel.unregister(s)
                closed += 1
                continue
            received += n
            if frames is None:
                continue
            user = time.time()
            kernel = kernel_time(anc) or user
            for opcode, payload in frames.feed(bytes(view[:n])):
                if opcode == 1 and time.monotonic() >= warm:
                    seen.append((digest(payload), kernel, user))
    print(json.dumps({"seen": seen, "bytes": received, "closed": closed}), flush=True)


def digest(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=8).hexdigest()


def relay(port: int, xport: int, out: str) -> None:
    """A transparent TCP relay in front of the fake exchange's streams: the
    proxy's upstream connections go through it. For each data frame from
    the fake, the time just before the relay's ``send`` of it to the proxy
    (first occurrence) is written to ``out`` at SIGTERM: the moment the
    frame left upstream."""
    sent: dict[str, float] = {}

    def dump(*_):
        with open(out, "w") as f:
            json.dump(sent, f)
        sys.exit(0)
    signal.signal(signal.SIGTERM, dump)
    listener = socket.create_server(("127.0.0.1", port))
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    peers: dict[socket.socket, socket.socket] = {}
    parsers: dict[socket.socket, list] = {}  # fake side -> [handshake done, Frames]
    print(json.dumps({"listening": port}), flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is listener:
                proxy_side, _ = listener.accept()
                fake_side = socket.create_connection(("127.0.0.1", xport))
                for a in (proxy_side, fake_side):
                    a.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                peers[proxy_side], peers[fake_side] = fake_side, proxy_side
                parsers[fake_side] = [False, Frames()]
                sel.register(proxy_side, selectors.EVENT_READ)
                sel.register(fake_side, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(1 << 20)
            except OSError:
                data = b""
            other = peers.get(s)
            if not data or other is None:
                for a in (s, other):
                    if a is not None and a in peers:
                        sel.unregister(a)
                        a.close()
                        peers.pop(a, None)
                        parsers.pop(a, None)
                continue
            t = time.time()
            other.sendall(data)
            state = parsers.get(s)
            if state is None:
                continue  # the proxy's direction: control messages
            if not state[0]:
                state[1].buf += data
                if b"\r\n\r\n" not in state[1].buf:
                    continue
                state[0] = True
                data = state[1].buf.partition(b"\r\n\r\n")[2]
                state[1].buf = b""
            for opcode, payload in state[1].feed(data):
                if opcode == 1 and payload.startswith(b'{"stream"'):
                    at = payload.find(b'","data":')
                    if at > 0:  # a raw (/ws) bot receives the data, Binance's bytes
                        sent.setdefault(digest(payload[at + 9:-1]), t)


def server_frame(payload: bytes) -> bytes:
    """A server's (unmasked) final text frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + struct.pack("!H", n) + payload
    return b"\x81\x7f" + struct.pack("!Q", n) + payload


def forward(port: int, upstream_port: int, names: list[str]) -> None:
    """The minimal fan-out forwarder (``forward`` in the module docstring)."""
    import base64

    up, rest = connect(upstream_port, "/spot/stream?streams=" + "/".join(names))
    frames = Frames(rest)
    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    sel.register(up, selectors.EVENT_READ)
    bots: list[socket.socket] = []
    handshakes: dict[socket.socket, bytes] = {}
    magic = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    print(json.dumps({"listening": port}), flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is listener:
                try:
                    c, _ = listener.accept()
                except BlockingIOError:
                    continue
                c.setblocking(False)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                handshakes[c] = b""
                sel.register(c, selectors.EVENT_READ)
            elif s is up:
                data = up.recv(1 << 20)
                if not data:
                    return
                out = []
                for opcode, payload in frames.feed(data):
                    at = payload.find(b'","data":') if opcode == 1 else -1
                    if at > 0:
                        out.append(server_frame(payload[at + 9:-1]))
                if not out:
                    continue
                blob = b"".join(out)
                for b in bots:
                    try:
                        sent = b.send(blob)
                    except BlockingIOError:  # its buffer is full: the whole batch waits
                        sent = 0
                    except OSError:  # gone: its end is read below
                        continue
                    if sent < len(blob):  # rare here: finish it blocking
                        b.setblocking(True)
                        b.sendall(blob[sent:])
                        b.setblocking(False)
            else:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    handshakes.pop(s, None)
                    if s in bots:
                        bots.remove(s)
                    s.close()
                    continue
                if s not in handshakes:
                    continue  # a bot's SUBSCRIBE: everything is forwarded anyway
                head = handshakes[s] + data
                if b"\r\n\r\n" not in head:
                    handshakes[s] = head
                    continue
                del handshakes[s]
                client_key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                              if line.lower().startswith(b"sec-websocket-key:")][0]
                accept = base64.b64encode(hashlib.sha1(client_key + magic).digest())
                s.setblocking(True)
                s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                          b"\r\n\r\n")
                s.setblocking(False)
                bots.append(s)


def idle(port: int, seconds: float, bots: int) -> None:
    held = []
    failed = 0
    for _ in range(bots):
        try:
            held.append(connect(port, "/ws")[0])
        except (OSError, ConnectionError):
            failed += 1
    print(json.dumps({"opened": len(held), "failed": failed}), flush=True)
    time.sleep(seconds)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "bots":
        run_bots(int(args[0]), float(args[1]), int(args[2]), json.loads(args[3]), int(args[4]))
    elif mode == "relay":
        relay(int(args[0]), int(args[1]), args[2])
    elif mode == "forward":
        forward(int(args[0]), int(args[1]), json.loads(args[2]))
    else:
        idle(int(args[0]), float(args[1]), int(args[2]))
