"""The TLS scenarios' certificate: one ECDSA P-256 key and self-signed certificate per run, for all three proxies.

fastingress reads it from a kubernetes.io/tls Secret in the manifests (`secret_manifest`), nginx from
two PEM files and haproxy from one (certificate, then key): the same certificate and key everywhere,
so every full handshake compared signs with the same P-256 key. ECDSA P-256 is what the TLS scenarios
measure: an RSA-2048 certificate would cost each server far more per full handshake (`openssl speed`
on the 2-core benchmark VM: RSA-2048 sign 663 us, ECDSA P-256 sign 23 us).

Must not: start processes or decide how a proxy uses the files (loadtest/configs.py renders that).
"""

from __future__ import annotations

import base64
import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 7  # far longer than a run; short enough that a left-over file is useless soon


@dataclass(frozen=True)
class TLSFiles:
    """The certificate of one run as PEM files; all three proxies serve it."""

    cert: Path  # the certificate (nginx `ssl_certificate`)
    key: Path  # its private key, PKCS#8 (nginx `ssl_certificate_key`)
    bundle: Path  # certificate then key in one file (haproxy `crt`)
    hosts: tuple[str, ...]  # the names it is valid for (its DNS SANs)


def make_certificate(host: str) -> tuple[bytes, bytes]:
    """A new P-256 key and a self-signed certificate for `host` (CN and the one DNS SAN): (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_certificate(directory: Path, host: str) -> TLSFiles:
    """A new certificate for `host` as tls.crt, tls.key and tls.pem (both) in `directory` (mode 0600)."""
    cert_pem, key_pem = make_certificate(host)
    files = TLSFiles(directory / "tls.crt", directory / "tls.key", directory / "tls.pem", (host,))
    for path, data in ((files.cert, cert_pem), (files.key, key_pem), (files.bundle, cert_pem + key_pem)):
        path.write_bytes(data)
        os.chmod(path, 0o600)  # read by the nginx and haproxy masters, which run as we do
    return files


def secret_manifest(name: str, files: TLSFiles) -> str:
    """The kubernetes.io/tls Secret `name` holding the certificate and key of `files` (for fastingress)."""
    crt = base64.b64encode(files.cert.read_bytes()).decode()
    key = base64.b64encode(files.key.read_bytes()).decode()
    return (f"apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: {name}}}\n"
            f"data: {{tls.crt: {crt}, tls.key: {key}}}\n")
