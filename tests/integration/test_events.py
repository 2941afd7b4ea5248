"""`EventRecorder` end to end: `record` on the test's thread, `run` in a thread posting with the real
`kubernetes` client to the test API server (tests/support/apiserver).

Events land with the right involvedObject and fields and pass the API server's validation rules; a lost
answer is retried under the same name without a duplicate; 5xx are retried until the API server recovers,
a 4xx is not; with the API server down `record` never blocks, the queue stays bounded and the failure
is logged once. Also pins the client behaviour that keeps `eventTime` out of our Events.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest

from fastingress.model.objects import Ingress, IngressClass, Kind, ObjectKey, Service, Snapshot
from fastingress.model.problems import Problem
from fastingress.supervisor.events import EventRecorder
from tests.support.apiserver import ApiServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

LOGGER = "fastingress.supervisor.events"
# metav1.Time is parsed with Go's time.RFC3339 (fractional seconds allowed when parsing)
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
QUALIFIED_NAME = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                            r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def check_event(event: dict[str, Any]) -> None:
    """The rules a real API server applies to a core/v1 Event create (pkg/apis/core/validation/events.go,
    legacyValidateEvent), including the ones that only apply when eventTime is set, plus ours."""
    ns, involved = event["metadata"]["namespace"], event["involvedObject"]
    if involved.get("namespace"):
        assert ns == involved["namespace"], "involvedObject.namespace does not match event.namespace"
    else:
        assert ns in ("default", "kube-system"), "a cluster-scoped object's Event belongs in default"
    assert "eventTime" not in event  # see test_the_client_drops_zero_microseconds_from_event_time
    assert QUALIFIED_NAME.fullmatch(event["reportingComponent"]) and len(event["reportingComponent"]) <= 316
    assert 0 < len(event["reportingInstance"].encode()) <= 128
    assert 0 < len(event["reason"].encode()) <= 128 and len(event["message"].encode()) <= 1024
    assert event["type"] == "Warning" and event["count"] == 1
    assert RFC3339.fullmatch(event["firstTimestamp"]) and RFC3339.fullmatch(event["lastTimestamp"])
    assert re.fullmatch(rf"{re.escape(involved['name'])}\.[0-9a-f]{{16}}", event["metadata"]["name"])


def problem(name: str, message: str = "path '/a' is invalid", *, kind: Kind = Kind.INGRESS,
            namespace: str = "default", field: str = "spec.rules[0].http.paths[0].path",
            reason: str = "InvalidPath") -> Problem:
    return Problem(kind, ObjectKey(namespace, name), field, reason, message)


def ingress_obj(name: str, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ingressClassName": "fastingress",
                     "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}


def model_ingress(raw: dict[str, Any]) -> Ingress:
    meta = raw["metadata"]
    return Ingress(key=ObjectKey(meta["namespace"], meta["name"]), uid=meta["uid"], generation=meta["generation"],
                   resource_version=meta["resourceVersion"])


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


@pytest.fixture
def api_client(api: ApiServer) -> Iterator[kubernetes.client.ApiClient]:
    config = api.configuration()
    config.retries = False  # as the product's client (fastingress.sources.kubeapi): our retries are the only ones
    client = kubernetes.client.ApiClient(config)
    yield client
    client.close()


class Sender:
    """`recorder.run` in a thread for the duration of a `with` block; it must stop promptly."""

    def __init__(self, recorder: EventRecorder) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=recorder.run, args=(self.stop,), name="events", daemon=True)

    def __enter__(self) -> Sender:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(3.0)
        assert not self.thread.is_alive(), "the sender did not stop"


def settled(recorder: EventRecorder) -> bool:
    """Every offer accounted for: the queue drained and the sender done with its last Event."""
    s = recorder.stats()
    return s["queued"] == 0 and s["offered"] == s["sent"] + s["failed"] + s["dropped_full"] + s["dropped_rate"]


# --- events on the wire ------------------------------------------------------------------------------
def test_events_land_on_the_objects_problems_name(api: ApiServer, api_client: kubernetes.client.ApiClient) -> None:
    web = model_ingress(api.create(ingress_obj("web")))
    klass = api.create({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                        "metadata": {"name": "fastingress"},
                        "spec": {"controller": "fastingress.io/ingress-controller"}})
    svc = api.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "shop"},
                      "spec": {"ports": [{"port": 80}]}})
    snapshot = Snapshot(
        ingresses={web.key: web},
        classes={"fastingress": IngressClass("fastingress", "fastingress.io/ingress-controller",
                                             resource_version=klass["metadata"]["resourceVersion"])},
        services={ObjectKey("shop", "api"): Service(ObjectKey("shop", "api"),
                                                    resource_version=svc["metadata"]["resourceVersion"])})
    problems = [
        problem("web"),
        problem("fastingress", "parameters are not supported", kind=Kind.INGRESS_CLASS, namespace="", field="",
                reason="InvalidParameters"),
        problem("api", "port 81 is not a port of this Service", kind=Kind.SERVICE, namespace="shop", field="",
                reason="PortNotFound"),
        Problem(Kind.FILE, ObjectKey("", "."), "", "UnreadableDirectory", "cannot read", True, "/manifests"),
    ]
    recorder = EventRecorder(api_client, "fastingress-0")
    with Sender(recorder):
        recorder.record(problems, snapshot)
        wait_until(lambda: recorder.stats()["sent"] == 3, "three Events sent")
    events = {e["involvedObject"]["kind"]: e for e in api.objects("events")}
    assert sorted(events) == ["Ingress", "IngressClass", "Service"] and api.count("create", "events") == 3
    for event in events.values():
        check_event(event)
        assert event["source"] == {"component": "fastingress", "host": "fastingress-0"}
        assert event["reportingComponent"] == "fastingress.io/ingress-controller"
        assert event["reportingInstance"] == "fastingress-0"
    assert events["Ingress"]["involvedObject"] == {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "namespace": "default", "name": "web",
        "uid": web.uid, "resourceVersion": web.resource_version}
    assert events["Ingress"]["reason"] == "InvalidPath"
    assert events["Ingress"]["message"] == "path '/a' is invalid (field spec.rules[0].http.paths[0].path)"
    assert events["IngressClass"]["metadata"]["namespace"] == "default"
    assert events["IngressClass"]["involvedObject"] == {
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "name": "fastingress",
        "resourceVersion": klass["metadata"]["resourceVersion"]}
    assert events["Service"]["metadata"]["namespace"] == "shop"
    # what `kubectl describe ingress web` asks for
    found = kubernetes.client.CoreV1Api(api_client).list_namespaced_event(
        "default", field_selector=f"involvedObject.kind=Ingress,involvedObject.name=web,involvedObject.uid={web.uid}")
    assert [e.reason for e in found.items] == ["InvalidPath"]

    recorder.record(problems, snapshot)  # nothing new: no request at all
    assert recorder.stats()["queued"] == 0 and api.count("create", "events") == 3


def test_the_client_drops_zero_microseconds_from_event_time(api: ApiServer,
                                                          api_client: kubernetes.client.ApiClient) -> None:
    """Why our Events carry no eventTime: the client validates a dict body into a pydantic model and
    writes datetimes back with isoformat(), which omits ".000000". The API server parses eventTime
    (metav1.MicroTime) with exactly six fraction digits, so one Event in a million would be refused.
    firstTimestamp (metav1.Time, RFC 3339) is unaffected. If this test fails, the client changed."""
    kubernetes.client.CoreV1Api(api_client).create_namespaced_event("default", {
        "metadata": {"name": "web.1"}, "involvedObject": {"kind": "Ingress", "name": "web", "namespace": "default"},
        "reason": "Test", "message": "m", "type": "Warning", "eventTime": "2024-01-02T03:04:05.000000Z",
        "firstTimestamp": "2024-01-02T03:04:05Z", "action": "Test", "reportingComponent": "fastingress.io/test",
        "reportingInstance": "pod"}, _request_timeout=(5, 5))
    [stored] = api.objects("events")
    assert stored["eventTime"] == "2024-01-02T03:04:05+00:00"  # not RFC3339Micro: refused by a real API server
    assert RFC3339.fullmatch(stored["firstTimestamp"])


# --- failures ----------------------------------------------------------------------------------------
def test_a_lost_answer_is_retried_under_the_same_name_without_a_duplicate(
        api: ApiServer, api_client: kubernetes.client.ApiClient) -> None:
    web = model_ingress(api.create(ingress_obj("web")))
    api.delay_requests(0.6, 1, verbs="create", resources="events")  # lands after the client gave up
    recorder = EventRecorder(api_client, "pod", request_timeout=(1.0, 0.3), retry_delays_s=(0.6,))
    with Sender(recorder):
        recorder.record([problem("web")], Snapshot(ingresses={web.key: web}))
        wait_until(lambda: settled(recorder), "the Event settled")
    assert recorder.stats()["sent"] == 1 and recorder.stats()["retries"] == 1 and recorder.stats()["failed"] == 0
    assert len(api.objects("events")) == 1 and api.count("create", "events") == 2  # the retry got 409


def test_server_errors_are_retried_until_the_api_recovers(
        api: ApiServer, api_client: kubernetes.client.ApiClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    web = model_ingress(api.create(ingress_obj("web")))
    api.fail_requests(2, code=500, verbs="create", resources="events")
    recorder = EventRecorder(api_client, "pod", retry_delays_s=(0.05, 0.05, 0.05))
    with Sender(recorder):
        recorder.record([problem("web")], Snapshot(ingresses={web.key: web}))
        wait_until(lambda: recorder.stats()["sent"] == 1, "the Event sent after two 500s")
    check_event(api.objects("events")[0])
    assert recorder.stats()["retries"] == 2 and api.count("create", "events") == 3
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert [level for level, _ in logged] == [logging.WARNING, logging.INFO]  # once per streak, not per attempt
    assert "HTTP 500" in logged[0][1] and "after 2 failed attempts" in logged[1][1]


def test_a_rejected_event_is_not_retried(api: ApiServer, api_client: kubernetes.client.ApiClient) -> None:
    web = model_ingress(api.create(ingress_obj("web")))
    api.fail_requests(1, code=403, verbs="create", resources="events")  # e.g. a namespace being deleted
    recorder = EventRecorder(api_client, "pod", retry_delays_s=(0.05,))
    with Sender(recorder):
        recorder.record([problem("web")], Snapshot(ingresses={web.key: web}))
        wait_until(lambda: recorder.stats()["failed"] == 1, "the Event dropped")
    assert api.count("create", "events") == 1 and api.objects("events") == []


def test_api_down_never_blocks_record_and_memory_stays_bounded(
        api: ApiServer, api_client: kubernetes.client.ApiClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    keys = [ObjectKey("default", f"web-{i:04d}") for i in range(1000)]
    problems = [problem(k.name) for k in keys]
    api.stop()  # connection refused from now on
    recorder = EventRecorder(api_client, "pod", queue_size=50, global_burst=10**6, global_per_s=10**6,
                             request_timeout=(0.5, 0.5), retry_delays_s=(0.01,))
    slowest = 0.0
    with Sender(recorder):
        for generation in range(1, 21):  # 20 rounds of 1,000 broken Ingresses, all edited each round
            snapshot = Snapshot(ingresses={k: Ingress(key=k, uid=k.name, generation=generation) for k in keys})
            started = time.perf_counter()
            recorder.record(problems, snapshot)
            slowest = max(slowest, time.perf_counter() - started)
            s = recorder.stats()
            assert s["queued"] <= 50 and s["tracked"] == 1000
        assert slowest < 0.5, f"record took {slowest:.3f} s with the API server down"
        wait_until(lambda: recorder.stats()["failed"] >= 2, "failed posts while the API server is down")
        s = recorder.stats()
        assert s["offered"] == 20_000 and s["sent"] == 0 and s["dropped_full"] > 19_000  # the rest: queued or failed
        api.start()
        fixed = Snapshot(ingresses={k: Ingress(key=k, uid=k.name, generation=99) for k in keys[:1]})
        recorder.record(problems[:1], fixed)
        wait_until(lambda: settled(recorder) and recorder.stats()["sent"] >= 1, "an Event sent after the outage")
    assert recorder.stats()["tracked"] == 1
    logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert [level for level, _ in logged] == [logging.WARNING, logging.INFO], logged
    assert "Connection refused" in logged[0][1]
    for event in api.objects("events"):
        check_event(event)
