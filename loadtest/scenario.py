"""What a scenario is, and the comparison most of them run: the same load on every proxy, interleaved.

A scenario names its backend response size, its manifests (rendered for fastingress, then compiled
and rendered again for nginx and haproxy by loadtest/configs.py, so all three route the same way),
the wrk load and the servers to compare. Scenarios that measure something else (propagation, churn,
scale) supply their own `run`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest import configs, harness

Result = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    body_bytes: int = 100
    load: harness.Load = field(default_factory=harness.Load)
    servers: tuple[str, ...] = ("fastingress", "nginx", "haproxy")
    manifests: Callable[[int], str] = configs.simple_manifests  # backend port -> YAML
    run: Callable[[Scenario, harness.Options], Result] | None = None


@dataclass
class Stage:
    """A backend, the manifests and everything started for one scenario; stops what it started."""

    tmp: Path
    backend_ports: list[int]
    manifests_dir: Path
    routes: list[configs.Route]
    servers: list[harness.Server]

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


def stage(scenario: Scenario, tmp: Path, backend_ports: int = 1) -> Stage:
    backend, ports = harness.start_backend(tmp, scenario.body_bytes, backend_ports)
    manifests = tmp / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "bench.yaml").write_text(scenario.manifests(ports[0]))
    return Stage(tmp, ports, manifests, configs.compiled_routes(manifests), [backend])


def start(st: Stage, name: str, opts: harness.Options) -> harness.Server:
    if name == "fastingress":
        server = harness.start_fastingress(st.manifests_dir, opts.python)
    elif name == "nginx":
        server = harness.start_nginx(st.tmp, st.routes)
    elif name == "haproxy":
        server = harness.start_haproxy(st.tmp, st.routes)
    elif name == "aiohttp":
        server = harness.start_aiohttp(st.backend_ports[0], opts.python)
    else:
        raise ValueError(f"unknown server {name}")
    st.servers.append(server)
    return server


def summarise(scenario: Scenario, rounds: dict[str, list[dict[str, float]]], extra: Result | None = None) -> Result:
    med = harness.medians(rounds)
    return {"name": scenario.name, "description": scenario.description, "rounds": rounds, "median": med,
            "ratios": harness.ratios(med), "extra": extra or {}}


def compare(scenario: Scenario, opts: harness.Options) -> Result:
    """The default run: every server of the scenario under the same load, interleaved rounds, medians."""
    with tempfile.TemporaryDirectory() as tmpdir:
        st = stage(scenario, Path(tmpdir))
        try:
            servers = [start(st, name, opts) for name in scenario.servers]
            rounds = harness.interleave(servers, scenario.load, opts, st.tmp)
        finally:
            st.stop()
    return summarise(scenario, rounds)


def execute(scenario: Scenario, opts: harness.Options) -> Result:
    return (scenario.run or compare)(scenario, opts)
