"""The default certificate (FASTINGRESS_DEFAULT_TLS_SECRET) and the HSTS route flag, compiled and emitted."""

from __future__ import annotations

import datetime as dt
import struct

import pytest

from fastingress.compiler import CompileOptions, compile_config
from fastingress.compiler.describe import describe_config, render_routes_text
from fastingress.compiler.emit import emit_routes
from fastingress.compiler.types import CompiledConfig
from fastingress.model.objects import Ingress, Kind, ObjectKey, TLSSecret
from fastingress.model.problems import Problem
from fastingress.table import schema as s
from fastingress.table.lookup import RouteTable
from tests.support.certs import make_cert
from tests.unit.compiler.builders import backend, ingress, path, rule, secret, service, snapshot, tls

DEFAULT = ObjectKey("ingress", "default-cert")
EXPIRY = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
EXPIRY_EPOCH = int(EXPIRY.timestamp())


def _compile(*objs: Ingress | TLSSecret, default: ObjectKey | None = DEFAULT, now: int = 0
             ) -> tuple[CompiledConfig, list[Problem]]:
    return compile_config(snapshot(service(), *objs), CompileOptions(now=now, default_tls_secret=default))


def _default_secret(names: tuple[str, ...] = ("fallback.example",), not_after: dt.datetime = EXPIRY) -> TLSSecret:
    crt, key = make_cert(list(names), not_after=not_after)
    return secret(DEFAULT.name, crt, key, ns=DEFAULT.namespace)


def _meta_default(config: CompiledConfig) -> int:
    """The raw META_DEFAULT_CERT cell of the emitted routes segment (the ABI, read without lookup.py)."""
    seg = emit_routes(config)
    off, rows = s.parse_header(memoryview(seg), s.KIND_ROUTES).sections[s.S_META]
    assert rows == 1
    return int(struct.unpack_from("<i", seg, off + 4 * s.META_DEFAULT_CERT)[0])


def test_usable_default_secret_is_in_certs_and_named_by_the_meta_row() -> None:
    crt, key = make_cert(["a.com"])
    config, problems = _compile(_default_secret(), secret("s", crt, key),
                                ingress("i", rule("a.com", path("/")), tls=(tls("s", "a.com"),)))
    assert problems == []
    assert len(config.certs) == 2 and config.default_cert in {c.fingerprint for c in config.certs}
    table = RouteTable(emit_routes(config))
    entry = table.default_cert
    assert entry is not None and entry.secret == "ingress/default-cert" and entry.fingerprint == config.default_cert
    assert entry.not_after == EXPIRY_EPOCH
    assert table.lookup_cert(b"a.com") is not None and table.lookup_cert(b"other.com") is None  # no SNI entry
    index = [c.fingerprint for c in config.certs].index(config.default_cert)
    assert _meta_default(config) == index


def test_default_secret_referenced_by_no_ingress_still_counts() -> None:
    config, problems = _compile(_default_secret())
    assert problems == [] and config.vhosts == () and config.sni == ()
    assert len(config.certs) == 1 and config.certs[0].secret == DEFAULT
    assert RouteTable(emit_routes(config)).default_cert is not None


def test_no_default_secret_configured_means_minus_one_and_no_problem() -> None:
    config, problems = _compile(_default_secret(), default=None)
    assert problems == [] and config.certs == () and config.default_cert == ""
    table = RouteTable(emit_routes(config))
    assert table.default_cert is None and _meta_default(config) == -1


@pytest.mark.parametrize(("objs", "now", "cause"), [
    ((), 0, "SecretNotFound"),
    ((secret(DEFAULT.name, b"junk", b"junk", ns=DEFAULT.namespace),), 0, "InvalidCertificate"),
    ((TLSSecret(key=DEFAULT, cert_pem=make_cert(["x.com"])[0], key_pem=make_cert(["x.com"])[1]),), 0, "KeyMismatch"),
    ((_default_secret(),), EXPIRY_EPOCH + 1, "CertificateExpired"),
])
def test_unusable_default_secret_is_a_problem_on_the_secret(objs: tuple[TLSSecret, ...], now: int, cause: str) -> None:
    config, problems = _compile(*objs, now=now)
    assert config.default_cert == "" and config.certs == ()
    assert RouteTable(emit_routes(config)).default_cert is None and _meta_default(config) == -1
    (problem,) = problems
    assert (problem.kind, problem.key, problem.reason) == (Kind.SECRET, DEFAULT, "DefaultCertificateUnusable")
    assert cause in problem.message and "ingress/default-cert" in problem.message


