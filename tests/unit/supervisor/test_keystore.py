"""KeyStore: the private directory of certificate files the workers load (modes, names, content, removal).

Real files in a temporary directory; modes are checked as st_mode bits (a read attempt as another
user proves nothing when the tests run as root).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from cryptography import x509

from fastingress.compiler.certs import parse_cert_bundle
from fastingress.compiler.types import CertBundle
from fastingress.model.objects import ObjectKey, TLSSecret
from fastingress.supervisor.keystore import (
    DIR_PREFIX,
    SELF_SIGNED,
    SELF_SIGNED_CN,
    TICKET_KEYS,
    TICKET_KEYS_LEN,
    KeyStore,
    generate_self_signed,
    remove_stale_key_dirs,
)
from tests.support.certs import make_cert


def bundle(*names: str, chain: bool = False) -> CertBundle:
    crt, key = make_cert(list(names))
    if chain:
        crt += make_cert(["intermediate.example"])[0]
    parsed = parse_cert_bundle(TLSSecret(key=ObjectKey("default", names[0]), cert_pem=crt, key_pem=key))
    assert isinstance(parsed, CertBundle)
    return parsed


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def loads(path: str) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(path)  # raises on a missing file, a bad PEM or a key that does not match
    return True


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[KeyStore]:
    store = KeyStore(str(tmp_path))
    yield store
    store.close()


def test_directory_is_private_and_under_the_parent(tmp_path: Path, keys: KeyStore) -> None:
    assert Path(keys.path).parent == tmp_path and Path(keys.path).name.startswith(f"{DIR_PREFIX}{os.getpid()}-")
    assert mode(keys.path) == 0o700 and os.stat(keys.path).st_uid == os.getuid()


def test_files_are_named_by_fingerprint_private_and_load(keys: KeyStore) -> None:
    a, b = bundle("a.example.com"), bundle("b.example.com", chain=True)
    assert keys.write([a, b]) == [a.fingerprint, b.fingerprint]
    assert sorted(os.listdir(keys.path)) == sorted([f"{a.fingerprint}.pem", f"{b.fingerprint}.pem"])
    for cert in (a, b):
        path = keys.pem_path(cert.fingerprint)
        assert path == os.path.join(keys.path, cert.fingerprint + ".pem")
        assert mode(path) == 0o600 and loads(path)
        assert Path(path).read_bytes() == cert.cert_pem + cert.key_pem  # chain first, then the key
    assert Path(keys.pem_path(b.fingerprint)).read_bytes().count(b"BEGIN CERTIFICATE") == 2
    assert keys.write([a, b]) == []  # already written: nothing rewritten
    assert keys.written() == {a.fingerprint, b.fingerprint}


def test_mode_is_0600_whatever_the_umask(keys: KeyStore) -> None:
    old = os.umask(0)
    try:
        a = bundle("a.example.com")
        keys.write([a])
    finally:
        os.umask(old)
    assert mode(keys.pem_path(a.fingerprint)) == 0o600


def test_a_fingerprint_that_is_not_one_is_refused(keys: KeyStore) -> None:
    evil = msgspec.structs.replace(bundle("a.example.com"), fingerprint="../../etc/passwd")
    with pytest.raises(ValueError):
        keys.write([evil])
    assert os.listdir(keys.path) == []


def test_self_signed_certificate(keys: KeyStore, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fastingress.supervisor.keystore"):
        path = keys.ensure_self_signed()
    assert path == os.path.join(keys.path, SELF_SIGNED) and mode(path) == 0o600 and loads(path)
    assert any("FASTINGRESS_DEFAULT_TLS_SECRET" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={SELF_SIGNED_CN}"
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=364) < lifetime <= dt.timedelta(days=365)
    before = Path(path).read_bytes()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastingress.supervisor.keystore"):
        assert keys.ensure_self_signed(warn=False) == path
    assert Path(path).read_bytes() == before and not caplog.records  # generated once; no warning when asked not


def test_ticket_keys_are_random_private_and_made_once(keys: KeyStore, tmp_path: Path) -> None:
    path = keys.ensure_ticket_keys()
    data = Path(path).read_bytes()
    assert os.path.basename(path) == TICKET_KEYS and mode(path) == 0o600 and len(data) == TICKET_KEYS_LEN
    assert keys.ensure_ticket_keys() == path and Path(path).read_bytes() == data
    other = KeyStore(str(tmp_path))
    try:
        assert Path(other.ensure_ticket_keys()).read_bytes() != data  # every start makes new keys
    finally:
        other.close()


def test_generated_certificate_is_a_server_certificate_for_no_real_name() -> None:
    now = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    crt, key = generate_self_signed(now)
    cert = x509.load_pem_x509_certificate(crt)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["fastingress.invalid"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_before_utc < now < cert.not_valid_after_utc
    parsed = parse_cert_bundle(TLSSecret(key=ObjectKey("x", "y"), cert_pem=crt, key_pem=key))
    assert isinstance(parsed, CertBundle)  # cert and key match


def test_retain_removes_the_others_but_never_the_self_signed(keys: KeyStore) -> None:
    a, b, c = bundle("a.example.com"), bundle("b.example.com"), bundle("c.example.com")
    keys.ensure_self_signed(warn=False)
    keys.write([a, b, c])
    assert keys.retain({b.fingerprint}) == sorted([a.fingerprint, c.fingerprint])
    assert sorted(os.listdir(keys.path)) == sorted([SELF_SIGNED, f"{b.fingerprint}.pem"])
    keys.write([a])  # a fingerprint that comes back is written again
    assert os.path.exists(keys.pem_path(a.fingerprint))


def test_reclaim_keeps_what_any_generation_a_worker_may_serve_names(keys: KeyStore) -> None:
    a, b, c = bundle("a.example.com"), bundle("b.example.com"), bundle("c.example.com")
    keys.write([a, b])
    keys.published(1, [a.fingerprint, b.fingerprint])
    keys.write([b, c])
    keys.published(2, [b.fingerprint, c.fingerprint])  # generation 2 dropped a
    assert keys.reclaim(0) == [] and keys.reclaim(1) == []  # a worker still serves 1 (or has acked nothing)
    assert os.path.exists(keys.pem_path(a.fingerprint))
    assert keys.reclaim(2) == [a.fingerprint]  # every worker serves 2: nobody can ask for a any more
    assert keys.written() == {b.fingerprint, c.fingerprint}
    keys.published(3, [])
    assert keys.reclaim(2) == []  # generation 2 still served
    assert keys.reclaim(7) == sorted([b.fingerprint, c.fingerprint])  # newer than the newest: keep the newest
    assert keys.written() == set()


def test_close_removes_everything(tmp_path: Path) -> None:
    keys = KeyStore(str(tmp_path))
    keys.ensure_self_signed(warn=False)
    keys.write([bundle("a.example.com")])
    keys.close()
    assert not os.path.exists(keys.path) and os.listdir(tmp_path) == []
    keys.close()  # idempotent


def test_directories_of_dead_supervisors_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / f"{DIR_PREFIX}999999999-abc"  # above pid_max: never a live process
    dead.mkdir()
    (dead / "x.pem").write_bytes(b"old key")
    mine = tmp_path / f"{DIR_PREFIX}{os.getpid()}-abc"
    mine.mkdir()
    other = tmp_path / "unrelated"
    other.mkdir()
    keys = KeyStore(str(tmp_path))  # sweeps on creation
    try:
        assert not dead.exists() and mine.exists() and other.exists()
        assert remove_stale_key_dirs(str(tmp_path)) == []
    finally:
        keys.close()


def test_default_parent_is_tmpfs_when_there_is_one() -> None:
    keys = KeyStore()
    try:
        expected = "/dev/shm" if os.path.isdir("/dev/shm") else None
        if expected:
            assert Path(keys.path).parent == Path(expected)
        assert mode(keys.path) == 0o700
    finally:
        keys.close()
    assert not os.path.exists(keys.path)
