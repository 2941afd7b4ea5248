"""The supervisor as a real process (`python -m fastingress.supervisor.main`) with FAKE workers.

The workers are `tests/integration/fake_worker.py`, real processes honouring the worker contract
(slot, ack, heartbeat, signals) without proxying, so these tests exercise the arbiter, the admin
server and the shared-memory lifecycle on their own. Everything waits with deadlines and polling.
"""

from __future__ import annotations

import base64
import json
import os
import re
import selectors
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.integration.conftest import listening_inodes
from tests.support.certs import make_cert

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEADLINE_S = 15.0  # generous for a loaded machine; a healthy run needs well under a second per step
T = TypeVar("T")



def tls_secret_yaml(name: str, namespace: str, cert: bytes, key: bytes) -> str:
    return (f"apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
            f"type: kubernetes.io/tls\ndata:\n  tls.crt: {base64.b64encode(cert).decode()}\n"
            f"  tls.key: {base64.b64encode(key).decode()}\n")


CERT, KEY = make_cert(["secure.example.com"])
MANIFESTS = f"""\
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations: {{fastingress.io/endpoints: "127.0.0.1"}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
{tls_secret_yaml("tls", "default", CERT, KEY)}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: default}}
spec:
  ingressClassName: fastingress
  tls: [{{hosts: [secure.example.com], secretName: tls}}]
  rules:
  - host: secure.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{name: http}}}}}}}}
"""
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def wait_for(check: Callable[[], T | None], what: str, log: Callable[[], str] = str) -> T:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; supervisor log:\n{log()[-4000:]}")


