"""Listeners: the supervisor's listening sockets, bound once per index and closed when no longer wanted."""

from __future__ import annotations

import os
import socket

import pytest

from fastingress.supervisor.listeners import Listeners, bind_reuseport


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_each_index_binds_once_and_shares_the_port() -> None:
    http, https = _port(), _port()
    listeners = Listeners("127.0.0.1", http, https)
    try:
        first = listeners.fds(0)
        assert listeners.fds(0) == first  # a replacement gets the same sockets
        second = listeners.fds(1)
        assert len(first) == len(second) == 2 and not set(first) & set(second)
        ports = [socket.socket(fileno=os.dup(fd)) for fd in first + second]
        assert [s.getsockname()[1] for s in ports] == [http, https, http, https]
        for s in ports:
            s.close()
        assert listeners.indices == {0, 1}
    finally:
        listeners.close()
    assert listeners.indices == frozenset()


def test_retain_closes_the_sockets_of_indices_not_wanted() -> None:
    listeners = Listeners("127.0.0.1", _port(), None)
    kept, dropped = listeners.fds(0), listeners.fds(1)
    listeners.retain({0})
    assert listeners.indices == {0}
    os.fstat(kept[0])  # still open
    with pytest.raises(OSError):
        os.fstat(dropped[0])
    listeners.close()


def test_a_taken_port_names_address_and_port() -> None:
    with socket.socket() as taken:  # no SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{port}: Address already in use"):
            bind_reuseport("127.0.0.1", port)
        listeners = Listeners("127.0.0.1", _port(), port)
        with pytest.raises(OSError):
            listeners.fds(0)
        assert listeners.indices == frozenset()  # the HTTP socket bound first was closed again
