"""HTTPS end to end through `fastingress serve` with 2 workers: certificates by SNI, routes by Host,
redirects and HSTS, broken Secrets, hostile handshakes, rotation under load.

Certificates are generated in the tests (tests/support/certs.py); clients are Python `ssl` sockets
that report which certificate the server presented (its DER bytes).
"""

from __future__ import annotations

import base64
import datetime as dt
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import get, ingress, metric_values, service, start_proxy, write_manifests
from tests.support.backends import RecordingBackend
from tests.support.certs import make_cert, make_key
from tests.support.proxy import ServedProxy, parse_responses

pytestmark = pytest.mark.integration

IO_TIMEOUT_S = 5.0


def tls_secret(name: str, cert_pem: bytes, key_pem: bytes, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": base64.b64encode(key_pem).decode()}}


def with_tls(obj: dict[str, Any], hosts: list[str], secret: str, **annotations: str) -> dict[str, Any]:
    obj["spec"]["tls"] = [{"hosts": hosts, "secretName": secret}]
    if annotations:
        obj["metadata"]["annotations"] = annotations
    return obj


def der(cert_pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert_pem.decode())


def client_context(**kw: Any) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for name, value in kw.items():
        setattr(ctx, name, value)
    return ctx


class HttpsResult:
    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes, cert: bytes, alpn: str | None,
                 version: str | None, reused: bool) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.cert, self.alpn, self.version, self.reused = cert, alpn, version, reused