class Running:
    """A supervisor process, its ports and its log."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        lines = self._read_lines(2)
        m = re.match(r"fastingress: http on 127\.0\.0\.1:(\d+), admin on 127\.0\.0\.1:(\d+)$", lines[0])
        assert m, lines
        self.http_port, self.admin_port = int(m.group(1)), int(m.group(2))
        assert re.match(r"fastingress: https on 127\.0\.0\.1:\d+$", lines[1]), lines

    def _read_lines(self, count: int) -> list[str]:
        """The first `count` stdout lines, read unbuffered so that select() sees what is left."""
        assert self.proc.stdout is not None
        fd, data = self.proc.stdout.fileno(), b""
        deadline = time.monotonic() + DEADLINE_S
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while data.count(b"\n") < count:
                assert sel.select(max(0.0, deadline - time.monotonic())), f"no port lines; log:\n{self.log()}"
                chunk = os.read(fd, 4096)
                assert chunk, f"stdout closed; log:\n{self.log()}"
                data += chunk
        return data.decode().splitlines()[:count]

    def log(self) -> str:
        return self.log_path.read_text()

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metric(self, sample: str) -> float | None:
        _, body = self.get("/metrics")
        for line in body.decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.split(" ")[1])
        return None

    def workers(self) -> set[int]:
        """Live (non-zombie) child processes of the supervisor, from /proc."""
        pids = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                state, ppid = stat.rsplit(")", 1)[1].split()[:2]
                if int(ppid) == self.proc.pid and state != "Z":
                    pids.add(int(entry))
        return pids

    def workers_if(self, check: Callable[[set[int]], bool]) -> set[int] | None:
        pids = self.workers()
        return pids if check(pids) else None

    def running(self) -> float | None:
        return self.metric('fastingress_workers{state="running"}')

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    directory = tmp_path / "manifests"
    directory.mkdir()
    (directory / "site.yaml").write_text(MANIFESTS)
    return directory


def start(tmp_path: Path, manifests: Path, command: tuple[str, ...] = ("fastingress.supervisor.main",),
          **overrides: str) -> Running:
    env = {**os.environ, "PYTHONPATH": str(REPO), "FASTINGRESS_MANIFESTS_DIR": str(manifests),
           "FASTINGRESS_MANIFESTS_POLL_S": "0.05", "FASTINGRESS_HTTP_PORT": "0", "FASTINGRESS_HTTPS_PORT": "0",
           "FASTINGRESS_ADMIN_PORT": "0", "FASTINGRESS_ADMIN_ADDRESS": "127.0.0.1",
           "FASTINGRESS_BIND_ADDRESS": "127.0.0.1", "FASTINGRESS_WORKERS": "2", "FASTINGRESS_DRAIN_TIMEOUT_S": "2",
           "FASTINGRESS_WORKER_MODULE": "tests.integration.fake_worker", "FASTINGRESS_LOG_FORMAT": "text",
           **overrides}
    log_path = tmp_path / "supervisor.log"
    proc = subprocess.Popen([sys.executable, "-m", *command], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=log_path.open("wb"))
    try:
        return Running(proc, log_path)
    except BaseException:  # never leave a supervisor (and its workers) behind
        proc.kill()
        proc.wait()
        raise


@pytest.fixture
def supervisor(tmp_path: Path, manifests: Path) -> Iterator[Running]:
    running = start(tmp_path, manifests)
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait()


def shm_leftovers(pid: int) -> list[str]:
    """Table segments, stats and key directories the supervisor `pid` left in /dev/shm."""
    return [name for name in os.listdir("/dev/shm")
            if name.startswith((f"fastingress-{pid}-", f"fastingress-keys-{pid}-"))]


def check_admin_endpoints(sup: Running) -> None:
    wait_for(sup.ready, "/readyz 200", sup.log)
    status, body = sup.get("/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok", "sources": {"manifests": "ok"}}
    assert sup.get("/nope")[0] == 404
    status, body = sup.get("/metrics")
    assert status == 200
    typed = {line.split()[2] for line in body.decode().splitlines() if line.startswith("# TYPE ")}
    for line in body.decode().splitlines():
        if not line.startswith("#"):
            m = _SAMPLE.match(line)
            assert m and re.sub(r"_(bucket|sum|count)$", "", m.group(1)) in typed | {m.group(1)}, line
            float(m.group(3))
    assert sup.metric("fastingress_table_routes_generation") == 1
    requests = wait_for(lambda: sup.metric('fastingress_http_requests_total{code_class="2xx"}'), "stats", sup.log)
    assert requests >= 1
    status, body = sup.get("/debug/routes")
    assert status == 200
    certs = json.loads(body)["config"]["certificates"]
    assert len(certs) == 1 and certs[0]["fingerprint"]
    assert b"PRIVATE KEY" not in body and base64.b64encode(KEY) not in body and KEY.split(b"\n")[1] not in body


def test_supervisor_lifecycle(supervisor: Running) -> None:
    sup = supervisor
    assert sup.http_port != 0 and sup.admin_port != 0
    check_admin_endpoints(sup)
    first = wait_for(lambda: sup.workers_if(lambda p: len(p) == 2), "2 workers", sup.log)
    # one listening socket per worker, owned by the supervisor: replacements inherit them
    sockets = wait_for(lambda: (lambda s: s if len(s) == 2 else None)(listening_inodes(sup.http_port)),
                       "2 listening sockets", sup.log)

    victim = min(first)  # a crash: replaced in a new process, counted once
    os.kill(victim, signal.SIGKILL)
    second = wait_for(lambda: sup.workers_if(lambda p: len(p) == 2 and victim not in p), "a replacement", sup.log)
    assert sup.metric("fastingress_worker_restarts_total") == 1, sup.log()
    wait_for(sup.ready, "ready after the crash", sup.log)
    assert listening_inodes(sup.http_port) == sockets  # the crashed worker's socket (and queue) stayed

    os.kill(sup.proc.pid, signal.SIGTTIN)
    wait_for(lambda: sup.running() == 3 and len(sup.workers()) == 3, "3 workers", sup.log)
    wait_for(lambda: len(listening_inodes(sup.http_port) - sockets) == 1, "a third socket", sup.log)
    os.kill(sup.proc.pid, signal.SIGTTOU)
    wait_for(lambda: sup.running() == 2 and len(sup.workers()) == 2, "2 workers", sup.log)
    wait_for(lambda: len(listening_inodes(sup.http_port)) == 2, "the retired worker's socket closed", sup.log)
    sockets = listening_inodes(sup.http_port)

    before = sup.workers()
    os.kill(sup.proc.pid, signal.SIGHUP)
    statuses = []

    def rolled() -> bool:
        statuses.append(sup.get("/readyz")[0])
        now = sup.workers()
        return len(now) == 2 and not now & before and sup.running() == 2

    wait_for(rolled, "a rolling restart", sup.log)
    assert set(statuses) == {200}, (statuses, sup.log())
    assert listening_inodes(sup.http_port) == sockets  # no socket was closed, so no queue was reset
    assert sup.metric("fastingress_worker_restarts_total") == 1  # a roll is not a crash

    os.kill(sup.proc.pid, signal.SIGTERM)
    assert sup.proc.wait(DEADLINE_S) == 0
    assert shm_leftovers(sup.proc.pid) == []
    log = sup.log()
    assert "killed by SIGKILL (OOM killer?)" in log and "rolling restart complete" in log, log
    assert second != first


def test_a_port_taken_halts_the_supervisor(tmp_path: Path, manifests: Path) -> None:
    with socket.socket() as taken:  # the port is held without SO_REUSEPORT: the listeners' bind fails
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sup = start(tmp_path, manifests, FASTINGRESS_HTTP_PORT=str(port))
        try:
            code = sup.proc.wait(DEADLINE_S)
        finally:
            if sup.proc.poll() is None:
                sup.proc.kill()
    assert code == 4, sup.log()  # ExitCode.BOOT_FAILED
    assert re.search(rf"ERROR .*halting: cannot bind 127.0.0.1:{port}: Address already in use", sup.log()), sup.log()
    assert "worker 1 started" not in sup.log()  # no worker was started only to fail
    assert shm_leftovers(sup.proc.pid) == []


FALLBACK_CERT, FALLBACK_KEY = make_cert(["fallback.example"])
FALLBACK_SECRET = "---\n" + tls_secret_yaml("fallback", "ingress", FALLBACK_CERT, FALLBACK_KEY)


def keys_dir_of(pid: int) -> str | None:
    """The `--keys DIR` argument of a worker process, from /proc/<pid>/cmdline."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return argv[argv.index(b"--keys") + 1].decode() if b"--keys" in argv else None


