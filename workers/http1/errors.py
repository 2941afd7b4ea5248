"""Protocol errors of the HTTP/1.1 cores, each carrying the status the proxy should answer with."""

from __future__ import annotations


class ProtocolError(Exception):
    """Base: the connection cannot continue; `status_hint` is what to answer (0: just close)."""

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class RemoteProtocolError(ProtocolError):
    """The peer sent something we refuse (malformed, over a limit, unsupported)."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol state does not allow: a bug in the proxy."""
