"""workers/tls.py without sockets: contexts, certificate choice per server name, failure reasons, ticket keys;
and the HSTS field the fast lane adds to a response head."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st_h

from fastingress.settings import Settings
from fastingress.supervisor.keystore import KeyStore
from fastingress.supervisor.offline import build_from_manifests
from fastingress.table import stats as st
from tests.support.certs import make_cert
from workers.http1.client_conn import ClientConn, PlainHeads
from workers.http1.limits import Limits
from workers.http1.simple import FieldHeads, head_with_field, simple_response
from workers.stats import WorkerStats
from workers.tls import TICKET_KEYS_LEN, WorkerTLS, failure_reason, server_context, share_ticket_keys

HOSTS = {"exact": "a.example.com", "wild": "*.w.example.com", "dflt": "default.example.com"}


def _der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


class FakeCtx:
    """The WorkerContext attributes WorkerTLS reads."""

    def __init__(self, view: Any) -> None:
        self.view = view
        self.worker_id = 0
        self.stats = WorkerStats(None, 0)
        self.settings = Settings(tls_handshake_timeout_s=1.0)
        self.loop: Any = None
        self.handshakes = 0


@pytest.fixture(scope="module")
def certs() -> dict[str, tuple[bytes, bytes]]:
    return {name: make_cert([host]) for name, host in HOSTS.items()}


def _build(tmp: Path, certs: dict[str, tuple[bytes, bytes]], default_secret: str = "") -> tuple[Any, KeyStore]:
    docs: list[dict[str, Any]] = []
    for name, (crt, key) in certs.items():
        docs.append({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                     "metadata": {"name": name, "namespace": "default"},
                     "data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}})
    docs.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
                 "spec": {"ingressClassName": "fastingress",
                          "tls": [{"hosts": [HOSTS["exact"]], "secretName": "exact"},
                                  {"hosts": [HOSTS["wild"]], "secretName": "wild"}],
                          "rules": [{"host": HOSTS["exact"]}]}})
    (tmp / "m").mkdir(exist_ok=True)
    (tmp / "m" / "all.yaml").write_text("\n---\n".join(json.dumps(d) for d in docs))
    build = build_from_manifests(tmp / "m", Settings(default_tls_secret=default_secret))
    keys = KeyStore(str(tmp))
    keys.ensure_self_signed(warn=False)
    keys.ensure_ticket_keys()
    keys.write(build.config.certs)
    return build.view, keys


def _served(tls: WorkerTLS, name: str | None) -> bytes:
    """The DER certificate a handshake with SNI `name` gets, through a real in-memory handshake."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = client.wrap_bio(c_in, c_out, server_hostname=name)
    srv = tls.fallback.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (cli, srv):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if cli.version() is not None and srv.version() is not None:
            break
    cert = cli.getpeercert(binary_form=True)
    assert cert is not None
    return cert


def test_certificate_by_sni_exact_wildcard_and_fallbacks(tmp_path: Path, certs: dict[str, tuple[bytes, bytes]]) -> None:
    view, keys = _build(tmp_path, certs)
    try:
        tls = WorkerTLS(FakeCtx(view), keys.path)  # type: ignore[arg-type]
        assert _served(tls, "a.example.com") == _der(certs["exact"][0])
        assert _served(tls, "x.w.example.com") == _der(certs["wild"][0])
        self_signed = Path(keys.self_signed_path).read_bytes()
        fallback = _der(self_signed[: self_signed.index(b"-----END CERTIFICATE-----") + 25])
        assert _served(tls, "unknown.example.com") == fallback
        assert _served(tls, None) == fallback
        assert _served(tls, "y.x.w.example.com") == fallback  # a wildcard covers one label
    finally:
        keys.close()


def test_configured_default_certificate(tmp_path: Path, certs: dict[str, tuple[bytes, bytes]]) -> None:
    view, keys = _build(tmp_path, certs, default_secret="default/dflt")
    try:
        tls = WorkerTLS(FakeCtx(view), keys.path)  # type: ignore[arg-type]
        assert _served(tls, "unknown.example.com") == _der(certs["dflt"][0])
        assert _served(tls, None) == _der(certs["dflt"][0])
        assert _served(tls, "a.example.com") == _der(certs["exact"][0])
    finally:
        keys.close()


