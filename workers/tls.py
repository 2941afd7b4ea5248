"""TLS termination for one worker: SSLContexts by certificate fingerprint, the SNI callback, handshake counts.

Theory of operation: the supervisor writes each certificate of the table as `<fingerprint>.pem`
(chain, then key; mode 0600) into a private directory (`--keys`) before it publishes the table that
names it, plus `self-signed.pem`, the fallback default. A worker builds an `SSLContext` per
fingerprint on first use and keeps it across table swaps (a certificate that did not change is
never reloaded). Every handshake starts on the fallback context; the SNI callback looks the server
name up in the current table (exact, then `*.parent`; a per-generation dict makes repeats one
lookup), else takes the table's default certificate, and switches the connection's context. It does
that and nothing else: no file or network I/O after the first use of a certificate.

The listener wraps each accepted connection in uvloop's own `SSLProtocol` (exactly what
`create_server(ssl=...)` does internally) so that the handshake outcome reaches `on_handshake`:
uvloop reports failed handshakes to nobody (they are OSErrors, logged only in debug mode), and
operators need them counted by reason.

Session resumption: all contexts of a worker share the fallback context's session cache and ticket
keys (OpenSSL keeps the SSL object's original context for sessions when SNI switches it). A client
that reconnects usually lands on another worker (SO_REUSEPORT hashes the new source port), so the
workers share one set of ticket keys, `ticket.key` in the key directory (80 random bytes made by the
supervisor at start, as nginx's master makes them before it forks): any worker resumes any
worker's ticket. Python's `ssl` has no API for ticket keys, so `share_ticket_keys` calls OpenSSL's
`SSL_CTX_ctrl` through ctypes on the context's `SSL_CTX` (CPython's `PySSLContext` starts with
that pointer) and reads the keys back to check; where that is not possible each worker keeps its
own keys and resumption works per worker only (logged).
"""

from __future__ import annotations

import _ssl
import asyncio
import ctypes
import functools
import logging
import os
import ssl
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvloop.loop

from fastingress.table import stats as st

if TYPE_CHECKING:
    from workers.proxy.context import WorkerContext

log = logging.getLogger(__name__)

SELF_SIGNED = "self-signed.pem"
TICKET_KEYS = "ticket.key"  # the supervisor's keystore writes it (fastingress/supervisor/keystore.py)
TICKET_KEYS_LEN = 80  # OpenSSL 1.1+/3.x: key name 16, HMAC secret 32, AES key 32
_SSL_CTRL_GET_TLSEXT_TICKET_KEYS = 58
_SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
# TLS 1.2 suites with forward secrecy and AEAD only (Mozilla "intermediate"); TLS 1.3 suites are all modern
TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
                "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
ALPN = ["http/1.1"]
NAME_CACHE_MAX = 8192  # server names remembered per routes generation (random SNI cannot grow memory)
SHUTDOWN_TIMEOUT_S = 5.0
# handshake-failure counters, by the reason names /metrics shows
FAIL_TIMEOUT, FAIL_PROTOCOL, FAIL_ABORTED, FAIL_OTHER = (
    st.TLS_FAIL_BASE + st.TLS_FAIL_REASONS.index(r) for r in ("timeout", "protocol", "aborted", "other"))
# uvloop's own TLS protocol (public in uvloop.loop, untyped in its stubs)
_SSLProtocol: Callable[..., asyncio.BaseProtocol] = getattr(uvloop.loop, "SSLProtocol")  # noqa: B009


class DirectSSLObject(ssl.SSLObject):
    """An SSLObject whose read/write/pending/do_handshake are the C methods of `_ssl` themselves.

    `ssl.SSLObject`'s methods are Python functions that only forward to `self._sslobj`; uvloop calls
    them several times per TLS record (pending twice and read on every read, write on every write),
    so each request paid for about five Python frames doing nothing. Instance attributes shadow the
    class's methods, and uvloop binds them once per connection.
    """

    @classmethod
    def _create(cls, *args: Any, **kwargs: Any) -> DirectSSLObject:
        self: DirectSSLObject = super()._create(*args, **kwargs)  # type: ignore[misc]
        c = self._sslobj  # type: ignore[attr-defined]
        self.read = c.read  # type: ignore[method-assign]
        self.write = c.write  # type: ignore[method-assign]
        self.pending = c.pending  # type: ignore[method-assign]
        self.do_handshake = c.do_handshake  # type: ignore[method-assign]
        return self


def server_context(pem_path: str) -> ssl.SSLContext:
    """A server context for one certificate file: TLS 1.2-1.3, modern suites, ALPN http/1.1."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols(ALPN)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(pem_path)
    ctx.sslobject_class = DirectSSLObject
    return ctx


def _ssl_ctx_ctrl() -> Any:
    """OpenSSL's SSL_CTX_ctrl from the libssl the `ssl` module is linked with (dlsym searches its dependencies)."""
    lib = ctypes.CDLL(_ssl.__file__)
    ctrl = lib.SSL_CTX_ctrl
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    ctrl.restype = ctypes.c_long
    return ctrl


def share_ticket_keys(ctx: ssl.SSLContext, keys: bytes) -> bool:
    """Make `ctx` encrypt and decrypt session tickets with `keys` (same keys in every worker); False if unsupported."""
    if len(keys) != TICKET_KEYS_LEN or sys.implementation.name != "cpython":
        return False
    try:
        ctrl = _ssl_ctx_ctrl()
    except (OSError, AttributeError):
        return False
    ssl_ctx = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value  # PySSLContext.ctx
    if not ssl_ctx:
        return False
    given = ctypes.create_string_buffer(keys, TICKET_KEYS_LEN)
    if ctrl(ssl_ctx, _SSL_CTRL_SET_TLSEXT_TICKET_KEYS, TICKET_KEYS_LEN, given) != 1:
        return False
    check = ctypes.create_string_buffer(TICKET_KEYS_LEN)
    return bool(ctrl(ssl_ctx, _SSL_CTRL_GET_TLSEXT_TICKET_KEYS, TICKET_KEYS_LEN, check) == 1 and check.raw == keys)