def https_get(port: int, sni: str | None, host: str, path: str = "/", ctx: ssl.SSLContext | None = None,
              session: ssl.SSLSession | None = None) -> HttpsResult:
    """One HTTPS request on a fresh connection; `sni` None sends no server name."""
    ctx = ctx or client_context()
    ctx.set_alpn_protocols(["http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as raw, \
            ctx.wrap_socket(raw, server_hostname=sni, session=session) as tls:
        cert = tls.getpeercert(binary_form=True) or b""
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            try:
                chunk = tls.recv(65536)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        responses = parse_responses(b"".join(chunks))
        assert len(responses) == 1, chunks
        status, headers, body = responses[0]
        return HttpsResult(status, {k.lower(): v for k, v in headers.items()}, body, cert,
                           tls.selected_alpn_protocol(), tls.version(), tls.session_reused)


def served_cert(port: int, sni: str | None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as raw, \
            client_context().wrap_socket(raw, server_hostname=sni) as tls:
        return tls.getpeercert(binary_form=True) or b""


def https_port(proxy: ServedProxy) -> int:
    return proxy.ports["https"]


class TlsSite:
    """Hosts: exact.example.com (own cert), *.wild.example.com (wildcard cert), plain.example.com
    (no tls section), optout.example.com (cert, ssl-redirect "false"); broken-*.example.com with each
    kind of broken Secret."""

    def __init__(self, tmp: Path) -> None:
        self.exact = make_cert(["exact.example.com"])
        self.wild = make_cert(["*.wild.example.com"])
        self.optout = make_cert(["optout.example.com"])
        self.other = make_cert(["elsewhere.example.org"])
        self.expired = make_cert(["broken-expired.example.com"], not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
        mismatched_cert, _ = make_cert(["broken-key.example.com"])
        self.backends = {name: RecordingBackend(name) for name in ("exact", "wild", "plain", "optout", "broken")}
        objs: list[dict[str, Any]] = [service(name, b.port) for name, b in self.backends.items()]
        objs += [
            tls_secret("exact", *self.exact), tls_secret("wild", *self.wild), tls_secret("optout", *self.optout),
            tls_secret("other", *self.other), tls_secret("expired", *self.expired),
            tls_secret("badpem", b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
                       self.exact[1]),
            tls_secret("badkey", mismatched_cert, self.exact[1]),
            with_tls(ingress("exact", [("exact.example.com", [("/", "Prefix", "exact")])]),
                     ["exact.example.com"], "exact"),
            with_tls(ingress("wild", [("*.wild.example.com", [("/", "Prefix", "wild")])]),
                     ["*.wild.example.com"], "wild"),
            ingress("plain", [("plain.example.com", [("/", "Prefix", "plain")])]),
            with_tls(ingress("optout", [("optout.example.com", [("/", "Prefix", "optout")])]),
                     ["optout.example.com"], "optout", **{"nginx.ingress.kubernetes.io/ssl-redirect": "false"}),
        ]
        for reason, secret in (("pem", "badpem"), ("key", "badkey"), ("expired", "expired"), ("host", "other")):
            host = f"broken-{reason}.example.com"
            objs.append(with_tls(ingress(f"broken-{reason}", [(host, [("/", "Prefix", "broken")])]), [host], secret))
        self.path = tmp / "site.yaml"
        write_manifests(self.path, objs)

    def close(self) -> None:
        for b in self.backends.values():
            b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsSite, ServedProxy]]:
    tmp = tmp_path_factory.mktemp("tls")
    s = TlsSite(tmp)
    proxy = start_proxy(tmp, workers=2, env={"FASTINGRESS_REDIRECT_HTTPS_PORT": "8443",
                                              "FASTINGRESS_TLS_HANDSHAKE_TIMEOUT_S": "1"})
    try:
        yield s, proxy
    finally:
        proxy.stop()
        s.close()


def default_cert(proxy: ServedProxy) -> bytes:
    """The certificate served to a name no Secret covers (the generated self-signed one here)."""
    return served_cert(https_port(proxy), "nobody.example.net")


# --- certificate selection ---------------------------------------------------------------------------------
def test_sni_selects_exact_and_wildcard_certificates(site: tuple[TlsSite, ServedProxy]) -> None:
    s, proxy = site
    port = https_port(proxy)
    assert served_cert(port, "exact.example.com") == der(s.exact[0])
    assert served_cert(port, "EXACT.example.com") == der(s.exact[0])  # names compare lower-cased
    assert served_cert(port, "a.wild.example.com") == der(s.wild[0])
    assert served_cert(port, "b.wild.example.com") == der(s.wild[0])
    assert served_cert(port, "a.b.wild.example.com") not in (der(s.wild[0]), der(s.exact[0]))  # one label only


def test_unknown_and_missing_sni_get_the_self_signed_default(site: tuple[TlsSite, ServedProxy]) -> None:
    s, proxy = site
    port = https_port(proxy)
    default = default_cert(proxy)
    assert default and default not in {der(c[0]) for c in (s.exact, s.wild, s.optout, s.other)}
    assert served_cert(port, None) == default
    assert served_cert(port, "plain.example.com") == default  # an Ingress without a tls section


def test_route_is_chosen_by_host_certificate_by_sni(site: tuple[TlsSite, ServedProxy]) -> None:
    s, proxy = site
    got = https_get(https_port(proxy), "exact.example.com", "a.wild.example.com", "/x")
    assert got.status == 200 and got.body.startswith(b"wild GET /x")
    assert got.cert == der(s.exact[0])
    got = https_get(https_port(proxy), None, "exact.example.com", "/y")
    assert got.status == 200 and got.body.startswith(b"exact GET /y")


def test_protocol_versions_and_alpn(site: tuple[TlsSite, ServedProxy]) -> None:
    _, proxy = site
    port = https_port(proxy)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        got = https_get(port, "exact.example.com", "exact.example.com",
                        ctx=client_context(minimum_version=version, maximum_version=version))
        assert got.status == 200 and got.version == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                                     ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        assert got.alpn == "http/1.1"
    old = client_context(minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    old.set_ciphers("ALL:@SECLEVEL=0")  # else this OpenSSL refuses TLS 1.0/1.1 on the client side already
    with pytest.raises((ssl.SSLError, ConnectionResetError)), \
            socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S) as raw, \
            old.wrap_socket(raw, server_hostname="exact.example.com"):
        pass


def test_sessions_resume_on_any_worker(site: tuple[TlsSite, ServedProxy]) -> None:
    """The workers share ticket keys: a client reconnecting with its session resumes whichever of the
    2 workers SO_REUSEPORT gives the new connection (each worker with keys of its own: about half fail)."""
    _, proxy = site
    port = https_port(proxy)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = client_context(minimum_version=version, maximum_version=version)
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                ctx.wrap_socket(raw, server_hostname="exact.example.com") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: exact.example.com\r\nConnection: close\r\n\r\n")
            while tls.recv(65536):  # TLS 1.3 tickets arrive after the handshake, with the data
                pass
            session = tls.session
        assert session is not None
        resumed = [https_get(port, "exact.example.com", "exact.example.com", ctx=ctx, session=session).reused
                   for _ in range(12)]
        assert all(resumed), (version, resumed)


# --- redirects, HSTS, forwarded headers --------------------------------------------------------------------
def test_plain_http_to_a_host_with_a_certificate_is_redirected(site: tuple[TlsSite, ServedProxy]) -> None:
    _, proxy = site
    got = get(proxy.http_port, "/a/b?c=d", host="exact.example.com")
    assert got.status == 308
    assert got.header(b"location") == b"https://exact.example.com:8443/a/b?c=d"
    assert get(proxy.http_port, "/", host="x.wild.example.com").status == 308
    assert get(proxy.http_port, "/", host="plain.example.com").status == 200  # no certificate of its own
    assert get(proxy.http_port, "/", host="optout.example.com").status == 200  # ssl-redirect: "false"


def test_hsts_only_on_https_responses_of_hosts_with_their_own_certificate(site: tuple[TlsSite, ServedProxy]) -> None:
    _, proxy = site
    port = https_port(proxy)
    got = https_get(port, "exact.example.com", "exact.example.com")
    assert got.headers.get(b"strict-transport-security") == b"max-age=31536000"
    assert https_get(port, "x.wild.example.com", "x.wild.example.com").headers.get(
        b"strict-transport-security") == b"max-age=31536000"
    assert b"strict-transport-security" not in https_get(port, None, "plain.example.com").headers
    assert get(proxy.http_port, "/", host="optout.example.com").header(b"strict-transport-security") is None


def test_hsts_on_keep_alive_responses_once_each(site: tuple[TlsSite, ServedProxy]) -> None:
    """Keep-alive GETs take the fast lane (the response head is relayed as received): HSTS is added there too."""
    _, proxy = site
    with socket.create_connection(("127.0.0.1", https_port(proxy)), timeout=IO_TIMEOUT_S) as raw, \
            client_context().wrap_socket(raw, server_hostname="exact.example.com") as tls:
        data = b""
        for i in range(3):
            tls.sendall(b"GET /k%d HTTP/1.1\r\nHost: exact.example.com\r\n\r\n" % i)
            while data.count(b"exact GET /k") <= i:
                data += tls.recv(65536)
    responses = parse_responses(data)
    assert [r[0] for r in responses] == [200, 200, 200]
    assert data.lower().count(b"strict-transport-security: max-age=31536000\r\n") == 3


def test_backend_sees_https_forwarded_headers(site: tuple[TlsSite, ServedProxy]) -> None:
    s, proxy = site
    backend = s.backends["exact"]
    before = len(backend.requests)
    assert https_get(https_port(proxy), "exact.example.com", "exact.example.com", "/fwd").status == 200
    req = backend.requests[before]
    assert req.header(b"x-forwarded-proto") == b"https"
    assert req.header(b"x-forwarded-port") == str(https_port(proxy)).encode()


# --- broken Secrets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("reason", ["pem", "key", "expired", "host"])
def test_broken_secret_falls_back_to_the_default_certificate(site: tuple[TlsSite, ServedProxy], reason: str) -> None:
    s, proxy = site
    host = f"broken-{reason}.example.com"
    got = https_get(https_port(proxy), host, host, "/b")
    assert got.cert == default_cert(proxy)
    assert got.status == 200 and got.body.startswith(b"broken GET /b")  # the route itself still serves
    assert get(proxy.http_port, "/", host=host).status == 200  # no usable certificate: no redirect
    assert served_cert(https_port(proxy), "exact.example.com") == der(s.exact[0])  # the others are unaffected


# --- hostile handshakes --------------------------------------------------------------------------------------
def _closed_without_answer(port: int, data: bytes, *, wait_s: float = IO_TIMEOUT_S) -> tuple[bytes, float]:
    """Send bytes on the TLS port; (what came back, seconds until the close)."""
    start = time.monotonic()
    got = []
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        if data:
            sock.sendall(data)
        while True:
            try:
                chunk = sock.recv(4096)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            got.append(chunk)
    return b"".join(got), time.monotonic() - start


def _failures(proxy: ServedProxy, reason: str) -> float:
    _, body = proxy.admin("/metrics")
    for line in body.decode().splitlines():
        if line.startswith("fastingress_tls_handshake_failures_total{") and f'reason="{reason}"' in line:
            return float(line.rpartition(" ")[2])
    return 0.0


def test_plain_http_and_garbage_on_the_tls_port_are_closed_and_counted(site: tuple[TlsSite, ServedProxy]) -> None:
    _, proxy = site
    before = _failures(proxy, "protocol")
    for data in (b"GET / HTTP/1.1\r\nHost: exact.example.com\r\n\r\n", b"\x00" * 64, b"\x16\x03\x01\x00\x05hello"):
        got, _ = _closed_without_answer(https_port(proxy), data)
        assert b"HTTP/1.1 200" not in got
    proxy.wait_for(lambda: _failures(proxy, "protocol") >= before + 3, timeout_s=5)


def test_handshake_timeout_and_abort_are_closed_and_counted(site: tuple[TlsSite, ServedProxy]) -> None:
    _, proxy = site
    timeouts, aborted = _failures(proxy, "timeout"), _failures(proxy, "aborted")
    got, took = _closed_without_answer(https_port(proxy), b"")  # silent client: FASTINGRESS_TLS_HANDSHAKE_TIMEOUT_S=1
    assert got == b"" and took < 4
    with socket.create_connection(("127.0.0.1", https_port(proxy))) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello, then gone
    proxy.wait_for(lambda: _failures(proxy, "timeout") >= timeouts + 1, timeout_s=5)
    proxy.wait_for(lambda: _failures(proxy, "aborted") >= aborted + 1, timeout_s=5)
    assert metric_values(proxy, "fastingress_tls_handshakes_total")[0] > 0
    assert https_get(https_port(proxy), "exact.example.com", "exact.example.com").status == 200


# --- rotation --------------------------------------------------------------------------------------------------
def test_rotation_under_load_loses_nothing(tmp_path: Path) -> None:
    old = make_cert(["rot.example.com"], key=make_key())
    new = make_cert(["rot.example.com"], key=make_key())
    b = RecordingBackend("rot")
    path = tmp_path / "m.yaml"

    def manifests(cert: tuple[bytes, bytes]) -> list[dict[str, Any]]:
        return [service("rot", b.port), tls_secret("rot", *cert),
                with_tls(ingress("rot", [("rot.example.com", [("/", "Prefix", "rot")])]), ["rot.example.com"], "rot")]

    write_manifests(path, manifests(old))
    failures: list[BaseException] = []
    seen: list[bytes] = []
    stop = threading.Event()
    try:
        with start_proxy(tmp_path, workers=2) as proxy:
            port = https_port(proxy)

            def loop() -> None:
                while not stop.is_set():
                    try:
                        got = https_get(port, "rot.example.com", "rot.example.com", "/r")
                        if got.status != 200:
                            failures.append(AssertionError(got.status))
                        seen.append(got.cert)
                    except (OSError, AssertionError) as exc:
                        failures.append(exc)

            threads = [threading.Thread(target=loop) for _ in range(4)]
            for t in threads:
                t.start()
            proxy.wait_for(lambda: len(seen) > 20)
            write_manifests(path, manifests(new))
            proxy.wait_for(lambda: served_cert(port, "rot.example.com") == der(new[0]), timeout_s=10)
            time.sleep(0.1)  # the other worker swaps on its next 20 ms tick
            switched = time.monotonic()
            while time.monotonic() - switched < 0.5:
                assert served_cert(port, "rot.example.com") == der(new[0])  # every worker: new connections, new cert
            count = len(seen)
            proxy.wait_for(lambda: len(seen) > count + 20)
            stop.set()
            for t in threads:
                t.join()
        assert failures == []
        assert der(old[0]) in seen and der(new[0]) in seen
        assert seen[-1] == der(new[0])
    finally:
        stop.set()
        b.close()
