"""The listening sockets: owned by the supervisor, one SO_REUSEPORT set per listener index, inherited
by the workers.

Why the supervisor owns them (nginx's master does the same): closing a listening socket resets every
connection still in its accept queue, and the final ACK of a handshake that arrives afterwards gets
a RST too (unless the host set `net.ipv4.tcp_migrate_req`). If each worker bound its own socket, every
rolling restart and every crash would close one. Here a replacement worker inherits the socket of
the worker it replaces (`subprocess` `pass_fds`); during the overlap both accept from it, and when
the old one drains it only closes its own descriptor: the socket, its queue and its place in the
kernel's reuseport group stay. A crashed worker's queue waits for its replacement instead of being
reset.

The supervisor binds but never listens or accepts: a worker's `listen()` puts the socket into the
reuseport group once that worker is about to serve, so a listener no worker ever served gets no
connection. A socket is closed only when its index is no longer wanted (scaling down, stopping):
then the queue of whichever worker still holds it drains with that worker.
"""

from __future__ import annotations

import socket


def bind_reuseport(address: str, port: int) -> socket.socket:
    """A bound (not listening) TCP socket on (address, port) that shares the port with SO_REUSEPORT."""
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        raise OSError(exc.errno, f"cannot bind {where}: {exc.strerror}") from exc
    return sock


class Listeners:
    """Per listener index: the HTTP socket and, when `https_port` is set, the HTTPS one."""

    def __init__(self, address: str, http_port: int, https_port: int | None) -> None:
        self._address = address
        self._ports = (http_port,) if https_port is None else (http_port, https_port)
        self._sockets: dict[int, tuple[socket.socket, ...]] = {}

    def fds(self, index: int) -> tuple[int, ...]:
        """The file descriptors of listener `index` (HTTP first), bound on first use; OSError when a bind fails."""
        socks = self._sockets.get(index)
        if socks is None:
            opened: list[socket.socket] = []
            try:
                for port in self._ports:
                    opened.append(bind_reuseport(self._address, port))
            except OSError:
                for sock in opened:
                    sock.close()
                raise
            socks = self._sockets[index] = tuple(opened)
        return tuple(sock.fileno() for sock in socks)

    def retain(self, indices: set[int]) -> None:
        """Close the sockets of every index not in `indices` (workers holding them keep their copies)."""
        for index in [i for i in self._sockets if i not in indices]:
            for sock in self._sockets.pop(index):
                sock.close()

    def close(self) -> None:
        self.retain(set())

    @property
    def indices(self) -> frozenset[int]:
        return frozenset(self._sockets)