def test_contexts_are_cached_and_a_missing_file_falls_back(tmp_path: Path, certs: dict[str, tuple[bytes, bytes]],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    view, keys = _build(tmp_path, certs)
    try:
        tls = WorkerTLS(FakeCtx(view), keys.path)  # type: ignore[arg-type]
        first = tls.select("a.example.com")
        assert tls.select("a.example.com") is first and first is not tls.fallback
        fingerprint = view.routes.lookup_cert(b"x.w.example.com").fingerprint
        os.unlink(keys.pem_path(fingerprint))
        assert tls.select("x.w.example.com") is tls.fallback  # logged, not raised: the handshake goes on
        assert tls.context_for(fingerprint) is None and fingerprint in tls.missing
        assert any(fingerprint in r.getMessage() for r in caplog.records)
    finally:
        keys.close()


def test_no_table_yet_serves_the_fallback(tmp_path: Path) -> None:
    keys = KeyStore(str(tmp_path))
    keys.ensure_self_signed(warn=False)
    try:
        tls = WorkerTLS(FakeCtx(None), keys.path)  # type: ignore[arg-type]
        assert tls.select("a.example.com") is tls.fallback
    finally:
        keys.close()


def test_server_context_settings(tmp_path: Path, certs: dict[str, tuple[bytes, bytes]]) -> None:
    pem = tmp_path / "c.pem"
    pem.write_bytes(certs["exact"][0] + certs["exact"][1])
    ctx = server_context(str(pem))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.options & ssl.OP_NO_COMPRESSION and ctx.options & ssl.OP_NO_RENEGOTIATION
    names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and all(n.startswith("ECDHE-") and ("GCM" in n or "CHACHA20" in n) for n in names)


def test_ticket_keys_are_set_and_read_back(tmp_path: Path, certs: dict[str, tuple[bytes, bytes]]) -> None:
    pem = tmp_path / "c.pem"
    pem.write_bytes(certs["exact"][0] + certs["exact"][1])
    ctx = server_context(str(pem))
    assert share_ticket_keys(ctx, os.urandom(TICKET_KEYS_LEN))
    assert not share_ticket_keys(ctx, b"short")


@pytest.mark.parametrize(("exc", "reason"), [
    (ssl.SSLError(1, "wrong version number"), "protocol"),
    (ssl.SSLEOFError(8, "EOF"), "aborted"),
    (ConnectionResetError(), "aborted"),
    (ConnectionAbortedError("SSL handshake is taking longer than 1 seconds"), "timeout"),
    (RuntimeError("boom"), "other"),
])
def test_failure_reasons(exc: BaseException, reason: str) -> None:
    assert failure_reason(exc) == st.TLS_FAIL_BASE + st.TLS_FAIL_REASONS.index(reason)


def test_handshake_outcomes_are_counted(tmp_path: Path) -> None:
    keys = KeyStore(str(tmp_path))
    keys.ensure_self_signed(warn=False)
    loop = asyncio.new_event_loop()
    try:
        ctx = FakeCtx(None)
        tls = WorkerTLS(ctx, keys.path)  # type: ignore[arg-type]

        class App(asyncio.Protocol):
            transport: object = None

        def done(app: App, exc: BaseException | None, cancel: bool = False) -> None:
            fut: asyncio.Future[None] = loop.create_future()
            if cancel:
                fut.cancel()
            elif exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)
            tls.on_handshake(app, fut)

        ctx.handshakes = 5  # as counted by the protocol factory: the drain waits for these
        ok = App()
        ok.transport = object()  # connection_made ran: the handshake completed
        done(ok, None)
        done(App(), None)  # closed by us before the handshake finished
        done(App(), ConnectionAbortedError("timeout"))
        done(App(), ssl.SSLError(1, "bad"))
        done(App(), None, cancel=True)
        c = ctx.stats.counters
        assert c[st.TLS_HANDSHAKES] == 1
        assert [c[st.TLS_FAIL_BASE + i] for i in range(4)] == [1, 1, 1, 1]
        assert ctx.handshakes == 0  # every outcome ends one
    finally:
        loop.close()
        keys.close()


# --- the HSTS field on the fast lane -------------------------------------------------------------------------
HSTS = b"Strict-Transport-Security: max-age=60\r\n"
NAME = b"strict-transport-security"


def test_head_with_field_adds_before_the_blank_line() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    found = simple_response(data, Limits())
    assert found is not None
    assert head_with_field(data, found[1], HSTS, NAME) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + HSTS + b"\r\nok"


def test_head_with_field_keeps_the_backends_own_value() -> None:
    data = b"HTTP/1.1 200 OK\r\nstrict-transport-SECURITY: max-age=1\r\nContent-Length: 2\r\n\r\nok"
    found = simple_response(data, Limits())
    assert found is not None
    assert head_with_field(data, found[1], HSTS, NAME) is data
    body_only = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\nStrict-Transport-Security: in the body"
    found = simple_response(body_only, Limits())
    assert found is not None and head_with_field(body_only, found[1], HSTS, NAME) != body_only  # only the head counts


# --- the same field through FieldHeads (remembered by the backend's head) ------------------------------------
def _plain(head_fields: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + head_fields + b"Content-Length: %d\r\n\r\n" % len(body) + body


@given(st_h.lists(st_h.sampled_from([b"Server: a\r\n", b"X-Id: 7\r\n", b"strict-transport-security: max-age=1\r\n",
                                     b"Cache-Control: no-cache\r\n"]), max_size=4),
       st_h.binary(max_size=64), st_h.booleans())
def test_field_heads_answer_as_head_with_field(fields: list[bytes], body: bytes, twice: bool) -> None:
    data = _plain(b"".join(fields), body)
    found = simple_response(data, Limits())
    assert found is not None
    head_end = found[1]
    key = data[: head_end + 4]
    heads = FieldHeads(HSTS, NAME, 8)
    want = head_with_field(data, head_end, HSTS, NAME)
    assert heads.add(key, data, head_end) == want
    if twice:  # remembered: the same answer for another response with this head
        assert heads.add(key, data, head_end) == want and len(heads.known) == 1
    assert heads.add(b"", data, head_end) == want  # no key: computed as before


def test_field_heads_are_bounded() -> None:
    heads = FieldHeads(HSTS, NAME, 4)
    for i in range(9):
        data = _plain(b"X-Id: %d\r\n" % i, b"ok")
        found = simple_response(data, Limits())
        assert found is not None
        heads.add(data[: found[1] + 4], data, found[1])
        assert len(heads.known) <= 4


def test_the_backend_connection_names_the_head_it_remembered_by() -> None:
    memo = PlainHeads()
    data = _plain(b"Server: a\r\n", b"ok")
    for _ in range(2):  # a miss (remembered), then a hit
        conn = ClientConn(Limits(), memo)
        conn.expect(b"GET")
        assert conn.feed_simple(data) is not None
        assert conn.head_key == data[: data.index(b"\r\n\r\n") + 4]
    memo.paused = 1  # not looked up: nothing to remember it by
    conn = ClientConn(Limits(), memo)
    conn.expect(b"GET")
    assert conn.feed_simple(data) is not None and conn.head_key == b""
