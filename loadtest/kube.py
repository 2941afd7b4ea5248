"""The loadtest's Kubernetes side: the test API server in-process, the objects it is seeded with, a REST
client that writes through it as kubectl would, and the supervisor-log facts used to split a latency.

The API server is the project's own test server (tests/support/apiserver: the real list/watch wire
protocol, aiohttp, on 127.0.0.1, in a thread of this process), and the objects come from
tests/support/kubeobjects.py. loadtest imports them from `tests.support`: loadtest itself is not
installed (pyproject's `packages.find` takes only fastingress* and workers*), so `python -m loadtest`
(and `make bench`) already runs from the repository root, where `tests.support` imports too (`tests`
is a namespace package there; pytest finds it through `pythonpath = ["."]`).

`Cluster` seeds what every API scenario needs: the IngressClass, the Service `be` and EndpointSlices
on the loadtest's shared backend (127.0.0.1: fastingress is started with
FASTINGRESS_ALLOW_LOOPBACK_ENDPOINTS=true, which a real API server would refuse anyway). Changes that
are measured go over HTTP (`RestClient`: one keep-alive connection, JSON, POST to create and PUT to
replace), so the clock includes what a `kubectl apply` costs the API server; bulk seeding uses
`ApiServer.create` (no HTTP), whose writes reach the watches all the same.
"""

from __future__ import annotations

import http.client
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from loadtest import configs
from tests.support import kubeobjects
from tests.support.apiserver import ApiServer, resource

NAMESPACE = "default"
SLICE_PREFIX = f"{configs.SERVICE}-"  # EndpointSlices of the Service `be`: be-0, be-1, ...


def object_path(obj: dict[str, Any], *, named: bool = False) -> str:
    """The REST path of `obj`'s collection (POST), or of the object itself with `named` (PUT, GET)."""
    rt = resource(obj)
    meta = obj.get("metadata") or {}
    path = rt.base_path + (f"/namespaces/{meta.get('namespace') or NAMESPACE}" if rt.namespaced else "")
    path += f"/{rt.plural}"
    return path + f"/{meta['name']}" if named else path


def backend_service() -> dict[str, Any]:
    """The Service every loadtest Ingress points at (port 80 named `http`; its endpoints come from slices)."""
    return kubeobjects.service(configs.SERVICE, port=80, target_port=80)


def backend_slice(index: int, backend_port: int, addresses: list[str] | tuple[str, ...] = ("127.0.0.1",)) -> \
        dict[str, Any]:
    """EndpointSlice `be-<index>` of the Service `be`: `addresses` (none: an empty slice) on `backend_port`."""
    return kubeobjects.endpoint_slice(f"{SLICE_PREFIX}{index}", configs.SERVICE, list(addresses), backend_port)


def host_ingress(name: str, host: str, path: str = "/") -> dict[str, Any]:
    """An Ingress routing `host` (Prefix `path`) to the Service `be` port 80."""
    return kubeobjects.ingress(name, host, configs.SERVICE, path=path)


def default_ingress(name: str = configs.SERVICE) -> dict[str, Any]:
    """An Ingress sending every request, whatever its host, to the Service `be` port 80 (a default backend)."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"ingressClassName": "fastingress",
                     "defaultBackend": {"service": {"name": configs.SERVICE, "port": {"number": 80}}}}}


def bulk_ingresses(count: int, hosts_per_ingress: int = 1) -> Iterator[dict[str, Any]]:
    """`count` Ingresses `bulk-<i>` for hosts bulk-<i>-<j>.bench.example: the objects a big cluster holds."""
    for i in range(count):
        obj = host_ingress(f"bulk-{i}", f"bulk-{i}-0.bench.example")
        rule = obj["spec"]["rules"][0]
        obj["spec"]["rules"] = [{**rule, "host": f"bulk-{i}-{j}.bench.example"} for j in range(hosts_per_ingress)]
        yield obj


class RestClient:
    """Writes to the API server over HTTP/1.1 as a client would: JSON bodies, one keep-alive connection."""

    def __init__(self, port: int, timeout_s: float = 10.0) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)

    def _send(self, method: str, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        self._conn.request(method, path, body=json.dumps(obj).encode(),
                           headers={"Content-Type": "application/json", "Accept": "application/json"})
        resp = self._conn.getresponse()
        body = resp.read()
        if resp.status not in (200, 201):
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {body[:300]!r}")
        out: dict[str, Any] = json.loads(body)
        return out

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._send("POST", object_path(obj), obj)

    def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT without a resourceVersion: an unconditional update, as `kubectl replace` of a fresh object."""
        return self._send("PUT", object_path(obj, named=True), obj)

    def close(self) -> None:
        self._conn.close()


@dataclass
class Cluster:
    """The test API server with the loadtest's objects, a kubeconfig for it and a REST client; a context
    manager that closes all of it."""

    api: ApiServer
    kubeconfig: Path
    rest: RestClient

    @classmethod
    def start(cls, tmp: Path, slices: list[dict[str, Any]], ingresses: list[dict[str, Any]] | None = None) -> Cluster:
        """Seed the IngressClass, the Service `be`, its EndpointSlices (`backend_slice`) and `ingresses`."""
        api = ApiServer().start()
        try:
            for obj in [kubeobjects.ingress_class(), backend_service(), *slices, *(ingresses or [])]:
                api.create(obj)
            kubeconfig = api.write_kubeconfig(Path(tempfile.mkstemp(".kubeconfig", dir=tmp)[1]))
            return cls(api, kubeconfig, RestClient(api.port))
        except BaseException:
            api.close()
            raise

    def env(self) -> dict[str, str]:
        """What fastingress needs to serve from this cluster (on top of the harness's own environment)."""
        return {"KUBECONFIG": str(self.kubeconfig), "FASTINGRESS_ALLOW_LOOPBACK_ENDPOINTS": "true"}

    def close(self) -> None:
        self.rest.close()
        self.api.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


# --- the supervisor's log ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Publish:
    """One "published table generation" line of the supervisor's JSON log."""

    ts: float  # wall-clock seconds (time.time() of the supervisor)
    routes_generation: int
    endpoints_generation: int
    hosts: int
    endpoints: int
    compile_ms: float


_PUBLISHED = re.compile(r"published table generation (\d+)\.(\d+): (\d+) hosts, .*?\b(\d+) endpoints, "
                        r".*compiled in ([\d.]+) ms")


def publishes(lines: Iterable[str]) -> list[Publish]:
    """The table publishes in a supervisor's JSON log, in order; other lines (and non-JSON ones) skipped."""
    out = []
    for line in lines:
        if "published table generation" not in line:
            continue
        try:
            record = json.loads(line)
            match = _PUBLISHED.match(record["msg"])
            if match is None:
                continue
            routes_gen, endpoints_gen, hosts, endpoints, compile_ms = match.groups()
            out.append(Publish(float(record["ts"]), int(routes_gen), int(endpoints_gen), int(hosts), int(endpoints),
                               float(compile_ms)))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def first_publish_after(events: list[Publish], ts: float) -> Publish | None:
    """The first publish at or after wall-clock time `ts`, or None."""
    return next((p for p in events if p.ts >= ts), None)