def failure_reason(exc: BaseException) -> int:
    """The handshake-failure counter for an exception from uvloop's SSLProtocol."""
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError)):
        return FAIL_ABORTED  # the client closed or reset during the handshake
    if isinstance(exc, ssl.SSLError):
        return FAIL_PROTOCOL  # garbage, plain HTTP, no shared version or cipher
    if isinstance(exc, ConnectionAbortedError):
        return FAIL_TIMEOUT  # uvloop aborts a handshake that takes too long this way
    return FAIL_OTHER


class WorkerTLS:
    """The worker's certificates and the SNI callback; see the module docstring."""

    __slots__ = ("_names", "_routes", "contexts", "ctx", "fallback", "keys_dir", "missing")

    def __init__(self, ctx: WorkerContext, keys_dir: str) -> None:
        self.ctx = ctx
        self.keys_dir = keys_dir
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.missing: set[str] = set()  # fingerprints whose file could not be loaded (logged once each)
        self.fallback = server_context(os.path.join(keys_dir, SELF_SIGNED))
        self.fallback.sni_callback = self._sni
        self._share_tickets()
        self._routes: object = None
        self._names: dict[str | None, ssl.SSLContext] = {}

    def _share_tickets(self) -> None:
        try:
            with open(os.path.join(self.keys_dir, TICKET_KEYS), "rb") as f:
                keys = f.read()
        except FileNotFoundError:
            keys = b""
        if not share_ticket_keys(self.fallback, keys):
            log.warning("TLS session tickets are per worker: a client resumes only on the worker it first reached",
                        extra={"worker": self.ctx.worker_id, "reason": "TicketKeysNotShared"})

    def context_for(self, fingerprint: str) -> ssl.SSLContext | None:
        """The context of one certificate, built on first use; None when its file cannot be used."""
        found = self.contexts.get(fingerprint)
        if found is None and fingerprint not in self.missing:
            try:
                found = server_context(os.path.join(self.keys_dir, fingerprint + ".pem"))
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.missing.add(fingerprint)
                log.error("cannot load certificate %s: %s; serving the default certificate", fingerprint, exc,
                          extra={"worker": self.ctx.worker_id, "reason": "CertificateUnusable"})
                return None
            self.contexts[fingerprint] = found
        return found

    def select(self, server_name: str | None) -> ssl.SSLContext:
        """The context for a server name under the current table (cached per routes generation)."""
        view = self.ctx.view
        if view is None:
            return self.fallback
        routes = view.routes
        if routes is not self._routes:
            self._routes = routes
            self._names = {}
            self._prune(routes)
        found = self._names.get(server_name)
        if found is None:
            found = self._resolve(routes, server_name)
            if len(self._names) >= NAME_CACHE_MAX:
                self._names.clear()
            self._names[server_name] = found
        return found

    def _resolve(self, routes: Any, server_name: str | None) -> ssl.SSLContext:
        entry = routes.lookup_cert(server_name.lower().encode()) if server_name else None
        if entry is not None:
            found = self.context_for(entry.fingerprint)
            if found is not None:
                return found
        default = routes.default_cert
        if default is not None:
            found = self.context_for(default.fingerprint)
            if found is not None:
                return found
        return self.fallback

    def _prune(self, routes: Any) -> None:
        """Forget contexts of certificates the new table no longer names (their files are going away)."""
        if len(self.contexts) <= 2 * len(routes.certs) + 16:
            return
        keep = {routes.cert(i).fingerprint for i in range(len(routes.certs))}
        self.contexts = {fp: c for fp, c in self.contexts.items() if fp in keep}
        self.missing.clear()

    def _sni(self, sslobj: ssl.SSLObject, server_name: str | None, _base: ssl.SSLContext) -> None:
        ctx = self.select(server_name)
        if ctx is not self.fallback:
            sslobj.context = ctx

    # --- the listener ---
    def protocol_factory(self, make_app: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.BaseProtocol]:
        """For `loop.create_server` on a plain socket: each connection gets a TLS layer around `make_app()`."""
        ctx = self.ctx
        loop = ctx.loop
        timeout = ctx.settings.tls_handshake_timeout_s
        fallback = self.fallback
        on_done = self.on_handshake

        def factory() -> asyncio.BaseProtocol:
            ctx.handshakes += 1
            app = make_app()
            waiter = loop.create_future()
            waiter.add_done_callback(functools.partial(on_done, app))
            return _SSLProtocol(loop, app, fallback, waiter, server_side=True, server_hostname=None,
                                ssl_handshake_timeout=timeout, ssl_shutdown_timeout=SHUTDOWN_TIMEOUT_S)

        return factory

    def on_handshake(self, app: asyncio.Protocol, waiter: asyncio.Future[None]) -> None:
        """Count the outcome. uvloop calls `app.connection_made` before it completes the waiter, and
        completes it without an exception also when the connection was closed by us mid-handshake."""
        self.ctx.handshakes -= 1
        stats = self.ctx.stats
        if waiter.cancelled():
            stats.add(FAIL_OTHER)
            return
        exc = waiter.exception()  # retrieved here, so asyncio never warns about it
        if exc is not None:
            stats.add(failure_reason(exc))
        elif getattr(app, "transport", None) is not None:
            stats.add(st.TLS_HANDSHAKES)
        else:
            stats.add(FAIL_ABORTED)
