"""Traffic follows the cluster: API writes become served routes, end to end through the real supervisor
and 2 workers (`fastingress serve` on the test API server's kubeconfig).

Each change must be served within `DEADLINE_S` (5 s; the smoke run measured ~70 ms); the latency of
every change is listed in the terminal summary. "Served" means an unbroken streak of answers on fresh
connections for 100 ms (harness.py `wait_served`), so both workers serve it. A negative ("not
served") is checked after a later write that is served, so it is known to have been processed: the
Kubernetes source delivers one kind's events in order and the table is compiled from one snapshot.

The tests share one proxy and one API server (conftest.py); each uses its own names and hosts.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.harness import (
    CONFIRM,
    Backends,
    ProxyFactory,
    answered_by,
    answers_status,
    der,
    endpoint_slice,
    expose,
    http_get,
    https_get,
    served_cert,
    wait_served,
)
from tests.support import kubeobjects as k
from tests.support.apiserver import ApiServer
from tests.support.certs import make_cert
from tests.support.proxy import ServedProxy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def proxy(api: ApiServer, proxy_factory: ProxyFactory) -> ServedProxy:
    api.create(k.ingress_class())  # "fastingress", our controller
    return proxy_factory()


def two_port_service(name: str, ports: list[tuple[str, int, int]]) -> dict[str, Any]:
    """A Service with (name, port, targetPort) ports."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "ClusterIP", "ports": [{"name": n, "port": p, "targetPort": t} for n, p, t in ports]}}


def test_endpoint_slice_changes_are_followed(api: ApiServer, backends: Backends, proxy: ServedProxy) -> None:
    a, b, c = backends.same_port(["ep-a", "ep-b", "ep-c"])  # 127.0.0.1, .2, .3 on one port
    port = {"http": a.port}
    api.create(k.service("ep"))
    api.create(endpoint_slice("ep-1", "ep", [("127.0.0.1", True)], port))
    api.create(k.ingress("ep", "ep.test", "ep"))
    wait_served("a new Ingress, Service and EndpointSlice", answered_by(proxy.http_port, "ep.test", "ep-a"))

    api.update(endpoint_slice("ep-1", "ep", [("127.0.0.2", True)], port))
    wait_served("the EndpointSlice moved to another backend", answered_by(proxy.http_port, "ep.test", "ep-b"))

    api.update(endpoint_slice("ep-1", "ep", [("127.0.0.1", True), ("127.0.0.2", True), ("127.0.0.3", True)], port))
    seen: set[str] = set()

    def every_endpoint_answers() -> tuple[bool, str]:
        reply = http_get(proxy.http_port, "ep.test", "/rr")
        seen.add(reply.body.split(b" ", 1)[0].decode(errors="replace") if reply.status == 200 else str(reply.status))
        return {"ep-a", "ep-b", "ep-c"} <= seen, f"answers from {sorted(seen)}"
    wait_served("three endpoints, round robin reaches each", every_endpoint_answers, confirm=1, confirm_s=0)

    api.update(endpoint_slice("ep-1", "ep", [("127.0.0.1", False), ("127.0.0.2", True), ("127.0.0.3", False)], port))
    wait_served("endpoints no longer ready", answered_by(proxy.http_port, "ep.test", "ep-b"))
    before = len(a.requests), len(b.requests), len(c.requests)
    answers = [http_get(proxy.http_port, "ep.test", "/ready-only") for _ in range(20)]
    assert [r.body for r in answers] == [b"ep-b GET /ready-only\n"] * 20
    assert (len(a.requests), len(b.requests), len(c.requests)) == (before[0], before[1] + 20, before[2]), \
        "a not-ready endpoint received requests"

    api.update(endpoint_slice("ep-1", "ep", [], port))
    wait_served("no endpoints left: 503", answers_status(proxy.http_port, "ep.test", 503))

    api.update(endpoint_slice("ep-1", "ep", [("127.0.0.3", True)], port))
    wait_served("an endpoint again", answered_by(proxy.http_port, "ep.test", "ep-c"))


