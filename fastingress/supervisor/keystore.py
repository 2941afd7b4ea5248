"""`KeyStore`: the supervisor's private directory of certificate files, one per fingerprint, for the workers.

Why files: `ssl.SSLContext.load_cert_chain` takes only paths (loading from memory is still open,
CPython gh-60691), so the certificates and keys the table names by fingerprint must be on disk when a
worker first needs them (design.md section 2). Keys must never sit in world-readable memory, so:

- *The directory* is made by `tempfile.mkdtemp` (mode 0700, owned by the supervisor's user) under
  FASTINGRESS_TLS_KEYS_DIR, else /dev/shm when it exists (tmpfs: keys never reach a disk), else the
  system temp directory. Its name is `fastingress-keys-<pid>-<random>`: a supervisor removes the
  directories of supervisors whose pid is gone (a SIGKILL leaves them behind), as `TableWriter` does
  with its segments. Workers receive its path as `--keys DIR`.
- *A file* `<fingerprint>.pem` holds the chain PEM followed by the key PEM (the one-file form
  `load_cert_chain(path)` accepts), mode 0600. It is written to a temporary name in the same
  directory (O_CREAT|O_EXCL, 0600 from the first byte) and renamed into place, so a worker never
  reads half a file. No fsync: the files are worthless after a crash (the directory is removed or
  swept), and on tmpfs it is a no-op anyway. Content never changes under a name: the fingerprint is
  a hash of that content.
- *`self-signed.pem`* is generated at every start (EC P-256, one year): the workers' fallback
  certificate, served when no SNI entry matches and no usable default Secret is configured.
- *`ticket.key`* holds 80 random bytes made at every start: the TLS session-ticket keys all workers
  share (workers/tls.py), so a client resumes its session on whichever worker its next connection
  reaches, as nginx's workers share the keys their master made before forking. They live as long as
  the supervisor (nginx without `ssl_session_ticket_key` does the same); a restart rotates them.

Theory of operation (ordering and reclamation, RCU-style like the table segments):
1. `write(config.certs)` runs before the table that names them is published (`Reconciler`), so a
   worker can never see a fingerprint whose file is missing.
2. `published(generation, fingerprints)` records which files each routes generation names.
3. `reclaim(oldest)` is called by the main loop with the oldest routes generation a live worker may
   still serve (the smallest acknowledged one; 0 while a worker has not acknowledged any, which
   keeps everything). Files named by that generation or any later one stay; the rest are removed.
   A worker that acknowledged generation N no longer reads older tables, so no handshake can ask it
   for a certificate only older generations named. Contexts it already built do not need the file.
4. `close()` removes the directory and everything in it (the supervisor's `finally`, after the
   workers are gone).

Must not: log key material or PEM bodies, be used from more than one thread (the main loop owns
it), or follow symlinks out of its directory (every name is a hex fingerprint or a fixed name).
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Collection, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastingress.compiler.types import CertBundle
from fastingress.settings import env_name
from fastingress.table.shm import pid_alive

log = logging.getLogger(__name__)

DIR_PREFIX = "fastingress-keys-"
SELF_SIGNED = "self-signed.pem"  # the workers' fallback certificate (a fixed name: never a fingerprint)
TICKET_KEYS = "ticket.key"  # session-ticket keys shared by the workers (a fixed name)
TICKET_KEYS_LEN = 80  # OpenSSL's SSL_CTRL_SET_TLSEXT_TICKET_KEYS: name 16, HMAC 32, AES 32
PEM_SUFFIX = ".pem"
SHM_DIR = "/dev/shm"
# the generated certificate: its CN says what it is in a browser's warning (ingress-nginx names its own
# "Kubernetes Ingress Controller Fake Certificate"); its only SAN is under .invalid (RFC 2606), so it
# can never be valid for a real name, whatever a client trusts
SELF_SIGNED_CN = "fastingress default certificate"
SELF_SIGNED_SAN = "fastingress.invalid"
SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)  # as ingress-nginx's fake certificate; a restart renews it
CLOCK_SKEW = datetime.timedelta(hours=1)  # not_before is backdated so clients with a slow clock accept it
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")  # sha256 hex (compiler.certs)
_DIR_NAME = re.compile(r"^" + re.escape(DIR_PREFIX) + r"(\d+)-")


def default_parent() -> str:
    """Where the key directory goes when FASTINGRESS_TLS_KEYS_DIR is empty: tmpfs when there is one."""
    return SHM_DIR if os.path.isdir(SHM_DIR) else tempfile.gettempdir()


class KeyStore:
    """The private directory of PEM files; see the module docstring."""

    def __init__(self, parent: str = "") -> None:
        parent = parent or default_parent()
        remove_stale_key_dirs(parent)
        self.path = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=parent)
        os.chmod(self.path, 0o700)  # mkdtemp already does; stated, not assumed
        self._written: set[str] = set()  # fingerprints whose file exists
        self._generations: dict[int, frozenset[str]] = {}  # routes generation -> the fingerprints it names
        self._floor = -1  # the oldest generation kept by the last reclaim
        self.closed = False

    def pem_path(self, fingerprint: str) -> str:
        """The file of one certificate (what workers open: `<keys>/<fingerprint>.pem`)."""
        return os.path.join(self.path, fingerprint + PEM_SUFFIX)

    @property
    def self_signed_path(self) -> str:
        return os.path.join(self.path, SELF_SIGNED)

    def written(self) -> frozenset[str]:
        """The fingerprints whose files exist now."""
        return frozenset(self._written)

    def write(self, bundles: Iterable[CertBundle]) -> list[str]:
        """Write the files of the bundles not written yet; the fingerprints written."""
        new = []
        for bundle in bundles:
            fp = bundle.fingerprint
            if fp in self._written:
                continue
            if not _FINGERPRINT.match(fp):
                raise ValueError(f"not a certificate fingerprint: {fp!r}")
            self._write_file(self.pem_path(fp), bundle.cert_pem + _newline(bundle.cert_pem) + bundle.key_pem)
            self._written.add(fp)
            new.append(fp)
        return new

    def ensure_self_signed(self, warn: bool = True) -> str:
        """Generate `self-signed.pem` once; its path. `warn`: no default Secret is configured."""
        path = self.self_signed_path
        if not os.path.exists(path):
            cert_pem, key_pem = generate_self_signed(datetime.datetime.now(datetime.UTC))
            self._write_file(path, cert_pem + key_pem)
        if warn:
            log.warning("the default certificate is self-signed (served when no certificate matches the SNI "
                        "name); name a kubernetes.io/tls Secret in %s to serve a real one",
                        env_name("default_tls_secret"), extra={"reason": "SelfSignedDefaultCertificate"})
        return path

    def ensure_ticket_keys(self) -> str:
        """Generate `ticket.key` once (random bytes); its path."""
        path = os.path.join(self.path, TICKET_KEYS)
        if not os.path.exists(path):
            self._write_file(path, secrets.token_bytes(TICKET_KEYS_LEN))
        return path

    def retain(self, fingerprints: Collection[str]) -> list[str]:
        """Remove the `<fingerprint>.pem` files not in `fingerprints`; the fingerprints removed."""
        gone = sorted(self._written.difference(fingerprints))
        for fp in gone:
            _unlink(self.pem_path(fp))
            self._written.discard(fp)
        return gone

    def published(self, generation: int, fingerprints: Iterable[str]) -> None:
        """Record the fingerprints routes generation `generation` names (after it was published)."""
        self._generations[generation] = frozenset(fingerprints)

    def reclaim(self, oldest: int) -> list[str]:
        """Drop what no generation from `oldest` on names (`oldest`: the oldest one a live worker
        may serve); the newest recorded generation is always kept. The fingerprints removed."""
        if not self._generations:
            return []
        floor = min(oldest, max(self._generations))
        if floor == self._floor:
            return []  # called every tick: with the same floor, publishes since only added files to keep
        self._floor = floor
        self._generations = {g: fps for g, fps in self._generations.items() if g >= floor}
        keep = frozenset().union(*self._generations.values())
        gone = self.retain(keep)
        if gone:
            log.debug("removed %d certificate files no worker can need any more", len(gone),
                      extra={"generation": oldest, "count": len(gone)})
        return gone

    def close(self) -> None:
        """Remove the directory and every file in it (idempotent)."""
        if self.closed:
            return
        self.closed = True
        shutil.rmtree(self.path, ignore_errors=True)
        self._written.clear()
        self._generations.clear()

    def _write_file(self, path: str, data: bytes) -> None:
        """`data` at `path`, atomically, mode 0600 from creation (the umask can only narrow it)."""
        tmp = os.path.join(self.path, f".tmp-{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            _unlink(tmp)
            raise
        os.close(fd)
        os.rename(tmp, path)


def generate_self_signed(now: datetime.datetime) -> tuple[bytes, bytes]:
    """(certificate PEM, PKCS#8 key PEM) of a fresh self-signed EC P-256 server certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SELF_SIGNED_CN)])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + SELF_SIGNED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SELF_SIGNED_SAN)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def remove_stale_key_dirs(parent: str) -> list[str]:
    """Remove key directories of our user left by supervisors that no longer run; their names."""
    removed: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        m = _DIR_NAME.match(name)
        if not m or int(m.group(1)) == os.getpid() or pid_alive(int(m.group(1))):
            continue
        path = os.path.join(parent, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if st.st_uid == os.getuid() and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed


def _newline(pem: bytes) -> bytes:
    """A newline when the chain does not end with one, so the key's BEGIN line starts a line."""
    return b"" if pem.endswith(b"\n") else b"\n"


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
