"""kubernetes.io/tls Secrets -> CertBundles, and Ingress `spec.tls` -> SNI entries (design.md section 3).

A Secret is usable when its chain parses (first certificate = leaf), its key parses and matches the
leaf's public key, and (when a time is given) the leaf has not expired. The bundle keeps the chain and
the key re-encoded as plain PEM (PKCS#8 key), and its fingerprint is a sha256 over the chain DER and
the key DER: the same Secret content always gives the same fingerprint, and a changed intermediate
gives a new one (workers cache SSLContexts by fingerprint).

Every problem is reported on the Ingress that references the Secret: that is the object a user edits,
and the one whose events they read. A host without a usable certificate simply gets none here (the
workers serve the default certificate). The default certificate's Secret (FASTINGRESS_DEFAULT_TLS_SECRET)
is referenced by no Ingress: its problem is reported on the Secret itself (`DefaultCertificateUnusable`).

Must not: write files, read clocks (`now` is passed in), or depend on dict order.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence

import msgspec
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from fastingress.compiler.types import CertBundle, SniEntry
from fastingress.model.objects import Ingress, Kind, ObjectKey, TLSSecret
from fastingress.model.problems import Problem

_DER = serialization.Encoding.DER
_PEM = serialization.Encoding.PEM
_PKCS8 = serialization.PrivateFormat.PKCS8
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


class CertError(msgspec.Struct, frozen=True):
    """Why a Secret gives no CertBundle: a reason code and a sentence naming the Secret."""

    reason: str
    message: str


def parse_cert_bundle(secret: TLSSecret) -> CertBundle | CertError:
    """Parse and check one Secret; expiry is not checked here (it depends on `now`)."""
    try:
        chain = x509.load_pem_x509_certificates(secret.cert_pem)
    except ValueError:
        return CertError("InvalidCertificate", f"Secret {secret.key}: tls.crt is not a PEM certificate chain")
    try:
        key = serialization.load_pem_private_key(secret.key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return CertError("InvalidCertificate",
                         f"Secret {secret.key}: tls.key is not an unencrypted PEM private key")
    leaf = chain[0]
    try:
        leaf_public = leaf.public_key().public_bytes(_DER, _SPKI)
        names = _dns_names(leaf)
    except (ValueError, UnsupportedAlgorithm):
        return CertError("InvalidCertificate", f"Secret {secret.key}: the certificate cannot be read")
    if key.public_key().public_bytes(_DER, _SPKI) != leaf_public:
        return CertError("KeyMismatch", f"Secret {secret.key}: tls.key does not match the certificate")
    key_der = key.private_bytes(_DER, _PKCS8, serialization.NoEncryption())
    digest = hashlib.sha256(b"".join(cert.public_bytes(_DER) for cert in chain) + key_der)
    return CertBundle(
        secret=secret.key,
        fingerprint=digest.hexdigest(),
        names=names,
        not_after=int(leaf.not_valid_after_utc.timestamp()),
        cert_pem=b"".join(cert.public_bytes(_PEM) for cert in chain),
        key_pem=key.private_bytes(_PEM, _PKCS8, serialization.NoEncryption()),
    )


def _dns_names(leaf: x509.Certificate) -> tuple[str, ...]:
    """DNS SANs, lower-case; the subject CN only when there is no SAN extension (legacy certs)."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        raw: list[str] = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        raw = [str(attr.value) for attr in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(sorted({name.lower() for name in raw}))


def is_host_covered(names: Collection[str], host: str) -> bool:
    """True when a certificate with these SANs (or these SNI names) is valid for `host` (exact or "*.parent")."""
    if host in names:
        return True
    dot = host.find(".")
    # a wildcard SAN covers exactly one more label; a wildcard host needs the same wildcard SAN
    return not host.startswith("*") and dot > 0 and "*" + host[dot:] in names


def check_expiry(bundle: CertBundle, now: int) -> CertError | None:
    """Expired (strictly after not_after) when a time is given; now == 0 skips the check."""
    if now and now > bundle.not_after:
        when = datetime.datetime.fromtimestamp(bundle.not_after, tz=datetime.UTC).isoformat()
        return CertError("CertificateExpired", f"Secret {bundle.secret}: the certificate expired at {when}")
    return None


