"""The Kubernetes API misbehaves while traffic flows: not one request may fail, and afterwards the
controller converges (a change made through the API becomes served).

Every test runs a `TrafficLoop` (a keep-alive connection and fresh connections, continuously) against
a stable route and asserts at its end that no request failed, listing each failure with its cause.
The faults: every watch dropped; every watch expired (410) and the history compacted; 500s on every
request for 3 s with the watches dropped so the reflectors meet them; the API server stopped for 10 s
(/readyz stays 200, /healthz reports the source degraded, then ok again).

The tests share one proxy (conftest.py); each starts from a healthy source with every watch open.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.harness import (
    DEADLINE_S,
    POLL_S,
    Backends,
    ProxyFactory,
    TrafficLoop,
    answered_by,
    expose,
    record_latency,
    timed_wait,
    wait_served,
)
from tests.support import kubeobjects as k
from tests.support.apiserver import ApiServer
from tests.support.proxy import ServedProxy

pytestmark = pytest.mark.e2e

STABLE = "stable.test"
REFLECTORS = 5  # IngressClasses, Services, EndpointSlices, Secrets, Ingresses: one watch each
# After a fault ends, a reflector retries within its current backoff step, at most 10 s
# (fastingress/sources/reflector.py BACKOFF_MAX_S), and converges at that attempt; plus a margin.
CONVERGE_S = 15.0
OUTAGE_S = 10.0  # the spec's outage
HEALTHY = {"status": "ok", "sources": {"kube": "ok"}}
DEGRADED = {"status": "degraded", "sources": {"kube": "degraded"}}


@pytest.fixture(scope="module")
def proxy(api: ApiServer, backends: Backends, proxy_factory: ProxyFactory) -> ServedProxy:
    api.create(k.ingress_class())
    expose(api, "stable", STABLE, backends("stable"))
    served = proxy_factory()
    wait_served("the stable route (written before the proxy started)", answered_by(served.http_port, STABLE, "stable"))
    return served


@pytest.fixture
def steady(api: ApiServer, proxy: ServedProxy, traffic: Callable[..., TrafficLoop]) -> TrafficLoop:
    """A healthy source with every watch open, every worker on the current table (/readyz 200: it dips
    for the moments workers take to acknowledge a publish), and traffic flowing on the stable route."""
    api.clear_faults()
    timed_wait(lambda: healthz(proxy) == HEALTHY, "/healthz ok", CONVERGE_S)
    api.wait_for_watches(REFLECTORS, timeout_s=CONVERGE_S)
    timed_wait(lambda: proxy.admin("/readyz")[0] == 200, "/readyz 200")
    return traffic(proxy.http_port, STABLE, "stable")


def healthz(proxy: ServedProxy) -> dict[str, Any]:
    status, body = proxy.admin("/healthz")
    assert status == 200, (status, body)  # liveness never depends on the cluster
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def metric_sum(proxy: ServedProxy, name: str) -> float:
    status, body = proxy.admin("/metrics")
    assert status == 200, body
    return sum(float(line.rpartition(" ")[2]) for line in body.decode().splitlines()
               if line.split("{", 1)[0].split(" ", 1)[0] == name)


def converges(api: ApiServer, proxy: ServedProxy, name: str, timeout_s: float) -> float:
    """A new Ingress (host <name>.test, the stable Service) is written and must become served."""
    api.create(k.ingress(name, f"{name}.test", "stable"))
    served = answered_by(proxy.http_port, f"{name}.test", "stable")
    return wait_served(f"a new Ingress after the fault ({name})", served, timeout_s=timeout_s)


def test_dropped_watches(api: ApiServer, proxy: ServedProxy, steady: TrafficLoop) -> None:
    lists = api.count("list")
    assert api.drop_watches() == REFLECTORS
    converges(api, proxy, "after-drop", DEADLINE_S)
    api.wait_for_watches(REFLECTORS)
    assert api.count("list") == lists, "a dropped watch resumes from its resourceVersion, without a relist"
    steady.assert_no_failures()


def test_expired_watches_and_compaction_force_a_relist(api: ApiServer, proxy: ServedProxy,
                                                       steady: TrafficLoop) -> None:
    relists = metric_sum(proxy, "fastingress_kube_relists_total")
    assert api.expire_watches() == REFLECTORS  # ERROR 410 on every watch
    api.compact()  # and no resourceVersion from before now can be resumed
    converges(api, proxy, "after-410", DEADLINE_S)
    assert metric_sum(proxy, "fastingress_kube_relists_total") >= relists + REFLECTORS
    steady.assert_no_failures()


def test_500s_on_every_request(api: ApiServer, proxy: ServedProxy, steady: TrafficLoop) -> None:
    api.fail_requests(None, for_s=3.0, code=500)
    api.drop_watches()  # the reflectors must come back through the 500s
    timed_wait(lambda: healthz(proxy) == DEGRADED, "/healthz degraded during the 500s")
    converges(api, proxy, "after-500s", CONVERGE_S)  # written during the 500s, served after them
    timed_wait(lambda: healthz(proxy) == HEALTHY, "/healthz ok after the 500s", CONVERGE_S)
    steady.assert_no_failures()


def test_api_server_outage(api: ApiServer, proxy: ServedProxy, steady: TrafficLoop) -> None:
    api.stop()
    started = time.monotonic()
    degraded_after_s: float | None = None
    try:
        while (elapsed := time.monotonic() - started) < OUTAGE_S:  # the outage lasts OUTAGE_S whatever we see
            status, body = proxy.admin("/readyz")
            assert status == 200, f"/readyz {status} {body!r} {elapsed:.2f} s into the outage"
            if degraded_after_s is None and healthz(proxy) == DEGRADED:
                degraded_after_s = elapsed
            time.sleep(POLL_S * 10)
    finally:
        api.start()
    assert degraded_after_s is not None, f"/healthz never reported the source degraded: {healthz(proxy)}"
    record_latency("/healthz degraded after the API server stopped", degraded_after_s)
    converges(api, proxy, "after-outage", CONVERGE_S)
    healthy = timed_wait(lambda: healthz(proxy) == HEALTHY, "/healthz ok after the outage", CONVERGE_S)
    record_latency("/healthz ok again, after the change was served", healthy)
    steady.assert_no_failures()
