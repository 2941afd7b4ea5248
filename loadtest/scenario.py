"""What a scenario is, and the comparison most of them run: the same load on every proxy, interleaved.

A scenario names its backend response size, its manifests (rendered for fastingress, then compiled
and rendered again for nginx and haproxy by loadtest/configs.py, so all three route the same way),
the wrk load and the servers to compare. Scenarios that measure something else (propagation, churn,
scale) supply their own `run`. A load over HTTPS (`Load.https_host`) makes a TLS scenario: its stage
makes a certificate for that host (loadtest/tls.py), adds its Secret to the manifests, and starts every
server with HTTPS on that certificate.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest import configs, harness
from loadtest.tls import TLSFiles, secret_manifest, write_certificate

Result = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    body_bytes: int = 100
    unique_heads: bool = False  # the backend makes every response head unique (harness.start_backend)
    load: harness.Load = field(default_factory=harness.Load)
    servers: tuple[str, ...] = ("fastingress", "nginx", "haproxy")
    manifests: Callable[[int], str] = configs.simple_manifests  # backend port -> YAML
    run: Callable[[Scenario, harness.Options], Result] | None = None

    @property
    def tls(self) -> bool:
        """The servers terminate TLS for `load.https_host` and are measured over HTTPS."""
        return bool(self.load.https_host)

    @property
    def tools(self) -> tuple[str, ...]:
        """Tools this scenario needs besides harness.TOOLS: a C compiler for wrk's no-resumption shim."""
        return ("cc",) if self.tls and not self.load.resume_tls else ()


@dataclass
class Stage:
    """A backend, the manifests and everything started for one scenario; stops what it started."""

    tmp: Path
    backend_ports: list[int]
    manifests_dir: Path
    routes: list[configs.Route]
    servers: list[harness.Server]
    tls: TLSFiles | None = None  # the certificate every server serves (TLS scenarios)

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


def stage(scenario: Scenario, tmp: Path, backend_ports: int = 1) -> Stage:
    backend, ports = harness.start_backend(tmp, scenario.body_bytes, backend_ports, scenario.unique_heads)
    try:
        manifests = tmp / "manifests"
        manifests.mkdir(exist_ok=True)
        (manifests / "bench.yaml").write_text(scenario.manifests(ports[0]))
        files = None
        if scenario.tls:
            files = write_certificate(tmp, scenario.load.https_host)
            (manifests / "tls-secret.yaml").write_text(secret_manifest(configs.TLS_SECRET, files))
        routes = configs.compiled_routes(manifests)
    except BaseException:
        backend.stop()  # nothing else was started yet, and no Stage exists to stop it
        raise
    return Stage(tmp, ports, manifests, routes, [backend], files)


def start(st: Stage, name: str, opts: harness.Options) -> harness.Server:
    if name == "fastingress":
        server = harness.start_fastingress(st.manifests_dir, opts.python,
                                           https_host=st.tls.hosts[0] if st.tls else "")
    elif name == "nginx":
        server = harness.start_nginx(st.tmp, st.routes, st.tls)
    elif name == "haproxy":
        server = harness.start_haproxy(st.tmp, st.routes, st.tls)
    elif name == "aiohttp":
        server = harness.start_aiohttp(st.backend_ports[0], opts.python)
    else:
        raise ValueError(f"unknown server {name}")
    st.servers.append(server)
    return server


def summarise(scenario: Scenario, rounds: harness.Rounds, extra: Result | None = None) -> Result:
    """Both estimates of every server and fastingress's ratios by each: `best` (the headline: the mean of
    each server's fastest rounds, harness.best) and `median`, which older result files have alone."""
    med, top = harness.medians(rounds), harness.best(rounds)
    return {"name": scenario.name, "description": scenario.description, "rounds": rounds, "median": med,
            "ratios": harness.ratios(med), "best": top, "best_ratios": harness.ratios(top), "extra": extra or {}}


def compare(scenario: Scenario, opts: harness.Options,
            check: Callable[[Scenario, Stage, harness.Options], Result] | None = None) -> Result:
    """The default run: every server of the scenario under the same load, interleaved rounds (summarise).

    `check` runs on the stage first and its facts become the result's `extra` (tls-handshake's probe).
    """
    with tempfile.TemporaryDirectory() as tmpdir:
        st = stage(scenario, Path(tmpdir))
        try:
            extra = check(scenario, st, opts) if check else None
            servers = [start(st, name, opts) for name in scenario.servers]
            rounds = harness.interleave(servers, scenario.load, opts, st.tmp)
        finally:
            st.stop()
    return summarise(scenario, rounds, extra)


def execute(scenario: Scenario, opts: harness.Options) -> Result:
    return (scenario.run or compare)(scenario, opts)
