"""Test certificates made with `cryptography`: self-signed EC P-256 leaves with chosen names and dates.

Dates are fixed (never read from the clock), so the same call always gives a certificate with the
same validity window; compile with `CompileOptions(now=...)` to test expiry.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOT_BEFORE = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2040, 1, 1, tzinfo=dt.UTC)  # far enough ahead for every `now` the tests pass


def make_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key (fast to generate, unlike RSA)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of a key."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_cert(
    names: list[str], *, not_after: dt.datetime = NOT_AFTER, key: ec.EllipticCurvePrivateKey | None = None,
    cn: str | None = None, san: bool = True,
) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM): DNS SANs `names` (none when `san` is False), subject CN `cn`."""
    key = key or make_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or (names[0] if names else "test"))])
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE).not_valid_after(not_after)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)
