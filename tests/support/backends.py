"""A recording backend for proxy tests: every request it receives is parsed by h11 (an independent
HTTP/1.1 implementation) and kept, so tests can assert exactly what crossed the proxy, or that
nothing did.

It runs in a thread with plain blocking sockets. Behaviour per request is chosen by the test through
`respond`: a function from the received request to raw response bytes (or None to close without an
answer); the default answers 200 with a small body naming the backend.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import h11


@dataclass
class Received:
    """One request as the backend saw it."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    connection: int = 0  # which backend connection carried it (counts reuse)

    def header(self, name: bytes) -> bytes | None:
        values = [v for n, v in self.headers if n == name.lower()]
        return b", ".join(values) if values else None


def ok_response(name: str) -> Callable[[Received], bytes | None]:
    def respond(req: Received) -> bytes:
        body = f"{name} {req.method.decode()} {req.target.decode()}\n".encode()
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s" % (len(body), name.encode(), body)
    return respond


@dataclass
class RecordingBackend:
    name: str = "rec"
    respond: Callable[[Received], bytes | None] | None = None
    requests: list[Received] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # every byte received, per connection
    connections: int = 0
    address: str = "127.0.0.1"  # any loopback address: several backends may then share one port
    bind_port: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.address, self.bind_port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                index = self.connections
                self.raw.append(b"")
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        respond = self.respond or ok_response(self.name)
        current: Received | None = None
        body: list[bytes] = []
        with conn:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        return
                    with self._lock:
                        self.raw[index - 1] += data
                    parser.receive_data(data)
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    current = Received(event.method, event.target, list(event.headers), connection=index)
                    body = []
                elif isinstance(event, h11.Data):
                    body.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage) and current is not None:
                    current.body = b"".join(body)
                    with self._lock:
                        self.requests.append(current)
                    answer = respond(current)
                    if answer is None:
                        return
                    conn.sendall(answer)
                    # the raw answer bypasses h11's state machine: start a fresh parser for the next request
                    leftover = parser.trailing_data[0]
                    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
                    if leftover:
                        parser.receive_data(leftover)
                    current = None
                elif isinstance(event, (h11.ConnectionClosed, h11.PAUSED)) or event is h11.PAUSED:
                    return

    def close(self) -> None:
        self._stop = True
        self.sock.close()