def test_service_port_changes_are_followed(api: ApiServer, backends: Backends, proxy: ServedProxy) -> None:
    """The Ingress names Service port 80; which endpoint port that is goes by the Service port's name."""
    a, b = backends("svc-a"), backends("svc-b")
    api.create(two_port_service("svc", [("http", 80, 8080), ("alt", 81, 8081)]))
    api.create(endpoint_slice("svc-1", "svc", [("127.0.0.1", True)], {"http": a.port, "alt": b.port}))
    api.create(k.ingress("svc", "svc.test", "svc", port=80))
    wait_served("Service port 80 is 'http'", answered_by(proxy.http_port, "svc.test", "svc-a"))

    api.update(two_port_service("svc", [("alt", 80, 8081), ("http", 81, 8080)]))
    wait_served("Service port 80 retargeted to 'alt'", answered_by(proxy.http_port, "svc.test", "svc-b"))

    api.update(two_port_service("svc", [("alt", 8000, 8081), ("http", 81, 8080)]))
    wait_served("Service port 80 gone: 503", answers_status(proxy.http_port, "svc.test", 503))

    api.update(k.ingress("svc", "svc.test", "svc", port=8000))
    wait_served("the Ingress follows to port 8000", answered_by(proxy.http_port, "svc.test", "svc-b"))


def test_ingress_edits_and_deletion_are_followed(api: ApiServer, backends: Backends, proxy: ServedProxy) -> None:
    expose(api, "edit", "edit-v1.test", backends("edit"), path="/v1")
    wait_served("a new Ingress", answered_by(proxy.http_port, "edit-v1.test", "edit", "/v1/x"))

    api.update(k.ingress("edit", "edit-v2.test", "edit", path="/v2"))
    new_served, old_gone = (answered_by(proxy.http_port, "edit-v2.test", "edit", "/v2/x"),
                            answers_status(proxy.http_port, "edit-v1.test", 404, "/v1/x"))

    def moved() -> tuple[bool, str]:
        (new_ok, new_seen), (old_ok, old_seen) = new_served(), old_gone()
        return new_ok and old_ok, f"new host and path: {new_seen}; old: {old_seen}"
    wait_served("the new host and path 200, the old 404", moved)
    assert http_get(proxy.http_port, "edit-v2.test", "/v1/x").status == 404

    api.delete("ingresses", "edit")
    wait_served("the deleted Ingress: 404", answers_status(proxy.http_port, "edit-v2.test", 404, "/v2/x"))


def test_ingress_class_decides_what_is_served(api: ApiServer, backends: Backends, proxy: ServedProxy) -> None:
    api.create(k.ingress_class("other", controller="example.com/other-controller"))
    expose(api, "cls", "cls.test", backends("cls"), class_name="other")
    api.create(k.ingress("cls-sentinel", "cls-sentinel.test", "cls"))  # ours, written after the foreign one
    wait_served("our Ingress written after the foreign one", answered_by(proxy.http_port, "cls-sentinel.test", "cls"))
    for _ in range(CONFIRM):
        assert http_get(proxy.http_port, "cls.test").status == 404, "an Ingress of another class is served"

    api.patch("ingresses", "cls", {"spec": {"ingressClassName": "fastingress"}})
    wait_served("the Ingress switched to our class", answered_by(proxy.http_port, "cls.test", "cls"))

    api.patch("ingresses", "cls", {"spec": {"ingressClassName": "other"}})
    wait_served("the Ingress switched back to the other class: 404", answers_status(proxy.http_port, "cls.test", 404))


def test_tls_secret_changes_are_followed(api: ApiServer, backends: Backends, proxy: ServedProxy) -> None:
    https = proxy.ports["https"]
    default = served_cert(https, "no-certificate-for-this.test")
    first, second = make_cert(["tls.test"]), make_cert(["tls.test"])
    assert default not in (der(first[0]), der(second[0]))

    def presents(cert_pem: bytes) -> tuple[bool, str]:
        reply, cert = https_get(https, "tls.test", "tls.test", "/secure")
        ok = reply.status == 200 and reply.body == b"tls GET /secure\n"
        which = {der(first[0]): "first", der(second[0]): "second", default: "default"}.get(cert, "unknown")
        return ok and cert == der(cert_pem), f"{reply.describe()} with the {which} certificate"

    api.create(k.tls_secret("tls-cert", *first))
    expose(api, "tls", "tls.test", backends("tls"), tls_secret="tls-cert")
    wait_served("an Ingress with a TLS Secret", lambda: presents(first[0]))

    api.update(k.tls_secret("tls-cert", *second))
    wait_served("the Secret rotated: new connections get the new certificate", lambda: presents(second[0]))

    api.delete("secrets", "tls-cert")

    def presents_default() -> tuple[bool, str]:
        cert = served_cert(https, "tls.test")
        return cert == default, "the default certificate" if cert == default else "another certificate"
    wait_served("the Secret deleted: the default certificate", presents_default)