def test_default_secret_shared_with_an_ingress_is_one_cert() -> None:
    default = _default_secret(("a.com",))
    copy = secret("copy", default.cert_pem, default.key_pem)
    config, problems = _compile(default, copy, ingress("i", rule("a.com", path("/")), tls=(tls("copy", "a.com"),)))
    assert problems == [] and len(config.certs) == 1
    table = RouteTable(emit_routes(config))
    assert table.default_cert is not None and table.default_cert.fingerprint == config.sni[0].cert


def test_default_certificate_is_described_without_key_material() -> None:
    config, _ = _compile(_default_secret())
    desc = describe_config(config)
    assert desc["default_certificate"] == config.default_cert
    assert desc["certificates"][0]["default"] is True and desc["certificates"][0]["sni"] == []
    text = render_routes_text(config)
    assert f"default certificate: ingress/default-cert sha256:{config.default_cert[:16]}" in text
    assert "PRIVATE KEY" not in repr(desc) + text
    assert f"(not after {dt.datetime.fromtimestamp(desc['certificates'][0]['not_after'], dt.UTC):%Y-%m-%d %H:%M} UTC)" \
        in text  # a date for people; the JSON keeps seconds since the epoch
    config, _ = _compile(default=None)
    assert describe_config(config)["default_certificate"] is None
    assert "default certificate: self-signed" in render_routes_text(config)


def test_hsts_on_every_route_of_hosts_with_their_own_certificate() -> None:
    crt, key = make_cert(["a.com", "*.w.com"])
    config, _ = _compile(
        _default_secret(("b.com",)), secret("s", crt, key),
        ingress("i", rule("a.com", path("/i"), path("/j", "Exact")), rule("", path("/")), default=backend(),
                tls=(tls("s", "a.com", "*.w.com"),),
                annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"}),  # HSTS ignores the opt-out
        ingress("w", rule("x.w.com", path("/x")), rule("*.w.com", path("/w"))),  # covered by the *.w.com entry
        ingress("b", rule("b.com", path("/b"))),  # only the default certificate covers b.com: no HSTS
        ingress("f", rule("f.com", path("/f")), annotations={"fastingress.io/force-ssl-redirect": "true"}),
    )
    hsts = {(vh.host, r.path): r.hsts for vh in config.vhosts for r in vh.routes}
    assert hsts == {("a.com", "/i"): True, ("a.com", "/j"): True, ("", ""): False, ("x.w.com", "/x"): True,
                    ("*.w.com", "/w"): True, ("b.com", "/b"): False, ("f.com", "/f"): False}
    assert {vh.host: vh.default.hsts for vh in config.vhosts if vh.default} == {"a.com": True, "": False}
    table = RouteTable(emit_routes(config))
    emitted = {(table.route(i).host, table.route(i).path): table.route(i).hsts for i in range(len(table.routes))}
    assert emitted[("a.com", "/i")] and emitted[("a.com", "")] and not emitted[("", "")]
    assert not emitted[("b.com", "/b")] and emitted[("x.w.com", "/x")]
    flags = {int(row[s.RT_FLAGS]) for row in table.routes}
    assert flags <= {0, s.FLAG_HSTS, s.FLAG_REDIRECT_HTTPS, s.FLAG_REDIRECT_HTTPS | s.FLAG_HSTS}
    assert table.route(table.match(b"a.com", b"/i")).redirect_https is False  # opted out, HSTS all the same
    described = {h["host"]: h for h in describe_config(config)["hosts"]}
    assert described["a.com"]["routes"][0]["hsts"] is True and "hsts" not in described["b.com"]["routes"][0]


def test_default_cert_is_read_lazily_and_once_per_generation() -> None:
    config, _ = _compile(_default_secret())
    table = RouteTable(emit_routes(config))
    assert "certs" not in vars(table)  # constructing (the swap) decodes nothing
    first = table.default_cert
    assert first is not None and table.default_cert is first

