"""TLS: Secrets -> CertBundles, SNI per host, problems, and the HTTPS redirect (design.md section 3)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization

from fastingress.compiler import CompileOptions, compile_config
from fastingress.compiler.certs import is_host_covered, parse_cert_bundle
from fastingress.compiler.types import CertBundle, CompiledConfig, SniEntry
from fastingress.model.objects import Ingress, ObjectKey, TLSSecret
from fastingress.model.problems import Problem
from tests.support.certs import make_cert, make_key
from tests.unit.compiler.builders import backend, ingress, path, rule, secret, service, snapshot, tls

EXPIRY = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
EXPIRY_EPOCH = int(EXPIRY.timestamp())


def _compile(*objs: Ingress | TLSSecret, now: int = 0) -> tuple[CompiledConfig, list[Problem]]:
    return compile_config(snapshot(service(), *objs), CompileOptions(now=now))


def _sni(config: CompiledConfig) -> dict[str, ObjectKey]:
    by_fp = {c.fingerprint: c.secret for c in config.certs}
    return {e.name: by_fp[e.cert] for e in config.sni}


def _reasons(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.reason, p.field) for p in problems]


def test_valid_secret_gives_a_bundle_and_sni_entries() -> None:
    crt, key = make_cert(["A.example.com", "b.example.com"], not_after=EXPIRY)
    config, problems = _compile(secret("s", crt, key), ingress(
        "i", rule("a.example.com", path("/")), rule("b.example.com", path("/")),
        tls=(tls("s", "a.example.com", "b.example.com"),)))
    assert problems == []
    (bundle,) = config.certs
    assert bundle.names == ("a.example.com", "b.example.com")
    assert bundle.not_after == EXPIRY_EPOCH and bundle.secret == ObjectKey("default", "s")
    assert config.sni == (SniEntry("a.example.com", bundle.fingerprint), SniEntry("b.example.com", bundle.fingerprint))
    assert b"BEGIN CERTIFICATE" in bundle.cert_pem and b"BEGIN PRIVATE KEY" in bundle.key_pem


def test_fingerprint_depends_on_content_not_on_key_encoding() -> None:
    key = make_key()
    crt, pkcs8 = make_cert(["a.com"], key=key)
    sec1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
    one = parse_cert_bundle(TLSSecret(key=ObjectKey("n", "x"), cert_pem=crt, key_pem=pkcs8))
    two = parse_cert_bundle(TLSSecret(key=ObjectKey("m", "y"), cert_pem=b"junk\n" + crt, key_pem=sec1))
    assert isinstance(one, CertBundle) and isinstance(two, CertBundle)
    assert one.fingerprint == two.fingerprint and one.key_pem == two.key_pem
    other = parse_cert_bundle(TLSSecret(key=ObjectKey("n", "x"), cert_pem=make_cert(["a.com"], key=key)[0],
                                        key_pem=pkcs8))
    assert isinstance(other, CertBundle) and other.fingerprint != one.fingerprint  # new serial, new cert


def test_chain_is_kept_leaf_first() -> None:
    key = make_key()
    leaf, key_pem = make_cert(["a.com"], key=key)
    intermediate, _ = make_cert(["ca.example"])
    bundle = parse_cert_bundle(TLSSecret(key=ObjectKey("n", "x"), cert_pem=leaf + intermediate, key_pem=key_pem))
    assert isinstance(bundle, CertBundle)
    assert bundle.cert_pem.count(b"BEGIN CERTIFICATE") == 2 and bundle.names == ("a.com",)


def test_common_name_is_used_only_without_a_san_extension() -> None:
    crt, key = make_cert([], cn="Legacy.example.com", san=False)
    bundle = parse_cert_bundle(TLSSecret(key=ObjectKey("n", "x"), cert_pem=crt, key_pem=key))
    assert isinstance(bundle, CertBundle) and bundle.names == ("legacy.example.com",)
    crt, key = make_cert(["san.example.com"], cn="cn.example.com")
    bundle = parse_cert_bundle(TLSSecret(key=ObjectKey("n", "x"), cert_pem=crt, key_pem=key))
    assert isinstance(bundle, CertBundle) and bundle.names == ("san.example.com",)


@pytest.mark.parametrize(("names", "host", "covered"), [
    (("a.com",), "a.com", True),
    (("*.a.com",), "x.a.com", True),
    (("*.a.com",), "a.com", False),
    (("*.a.com",), "y.x.a.com", False),
    (("*.a.com",), "*.a.com", True),
    (("x.a.com",), "*.a.com", False),
    (("b.com",), "a.com", False),
])
def test_san_coverage(names: tuple[str, ...], host: str, covered: bool) -> None:
    assert is_host_covered(names, host) is covered


def test_host_not_covered_is_a_problem_and_gets_no_cert() -> None:
    crt, key = make_cert(["a.com"])
    config, problems = _compile(secret("s", crt, key), ingress(
        "i", rule("a.com", path("/")), rule("b.com", path("/")), tls=(tls("s", "a.com", "b.com"),)))
    assert list(_sni(config)) == ["a.com"]
    assert _reasons(problems) == [("CertificateHostMismatch", "spec.tls[0].hosts[1]")]


def test_empty_tls_hosts_mean_every_rule_host() -> None:
    crt, key = make_cert(["*.a.com"])
    config, problems = _compile(secret("s", crt, key), ingress(
        "i", rule("x.a.com", path("/")), rule("*.a.com", path("/")), rule("", path("/")), tls=(tls("s"),)))
    assert list(_sni(config)) == ["*.a.com", "x.a.com"] and problems == []


def test_expired_certificate_is_a_problem_only_when_now_is_given() -> None:
    crt, key = make_cert(["a.com"], not_after=EXPIRY)
    objs = (secret("s", crt, key), ingress("i", rule("a.com", path("/")), tls=(tls("s", "a.com"),)))
    config, problems = _compile(*objs, now=EXPIRY_EPOCH)  # valid through its last second
    assert list(_sni(config)) == ["a.com"] and problems == []
    config, problems = _compile(*objs, now=EXPIRY_EPOCH + 1)
    assert config.sni == () and config.certs == ()
    assert _reasons(problems) == [("CertificateExpired", "spec.tls[0].secretName")]
    assert "2030-01-01" in problems[0].message
    config, problems = _compile(*objs, now=0)
    assert list(_sni(config)) == ["a.com"] and problems == []


@pytest.mark.parametrize(("cert_pem", "key_pem"), [
    (b"not a pem", None),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", None),
    (None, b"garbage"),
    (None, b""),
])
def test_bad_pem_is_invalid_certificate(cert_pem: bytes | None, key_pem: bytes | None) -> None:
    crt, key = make_cert(["a.com"])
    config, problems = _compile(secret("s", cert_pem or crt, key_pem if key_pem is not None else key),
                                ingress("i", rule("a.com", path("/")), tls=(tls("s", "a.com"),)))
    assert config.sni == () and config.certs == ()
    assert _reasons(problems) == [("InvalidCertificate", "spec.tls[0].secretName")]


def test_key_not_matching_the_leaf_is_key_mismatch() -> None:
    crt, _ = make_cert(["a.com"])
    _, other_key = make_cert(["a.com"])
    config, problems = _compile(secret("s", crt, other_key),
                                ingress("i", rule("a.com", path("/")), tls=(tls("s", "a.com"),)))
    assert config.sni == ()
    assert _reasons(problems) == [("KeyMismatch", "spec.tls[0].secretName")]


def test_missing_secret_is_secret_not_found_and_looked_up_in_the_ingress_namespace() -> None:
    crt, key = make_cert(["a.com"])
    config, problems = _compile(secret("s", crt, key, ns="elsewhere"),
                                ingress("i", rule("a.com", path("/")), tls=(tls("s", "a.com"),)))
    assert config.sni == ()
    assert _reasons(problems) == [("SecretNotFound", "spec.tls[0].secretName")]
    assert problems[0].key == ObjectKey("default", "i")


def test_oldest_usable_certificate_wins_and_shared_content_is_deduplicated() -> None:
    crt_old, key_old = make_cert(["a.com", "b.com"])
    crt_new, key_new = make_cert(["a.com"])
    config, problems = _compile(
        secret("old", crt_old, key_old), secret("copy", crt_old, key_old), secret("new", crt_new, key_new),
        ingress("n", rule("a.com", path("/n")), tls=(tls("new", "a.com"),), seq=3),
        ingress("o", rule("a.com", path("/o")), tls=(tls("broken", "a.com"), tls("old", "a.com")), seq=2),
        ingress("c", rule("b.com", path("/")), tls=(tls("copy", "b.com"),), seq=1),
    )
    assert _sni(config) == {"a.com": ObjectKey("default", "copy"), "b.com": ObjectKey("default", "copy")}
    assert len(config.certs) == 1  # "old" and "copy" hold the same content
    assert _reasons(problems) == [("SecretNotFound", "spec.tls[0].secretName")]


def test_redirect_when_the_host_has_a_cert_and_opt_out_per_ingress() -> None:
    crt, key = make_cert(["a.com"])
    config, _ = _compile(
        secret("s", crt, key),
        ingress("i", rule("a.com", path("/i")), rule("", path("/")), default=backend(), tls=(tls("s", "a.com"),)),
        ingress("o", rule("a.com", path("/o")), annotations={"nginx.ingress.kubernetes.io/ssl-redirect": "false"}),
        ingress("p", rule("b.com", path("/p"))),
    )
    flags = {(vh.host, r.path): r.redirect_https for vh in config.vhosts for r in vh.routes}
    assert flags == {("a.com", "/i"): True, ("a.com", "/o"): False, ("b.com", "/p"): False, ("", ""): False}
    defaults = {vh.host: vh.default.redirect_https for vh in config.vhosts if vh.default}
    assert defaults == {"a.com": True, "": False}


def test_hosts_the_wildcard_entry_covers_redirect() -> None:
    """x.a.com is served the *.a.com certificate over HTTPS, so plain HTTP to it redirects (and HTTPS gets HSTS)."""
    crt, key = make_cert(["*.a.com"])
    config, _ = _compile(secret("s", crt, key), ingress(
        "i", rule("*.a.com", path("/")), rule("x.a.com", path("/")), rule("a.com", path("/")),
        rule("y.x.a.com", path("/")), tls=(tls("s", "*.a.com"),)))
    expected = {"*.a.com": True, "x.a.com": True, "a.com": False, "y.x.a.com": False}
    assert {vh.host: vh.routes[0].redirect_https for vh in config.vhosts} == expected
    assert {vh.host: vh.routes[0].hsts for vh in config.vhosts} == expected


def test_force_redirect_without_a_cert_and_over_the_opt_out() -> None:
    config, _ = _compile(
        ingress("f", rule("a.com", path("/")), annotations={"fastingress.io/force-ssl-redirect": "true"}),
        ingress("g", rule("b.com", path("/")), annotations={"nginx.ingress.kubernetes.io/force-ssl-redirect": "true",
                                                          "fastingress.io/ssl-redirect": "false"}),
    )
    assert [vh.routes[0].redirect_https for vh in config.vhosts] == [True, True]


def test_fastingress_opt_out_annotation() -> None:
    crt, key = make_cert(["a.com"])
    config, _ = _compile(secret("s", crt, key), ingress(
        "i", rule("a.com", path("/")), tls=(tls("s", "a.com"),), annotations={"fastingress.io/ssl-redirect": "false"}))
    assert config.vhosts[0].routes[0].redirect_https is False and list(_sni(config)) == ["a.com"]