def fingerprints(sup: Running) -> dict[str, str]:
    """Secret -> fingerprint of the certificates of the current table (/debug/routes)."""
    status, body = sup.get("/debug/routes")
    assert status == 200
    return {c["secret"]: c["fingerprint"] for c in json.loads(body)["config"]["certificates"]}


def test_certificate_files_for_workers(tmp_path: Path, manifests: Path) -> None:
    """`fastingress serve`: a private key directory, files by fingerprint (0600) before the table, reclaimed
    once the workers moved on, passed as --keys to every worker, and gone after SIGTERM."""
    (manifests / "fallback.yaml").write_text(FALLBACK_SECRET)  # referenced by no Ingress, only by the setting
    parent = tmp_path / "keys-parent"
    parent.mkdir()
    sup = start(tmp_path, manifests, ("fastingress", "serve", "--manifests", str(manifests)),
                FASTINGRESS_DEFAULT_TLS_SECRET="ingress/fallback", FASTINGRESS_TLS_KEYS_DIR=str(parent))
    try:
        wait_for(sup.ready, "/readyz 200", sup.log)
        workers = wait_for(lambda: sup.workers_if(lambda p: len(p) == 2), "2 workers", sup.log)
        dirs = {keys_dir_of(pid) for pid in workers}
        assert len(dirs) == 1, dirs
        keys = Path(dirs.pop() or "")
        assert keys.parent == parent and keys.name.startswith(f"fastingress-keys-{sup.proc.pid}-")
        assert f"certificate files in {keys}" in sup.log()
        assert "default certificate is self-signed" not in sup.log()  # a default Secret is configured
        assert stat.S_IMODE(keys.stat().st_mode) == 0o700 and keys.stat().st_uid == os.getuid()
        fps = fingerprints(sup)
        assert set(fps) == {"default/tls", "ingress/fallback"}
        _, body = sup.get("/debug/routes")
        assert json.loads(body)["config"]["default_certificate"] == fps["ingress/fallback"]
        expected = ["self-signed.pem", "ticket.key", *(f"{fp}.pem" for fp in fps.values())]
        assert sorted(p.name for p in keys.iterdir()) == sorted(expected)
        for pem in keys.iterdir():
            assert stat.S_IMODE(pem.stat().st_mode) == 0o600, pem
            if pem.suffix == ".pem":
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(pem))
        assert (keys / f"{fps['default/tls']}.pem").read_bytes().startswith(CERT)
        expiry = sup.metric(f'fastingress_tls_certificate_expiry_seconds{{secret="default/tls",'
                            f'fingerprint="{fps["default/tls"]}"}}')
        assert expiry is not None and expiry > 365 * 86400

        # the Ingress drops its TLS section: its file goes once both workers acknowledged the new table
        site = MANIFESTS.replace("  tls: [{hosts: [secure.example.com], secretName: tls}]\n", "")
        (manifests / "site.yaml").write_text(site)
        wait_for(lambda: not (keys / f"{fps['default/tls']}.pem").exists(), "the unused file removed", sup.log)
        assert fingerprints(sup) == {"ingress/fallback": fps["ingress/fallback"]}
        assert sorted(p.name for p in keys.iterdir()) == sorted(
            ["self-signed.pem", "ticket.key", f"{fps['ingress/fallback']}.pem"])
        assert "missing certificate file" not in sup.log()  # no worker ever saw a table before its files

        os.kill(sup.proc.pid, signal.SIGTERM)
        assert sup.proc.wait(DEADLINE_S) == 0
        assert not keys.exists() and list(parent.iterdir()) == []
        assert shm_leftovers(sup.proc.pid) == []
    finally:
        if sup.proc.poll() is None:
            sup.proc.kill()
            sup.proc.wait()


def test_self_signed_default_is_announced_and_removed_on_halt(tmp_path: Path, manifests: Path) -> None:
    with socket.socket() as taken:  # every worker's bind fails: the supervisor halts
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sup = start(tmp_path, manifests, FASTINGRESS_HTTP_PORT=str(port))
        try:
            assert sup.proc.wait(DEADLINE_S) == 4, sup.log()
        finally:
            if sup.proc.poll() is None:
                sup.proc.kill()
    log = sup.log()
    assert re.search(r"WARNING .*default certificate is self-signed.*FASTINGRESS_DEFAULT_TLS_SECRET", log), log
    m = re.search(r"certificate files in (\S+)", log)
    assert m and m.group(1).startswith("/dev/shm/fastingress-keys-"), log
    assert not os.path.exists(m.group(1)) and shm_leftovers(sup.proc.pid) == []
