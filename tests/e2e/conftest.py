"""Fixtures for the end-to-end tests: the whole controller (`fastingress serve`: the supervisor,
2 workers and the Kubernetes source) against the test Kubernetes API server (tests/support/apiserver),
with real backends and real HTTP and HTTPS clients. No mocks; the helpers are in harness.py.

Scope: a proxy needs about 3 s to start (imports, then workers) and the e2e budget is about a minute,
so the API server, its kubeconfig, the backends and the proxies live for one test *module*; the tests
of a module share them, and each test uses object names and hosts of its own. Traffic loops live for
one test.

- `api`: an `ApiServer`; `kubeconfig`: its kubeconfig file, in the module's temporary directory.
- `backends(name)`: a `RecordingBackend` answering "<name> GET /path" (closed at the module's end).
- `proxy_factory(env=...)`: a ready `ServedProxy` on the kubeconfig, loopback endpoints allowed;
  every process it started, workers included, is stopped by PID at the module's end.
- `traffic(port, host, backend)`: a running `TrafficLoop`, stopped at the end of the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import LATENCIES, TRAFFIC, Backends, ProxyFactory, TrafficLoop
from tests.support.apiserver import ApiServer


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if LATENCIES:
        terminalreporter.section("e2e latencies (API write -> served)")
        for test, what, seconds in LATENCIES:
            terminalreporter.write_line(f"{seconds * 1000:8.1f} ms  {test}: {what}")
    if TRAFFIC:
        terminalreporter.section("e2e traffic loops")
        for line in TRAFFIC:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


@pytest.fixture(scope="module")
def kubeconfig(api: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return api.write_kubeconfig(tmp_path_factory.mktemp("e2e") / "kubeconfig")


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    made = Backends()
    yield made
    made.close()


@pytest.fixture(scope="module")
def proxy_factory(kubeconfig: Path) -> Iterator[ProxyFactory]:
    factory = ProxyFactory(kubeconfig)
    yield factory
    factory.close()


@pytest.fixture
def traffic() -> Iterator[Callable[..., TrafficLoop]]:
    loops: list[TrafficLoop] = []

    def start(port: int, host: str, backend: str, path: str = "/traffic") -> TrafficLoop:
        loops.append(TrafficLoop(port, host, backend, path))
        return loops[-1]

    yield start
    for loop in loops:
        loop.stop()