def compile_tls(
    ingresses: Sequence[Ingress], secrets: Mapping[ObjectKey, TLSSecret], now: int
) -> tuple[tuple[CertBundle, ...], tuple[SniEntry, ...], list[Problem]]:
    """Ingress TLS sections (`ingresses` oldest first) -> used certificates, SNI entries, problems.

    The first (oldest) usable certificate that covers a host is the one served for it.
    """
    parsed: dict[ObjectKey, CertBundle | CertError] = {}
    chosen: dict[str, CertBundle] = {}
    problems: list[Problem] = []
    for ingress in ingresses:
        for i, tls in enumerate(ingress.tls):
            if not tls.secret_name:
                continue  # no Secret named: these hosts get the default certificate, as in ingress-nginx
            field = f"spec.tls[{i}].secretName"
            key = ObjectKey(ingress.key.namespace, tls.secret_name)
            outcome = _load_bundle(key, secrets, parsed, now)
            if isinstance(outcome, CertError):
                problems.append(_problem(ingress, field, outcome.reason, outcome.message))
                continue
            for host, host_field in _tls_hosts(ingress, i):
                if not is_host_covered(outcome.names, host):
                    problems.append(_problem(
                        ingress, host_field, "CertificateHostMismatch",
                        f"Secret {key}: the certificate does not cover host {host!r} (names: "
                        f"{', '.join(outcome.names) or 'none'})"))
                    continue
                chosen.setdefault(host, outcome)
    sni = tuple(sorted(SniEntry(host, bundle.fingerprint) for host, bundle in chosen.items()))
    return _used_certs(chosen.values()), sni, problems


def compile_default_cert(
    secrets: Mapping[ObjectKey, TLSSecret], key: ObjectKey | None, now: int
) -> tuple[CertBundle | None, list[Problem]]:
    """The default certificate's bundle when `key` names a usable Secret; else None and (if named) why.

    Its names are not checked: it is served for any SNI name nothing else covers (and for none).
    """
    if key is None:
        return None, []
    outcome = _load_bundle(key, secrets, {}, now)
    if isinstance(outcome, CertBundle):
        return outcome, []
    return None, [Problem(
        kind=Kind.SECRET, key=key, field="", reason="DefaultCertificateUnusable",
        message=f"the default certificate cannot be used ({outcome.reason}: {outcome.message}); "
                "serving the self-signed one instead")]


def _load_bundle(
    key: ObjectKey, secrets: Mapping[ObjectKey, TLSSecret], parsed: dict[ObjectKey, CertBundle | CertError],
    now: int,
) -> CertBundle | CertError:
    """The Secret's bundle, parsed once per compile, or why it is unusable."""
    if key not in parsed:
        secret = secrets.get(key)
        parsed[key] = (CertError("SecretNotFound", f"Secret {key} not found") if secret is None
                       else parse_cert_bundle(secret))
    outcome = parsed[key]
    if isinstance(outcome, CertBundle):
        return check_expiry(outcome, now) or outcome
    return outcome


def _tls_hosts(ingress: Ingress, index: int) -> list[tuple[str, str]]:
    """(host, field) pairs of spec.tls[index]; an empty host list means every rule host."""
    tls = ingress.tls[index]
    if tls.hosts:
        return [(host.lower(), f"spec.tls[{index}].hosts[{j}]") for j, host in enumerate(tls.hosts)]
    field = f"spec.tls[{index}].secretName"
    hosts = dict.fromkeys(rule.host for rule in ingress.rules if rule.host)  # ordered, unique
    return [(host, field) for host in hosts]


def merge_certs(used: Iterable[CertBundle], default: CertBundle | None) -> tuple[CertBundle, ...]:
    """The certificates of the table: those SNI entries use, plus the default one."""
    return _used_certs([*used, *([default] if default is not None else [])])


def _used_certs(bundles: Iterable[CertBundle]) -> tuple[CertBundle, ...]:
    """Deduplicate by fingerprint (the smallest Secret key names a shared one), sorted by fingerprint."""
    unique: dict[str, CertBundle] = {}
    for bundle in sorted(bundles, key=lambda b: (b.fingerprint, b.secret)):
        unique.setdefault(bundle.fingerprint, bundle)
    return tuple(unique.values())


def _problem(ingress: Ingress, field: str, reason: str, message: str) -> Problem:
    return Problem(kind=Kind.INGRESS, key=ingress.key, field=field, reason=reason, message=message)
