"""loadtest/kube.py: REST paths, the seeded objects, the supervisor-log parser (checked against the real
Reconciler's log line), and one round trip through the in-process test API server."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fastingress.logs import JsonFormatter
from fastingress.model.objects import Kind
from fastingress.model.store import Change
from fastingress.settings import Settings
from fastingress.supervisor.reconcile import Reconciler
from fastingress.table.shm import TableWriter
from loadtest import kube
from tests.support import kubeobjects
from tests.unit.compiler.builders import endpoint_slice, endpoints, ingress, path, rule, service


def test_object_paths_follow_the_api_layout() -> None:
    ing = kube.host_ingress("a", "a.example")
    assert kube.object_path(ing) == "/apis/networking.k8s.io/v1/namespaces/default/ingresses"
    assert kube.object_path(ing, named=True) == "/apis/networking.k8s.io/v1/namespaces/default/ingresses/a"
    assert kube.object_path(kubeobjects.ingress_class(), named=True) == \
        "/apis/networking.k8s.io/v1/ingressclasses/fastingress"
    assert kube.object_path(kube.backend_service()) == "/api/v1/namespaces/default/services"
    other = kubeobjects.service("x", namespace="other")
    assert kube.object_path(other, named=True) == "/api/v1/namespaces/other/services/x"
    assert kube.object_path(kube.backend_slice(1, 9000), named=True) == \
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/be-1"


def test_backend_objects_point_at_the_shared_service() -> None:
    s = kube.backend_slice(3, 18080)
    assert s["metadata"]["name"] == "be-3"
    assert s["metadata"]["labels"]["kubernetes.io/service-name"] == "be"
    assert s["ports"][0]["port"] == 18080
    assert s["ports"][0]["name"] == kube.backend_service()["spec"]["ports"][0]["name"]  # the slice port matches by name
    assert [e["addresses"] for e in s["endpoints"]] == [["127.0.0.1"]]
    assert kube.backend_slice(0, 1, ())["endpoints"] == []
    assert kube.default_ingress()["spec"]["defaultBackend"]["service"] == {"name": "be", "port": {"number": 80}}


def test_bulk_ingresses_have_distinct_names_and_hosts() -> None:
    objs = list(kube.bulk_ingresses(5, hosts_per_ingress=3))
    assert len({o["metadata"]["name"] for o in objs}) == 5
    hosts = [r["host"] for o in objs for r in o["spec"]["rules"]]
    assert len(hosts) == len(set(hosts)) == 15
    assert all(h.endswith(".bench.example") for h in hosts)


def _line(ts: float, msg: str) -> str:
    record = logging.LogRecord("fastingress.supervisor.reconcile", logging.INFO, __file__, 1, msg, None, None)
    record.created = ts
    return JsonFormatter().format(record)


def test_publishes_parses_the_publish_lines_and_skips_the_rest() -> None:
    lines = [
        _line(10.5, "published table generation 3.7: 12 hosts, 14 routes, 1 upstreams, 2 endpoints, "
                    "0 certificates, 0 problems, compiled in 20.6 ms"),
        _line(11.0, "initial list of every kind complete: 5 objects"),
        "not json at all",
        '["published table generation"]',
        _line(11.5, "published table generation is malformed here"),
    ]
    assert kube.publishes(lines) == [kube.Publish(10.5, 3, 7, 12, 2, 20.6)]


def test_publishes_understands_the_reconcilers_own_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The split of a propagation depends on this message: a rewording of it must fail here, not go unnoticed."""
    writer = TableWriter(shm_dir=str(tmp_path))
    try:
        rec = Reconciler(Settings(), writer, now=lambda: 0.0)
        objs = [(Kind.INGRESS, ingress("web", rule("a.example.com", path("/")))), (Kind.SERVICE, service("web")),
                (Kind.ENDPOINT_SLICE, endpoint_slice("web-1", "web", endpoints("10.0.0.1", "10.0.0.2")))]
        rec.apply([Change(kind=k, key=o.key, obj=o) for k, o in objs], [])
        with caplog.at_level(logging.INFO, logger="fastingress.supervisor.reconcile"):
            assert rec.publish(1.0)
    finally:
        writer.close()
    records = [r for r in caplog.records if r.getMessage().startswith("published table generation")]
    assert len(records) == 1
    (parsed,) = kube.publishes([JsonFormatter().format(records[0])])
    assert (parsed.routes_generation, parsed.endpoints_generation, parsed.hosts, parsed.endpoints) == (1, 1, 1, 2)
    assert parsed.ts == pytest.approx(records[0].created, abs=1e-5) and parsed.compile_ms >= 0


def test_first_publish_after() -> None:
    events = [kube.Publish(ts, ts, ts, 1, 1, 0.5) for ts in (1, 2, 3)]
    assert kube.first_publish_after(events, 1.5) is events[1]
    assert kube.first_publish_after(events, 2) is events[1]
    assert kube.first_publish_after(events, 0) is events[0]
    assert kube.first_publish_after(events, 3.01) is None


def test_cluster_seeds_and_rest_client_writes_over_http(tmp_path: Path) -> None:
    with kube.Cluster.start(tmp_path, [kube.backend_slice(0, 18080)], [kube.default_ingress()]) as cluster:
        api = cluster.api
        assert [o["metadata"]["name"] for o in api.objects("ingressclasses")] == ["fastingress"]
        assert [o["metadata"]["name"] for o in api.objects("services")] == ["be"]
        assert [o["metadata"]["name"] for o in api.objects("ingresses")] == ["be"]
        created = cluster.rest.create(kube.host_ingress("new-0", "new-0.bench.example"))
        assert created["metadata"]["resourceVersion"]
        cluster.rest.replace(kube.backend_slice(0, 18081, ()))
        assert api.get("endpointslices", "be-0")["endpoints"] == []  # type: ignore[index]
        assert api.count("create", "ingresses") == 1 and api.count("update", "endpointslices") == 1
        with pytest.raises(RuntimeError, match="HTTP 409"):
            cluster.rest.create(kube.host_ingress("new-0", "new-0.bench.example"))
        env = cluster.env()
        assert Path(env["KUBECONFIG"]).is_file() and env["FASTINGRESS_ALLOW_LOOPBACK_ENDPOINTS"] == "true"
        assert f"127.0.0.1:{api.port}" in Path(env["KUBECONFIG"]).read_text()
