"""The test API server (tests/support/apiserver) driven only by the real `kubernetes` client (37.x):
list+watch with bookmarks, resume, 410 as the client surfaces it, status subresource, 409 conflicts, the
Lease race, events, selectors and pages, every fault hook, restart on the same port.

These tests also pin the client's behaviour that the Kubernetes source must handle (see the "client
pitfalls" list in docs/dev/testing.md): a change in the client shows up here first.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.support.apiserver import ApiServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

DEADLINE_S = 5.0  # any single wait; a healthy run needs milliseconds
END = "END"  # a watch generator that finished without an exception


# --- objects ---------------------------------------------------------------------------------------------
def ingress(name: str, namespace: str = "default", labels: dict[str, str] | None = None,
            service: str = "web") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"ingressClassName": "fastingress",
                     "defaultBackend": {"service": {"name": service, "port": {"number": 80}}}}}


def service(name: str, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": "http", "port": 80}]}}


def secret(name: str, namespace: str = "default", tls: bool = True) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "kubernetes.io/tls" if tls else "Opaque", "data": {"tls.crt": "", "tls.key": ""}}


def lease(holder: str) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "fastingress-leader", "namespace": "default"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "acquireTime": now, "renewTime": now,
                     "leaseTransitions": 0}}


# --- client side -----------------------------------------------------------------------------------------
class Clients:
    """The typed APIs on one ApiClient (one connection pool)."""

    def __init__(self, api: ApiServer, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or api.api_client()
        self.core = client.CoreV1Api(self.api_client)
        self.net = client.NetworkingV1Api(self.api_client)
        self.disc = client.DiscoveryV1Api(self.api_client)
        self.coord = client.CoordinationV1Api(self.api_client)
        self.events = client.EventsV1Api(self.api_client)


class WatchThread:
    """One `Watch().stream(func, ...)` consumed in a thread: events, then END or the exception, in a queue."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.watch = watch.Watch()
        self.items: queue.Queue[Any] = queue.Queue()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, args=(func, args, kw), daemon=True)
        self.thread.start()

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        try:
            for event in self.watch.stream(func, *args, **kw):
                self.items.put(event)
            self.items.put(END)
        except Exception as exc:  # the outcome under test
            self.items.put(exc)

    def next(self) -> Any:
        return self.items.get(timeout=DEADLINE_S)

    def events(self, n: int, *, bookmarks: bool = False) -> list[tuple[str, str | None, str]]:
        """The next n events as (type, name, resourceVersion); bookmarks skipped unless asked for."""
        out: list[tuple[str, str | None, str]] = []
        while len(out) < n:
            item = self.next()
            assert isinstance(item, dict), f"the watch ended early with {item!r} after {out}"
            meta = item["raw_object"]["metadata"] if "raw_object" in item else item["object"]["metadata"]
            if item["type"] != "BOOKMARK" or bookmarks:
                out.append((item["type"], meta.get("name"), meta["resourceVersion"]))
        return out

    def outcome(self) -> Any:
        """END or the exception that ended the stream (events before it are skipped)."""
        while isinstance(item := self.next(), dict):
            pass
        self.thread.join(DEADLINE_S)
        return item

    def stop(self) -> None:
        self.watch.stop()
        self.thread.join(DEADLINE_S)


def status_of(exc: ApiException) -> dict[str, Any]:
    assert exc.body is not None
    body: dict[str, Any] = json.loads(exc.body)
    return body


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


@pytest.fixture
def c(api: ApiServer) -> Iterator[Clients]:
    clients = Clients(api)
    yield clients
    clients.api_client.close()


# --- list and watch --------------------------------------------------------------------------------------
def test_list_then_watch_from_the_list_rv_with_bookmarks() -> None:
    with ApiServer(bookmark_interval_s=0.3) as api:
        c = Clients(api)
        api.create(ingress("a"))
        api.create(ingress("b", namespace="other"))
        listed = c.net.list_ingress_for_all_namespaces()
        assert [(i.metadata.namespace, i.metadata.name) for i in listed.items] == [("default", "a"), ("other", "b")]
        assert listed.metadata.resource_version == str(api.resource_version) == "3"
        assert [i.metadata.name for i in c.net.list_namespaced_ingress("other").items] == ["b"]
        raw = json.loads(c.net.list_ingress_for_all_namespaces(_preload_content=False).data)
        assert raw["kind"] == "IngressList" and "kind" not in raw["items"][0]  # items carry no kind/apiVersion

        w = WatchThread(c.net.list_ingress_for_all_namespaces, resource_version=listed.metadata.resource_version,
                        allow_watch_bookmarks=True, timeout_seconds=3)
        first = w.next()  # nothing changed yet: a bookmark at the list's resourceVersion, as a plain dict
        assert first["type"] == "BOOKMARK"
        assert first["object"] == {"kind": "Ingress", "apiVersion": "networking.k8s.io/v1",
                                   "metadata": {"resourceVersion": "3"}}
        c.net.create_namespaced_ingress("default", ingress("c"))
        c.net.patch_namespaced_ingress("c", "default", {"metadata": {"labels": {"x": "y"}}})
        c.net.delete_namespaced_ingress("c", "default")
        assert w.events(3) == [("ADDED", "c", "4"), ("MODIFIED", "c", "5"), ("DELETED", "c", "6")]
        later = w.next()
        assert later["type"] == "BOOKMARK" and later["object"]["metadata"]["resourceVersion"] == "6"
        assert w.watch.resource_version == "6"  # bookmarks advance the Watch's resource_version
        assert w.outcome() == END  # timeoutSeconds: a clean end, no exception, no silent re-watch
        assert 2.9 < time.monotonic() - w.started < 4.5
        assert api.counts()[("watch", "ingresses")] == 1
        c.api_client.close()


def test_watch_resumes_from_a_resource_version_with_selector_transitions(api: ApiServer, c: Clients) -> None:
    api.create(ingress("a", labels={"app": "web"}))
    api.create(ingress("b", labels={"app": "db"}))
    start = api.resource_version
    api.patch("ingresses", "a", {"metadata": {"labels": {"app": "db"}}})  # leaves app=web
    api.patch("ingresses", "b", {"metadata": {"labels": {"app": "web"}}})  # enters app=web
    api.patch("ingresses", "b", {"spec": {"defaultBackend": {"service": {"name": "other"}}}})
    api.update(api.get("ingresses", "b") or {})  # a no-op write: no new resourceVersion, no event
    api.delete("ingresses", "b")
    assert api.resource_version == start + 4

    everything = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=str(start))
    assert everything.events(4) == [("MODIFIED", "a", str(start + 1)), ("MODIFIED", "b", str(start + 2)),
                                    ("MODIFIED", "b", str(start + 3)), ("DELETED", "b", str(start + 4))]
    web = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=str(start), label_selector="app=web")
    assert web.events(4) == [("DELETED", "a", str(start + 1)), ("ADDED", "b", str(start + 2)),
                             ("MODIFIED", "b", str(start + 3)), ("DELETED", "b", str(start + 4))]
    current = WatchThread(c.net.list_namespaced_ingress, "default")  # no resourceVersion: synthetic ADDED
    assert current.events(1) == [("ADDED", "a", str(start + 1))]
    for w in (everything, web, current):
        w.stop()


def test_watch_without_timeout_seconds_rewatches_silently_from_the_last_rv() -> None:
    with ApiServer(watch_timeout_s=1) as api:  # the server ends each watch after 1 s
        c = Clients(api)
        start = str(api.create(ingress("a"))["metadata"]["resourceVersion"])
        b_rv = api.create(ingress("b"))["metadata"]["resourceVersion"]
        w = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=start)
        assert w.events(1) == [("ADDED", "b", b_rv)]
        wait_until(lambda: api.count("watch") >= 2, "the client's second watch")
        assert [r.query.get("resourceVersion") for r in api.requests if r.verb == "watch"][:2] == [start, b_rv]
        w.stop()

        # deserialize=False: Watch never learns a resourceVersion, so it re-watches from the one passed in
        # and the server replays what the caller already saw (b again).
        api.reset_counters()
        raw = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=start, deserialize=False)
        assert raw.events(2) == [("ADDED", "b", b_rv), ("ADDED", "b", b_rv)]
        assert [r.query.get("resourceVersion") for r in api.requests if r.verb == "watch"][:2] == [start, start]
        assert raw.watch.resource_version == start
        raw.stop()
        c.api_client.close()


def test_too_old_resource_version_is_410_as_the_client_surfaces_it() -> None:
    with ApiServer(history=2) as api:
        c = Clients(api)
        for name in "abcd":
            api.create(ingress(name))  # resourceVersions 2..5; the window keeps 4 and 5
        with pytest.raises(ApiException) as info:  # with timeout_seconds: raised at once
            list(watch.Watch().stream(c.net.list_namespaced_ingress, "default", resource_version="2",
                                      timeout_seconds=5))
        assert info.value.status == 410 and info.value.body is None  # the Status is only in .reason
        assert info.value.reason == "Expired: too old resource version: 2 (3)"

        api.reset_counters()
        with pytest.raises(ApiException) as info:  # without: retried once with the same stale RV, then raised
            list(watch.Watch().stream(c.net.list_namespaced_ingress, "default", resource_version="2"))
        assert info.value.status == 410
        assert [r.query["resourceVersion"] for r in api.requests] == ["2", "2"]

        with pytest.raises(KeyError, match="raw_object"):  # deserialize=False cannot even read the ERROR event
            list(watch.Watch().stream(c.net.list_namespaced_ingress, "default", resource_version="2",
                                      timeout_seconds=5, deserialize=False))

        # On the wire: HTTP 200, one ERROR event carrying a 410 Status, then a clean end.
        resp = c.net.list_namespaced_ingress("default", watch=True, resource_version="2", _preload_content=False)
        assert resp.status == 200
        lines = resp.data.decode().splitlines()
        assert [json.loads(line) for line in lines] == [{"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 2 (3)", "reason": "Expired", "code": 410}}]

        # The fix is a relist (resourceVersion unset) and a watch from the list's resourceVersion.
        relisted = c.net.list_namespaced_ingress("default")
        w = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=relisted.metadata.resource_version)
        api.create(ingress("e"))
        assert w.events(1) == [("ADDED", "e", "6")]
        w.stop()

        api.compact()  # every resourceVersion before now is too old, even the current one's predecessor
        with pytest.raises(ApiException) as info:
            list(watch.Watch().stream(c.net.list_namespaced_ingress, "default", resource_version="5",
                                      timeout_seconds=5))
        assert info.value.status == 410
        c.api_client.close()


def test_expire_hooks_next_watch_and_mid_stream(api: ApiServer, c: Clients) -> None:
    rv = str(api.create(ingress("a"))["metadata"]["resourceVersion"])
    api.expire_next_watches(1)
    with pytest.raises(ApiException) as info:
        list(watch.Watch().stream(c.net.list_namespaced_ingress, "default", resource_version=rv, timeout_seconds=5))
    assert info.value.status == 410

    w = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=rv, timeout_seconds=5)
    api.create(ingress("b"))
    assert w.events(1)[0][:2] == ("ADDED", "b")  # the expiry was used up: this watch works
    assert api.expire_watches() == 1
    outcome = w.outcome()
    assert isinstance(outcome, ApiException) and outcome.status == 410
    assert "too old resource version" in str(outcome.reason)


# --- writes ----------------------------------------------------------------------------------------------
def test_status_subresource_and_generation(api: ApiServer, c: Clients) -> None:
    body = ingress("a")
    body["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    created = c.net.create_namespaced_ingress("default", body)
    assert created.status.load_balancer.ingress is None  # create resets status
    assert created.metadata.generation == 1 and created.metadata.uid and created.metadata.creation_timestamp

    lb = {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}}
    patched = c.net.patch_namespaced_ingress_status("a", "default", lb)
    assert api.requests[-1].content_type == "application/strategic-merge-patch+json"  # a dict body: SMP
    assert patched.status.load_balancer.ingress[0].ip == "10.0.0.1"
    assert patched.metadata.generation == 1
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    again = c.net.patch_namespaced_ingress_status("a", "default", lb, _content_type="application/merge-patch+json")
    assert again.metadata.resource_version == patched.metadata.resource_version  # no-op: same RV

    # A status write ignores the spec; a main-resource write ignores the status.
    current = api.get("ingresses", "a") or {}
    current["spec"]["ingressClassName"] = "other"
    current["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}]}}
    after_status = c.net.replace_namespaced_ingress_status("a", "default", current)
    assert after_status.spec.ingress_class_name == "fastingress"
    assert after_status.status.load_balancer.ingress[0].ip == "10.0.0.2"
    current["metadata"]["resourceVersion"] = after_status.metadata.resource_version
    current["status"] = {"loadBalancer": {}}
    after_spec = c.net.replace_namespaced_ingress("a", "default", current)
    assert after_spec.spec.ingress_class_name == "other" and after_spec.metadata.generation == 2
    assert after_spec.status.load_balancer.ingress[0].ip == "10.0.0.2"
    relabelled = c.net.patch_namespaced_ingress("a", "default", {"metadata": {"labels": {"k": "v"}}})
    assert relabelled.metadata.generation == 2  # metadata changes do not bump generation
    assert api.counts()[("patch", "ingresses/status")] == 2


def test_stale_update_is_a_409_conflict_with_a_status_body(api: ApiServer, c: Clients) -> None:
    api.create(ingress("a"))
    stale = c.net.read_namespaced_ingress("a", "default")
    fresh = c.net.read_namespaced_ingress("a", "default")
    fresh.spec.default_backend.service.name = "other"
    c.net.replace_namespaced_ingress("a", "default", fresh)  # a model body round-trips

    stale.spec.default_backend.service.name = "third"
    with pytest.raises(ApiException) as info:
        c.net.replace_namespaced_ingress("a", "default", stale)
    assert info.value.status == 409
    assert status_of(info.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Conflict", "code": 409,
        "message": 'Operation cannot be fulfilled on ingresses.networking.k8s.io "a": the object has been modified; '
                   "please apply your changes to the latest version and try again",
        "details": {"name": "a", "group": "networking.k8s.io", "kind": "ingresses"}}
    with pytest.raises(ApiException) as info:  # a resourceVersion in a patch is a precondition too
        c.net.patch_namespaced_ingress("a", "default", {"metadata": {
            "resourceVersion": stale.metadata.resource_version, "labels": {"k": "v"}}})
    assert info.value.status == 409
    with pytest.raises(ApiException) as info:
        c.net.create_namespaced_ingress("default", ingress("a"))
    assert info.value.status == 409 and status_of(info.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as info:
        c.net.read_namespaced_ingress("missing", "default")
    assert info.value.status == 404 and status_of(info.value)["message"] == \
        'ingresses.networking.k8s.io "missing" not found'


def test_lease_create_and_update_race(api: ApiServer) -> None:
    first, second = Clients(api), Clients(api)
    for side in (first, second):
        with pytest.raises(ApiException) as info:
            side.coord.read_namespaced_lease("fastingress-leader", "default")
        assert info.value.status == 404

    def race(calls: list[Callable[[], Any]]) -> list[Any]:
        barrier, results = threading.Barrier(len(calls)), [None] * len(calls)

        def run(i: int) -> None:
            barrier.wait(DEADLINE_S)
            try:
                results[i] = calls[i]()
            except ApiException as exc:
                results[i] = exc
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(DEADLINE_S)
        return results

    created = race([lambda: first.coord.create_namespaced_lease("default", lease("one")),
                    lambda: second.coord.create_namespaced_lease("default", lease("two"))])
    losers = [r for r in created if isinstance(r, ApiException)]
    assert len(losers) == 1 and losers[0].status == 409 and status_of(losers[0])["reason"] == "AlreadyExists"

    seen = [side.coord.read_namespaced_lease("fastingress-leader", "default") for side in (first, second)]
    assert seen[0].metadata.resource_version == seen[1].metadata.resource_version
    # Both change the lease (a no-op PUT keeps the resourceVersion, and then both would "win").
    seen[0].spec.holder_identity, seen[1].spec.holder_identity = "first", "second"
    renewed = race([lambda: first.coord.replace_namespaced_lease("fastingress-leader", "default", seen[0]),
                    lambda: second.coord.replace_namespaced_lease("fastingress-leader", "default", seen[1])])
    losers = [r for r in renewed if isinstance(r, ApiException)]
    assert len(losers) == 1 and losers[0].status == 409 and status_of(losers[0])["reason"] == "Conflict"
    winner = next(r for r in renewed if not isinstance(r, ApiException))
    assert (api.get("leases", "fastingress-leader") or {})["spec"]["holderIdentity"] == winner.spec.holder_identity

    with pytest.raises(ApiException) as info:  # Lease forbids an update without a resourceVersion
        first.coord.replace_namespaced_lease("fastingress-leader", "default", lease("three"))
    assert info.value.status == 422 and status_of(info.value)["reason"] == "Invalid"
    assert api.counts()[("create", "leases")] == 2 and api.counts()[("update", "leases")] == 3
    for side in (first, second):
        side.api_client.close()


def test_events_core_and_events_k8s_io(api: ApiServer, c: Clients) -> None:
    regarding = {"kind": "Ingress", "namespace": "default", "name": "a", "apiVersion": "networking.k8s.io/v1"}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    made = c.core.create_namespaced_event("default", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "a."}, "involvedObject": regarding,
        "reason": "Sync", "message": "configured", "type": "Normal", "source": {"component": "fastingress"},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1})
    assert made.metadata.name.startswith("a.") and len(made.metadata.name) > 2
    found = c.core.list_namespaced_event("default", field_selector="involvedObject.name=a,reason=Sync")
    assert [e.message for e in found.items] == ["configured"]
    assert c.core.list_event_for_all_namespaces(field_selector="involvedObject.name=b").items == []

    c.events.create_namespaced_event("default", {
        "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "a.2"}, "regarding": regarding,
        "eventTime": now.replace("Z", ".000000Z"), "reportingController": "fastingress.io/controller",
        "reportingInstance": "pod-1", "action": "Sync", "reason": "Sync", "note": "configured", "type": "Normal"})
    assert [e["note"] for e in api.objects("events.events.k8s.io")] == ["configured"]
    assert [e["reason"] for e in api.objects("events")] == ["Sync"]
    assert api.counts()[("create", "events")] == 1 and api.counts()[("create", "events.events.k8s.io")] == 1


def test_delete_with_finalizers_waits_for_the_last_one(api: ApiServer, c: Clients) -> None:
    body = ingress("a")
    body["metadata"]["finalizers"] = ["fastingress.io/test"]
    rv = c.net.create_namespaced_ingress("default", body).metadata.resource_version
    w = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=rv, timeout_seconds=5)
    c.net.delete_namespaced_ingress("a", "default")
    assert (api.get("ingresses", "a") or {})["metadata"]["deletionTimestamp"]
    c.net.patch_namespaced_ingress("a", "default", {"metadata": {"finalizers": None}},
                                   _content_type="application/merge-patch+json")
    assert api.get("ingresses", "a") is None
    assert [t for t, _, _ in w.events(2)] == ["MODIFIED", "DELETED"]
    w.stop()


def test_other_kinds_selectors_and_pages(api: ApiServer, c: Clients) -> None:
    api.create(secret("t1"))
    api.create(secret("t2", namespace="other"))
    api.create(secret("opaque", tls=False))
    tls = c.core.list_secret_for_all_namespaces(field_selector="type=kubernetes.io/tls")
    assert [s.metadata.name for s in tls.items] == ["t1", "t2"]
    assert [s.metadata.name for s in c.core.list_namespaced_secret("default", field_selector="type!=kubernetes.io/tls",
                                                                   ).items] == ["opaque"]
    with pytest.raises(ApiException) as info:
        c.core.list_namespaced_secret("default", field_selector="data.x=y")
    assert info.value.status == 400 and status_of(info.value)["message"] == "field label not supported: data.x"

    c.net.create_ingress_class({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                                "metadata": {"name": "fastingress", "labels": {"tier": "edge"}},
                                "spec": {"controller": "fastingress.io/controller"}})
    assert [k.metadata.name for k in c.net.list_ingress_class(label_selector="tier in (edge,core),!legacy").items] == \
        ["fastingress"]
    assert c.net.read_ingress_class("fastingress").metadata.namespace is None  # cluster-scoped

    c.disc.create_namespaced_endpoint_slice("default", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": True}}], "ports": [{"port": 8080}]})
    slices = c.disc.list_endpoint_slice_for_all_namespaces(label_selector="kubernetes.io/service-name=web")
    assert slices.items[0].ports[0].protocol == "TCP"  # defaulted like the real server

    for i in range(5):
        api.create(service(f"s{i}"))
    page = c.core.list_namespaced_service("default", limit=2)
    assert [s.metadata.name for s in page.items] == ["s0", "s1"] and page.metadata.remaining_item_count == 3
    assert page.items[0].spec.cluster_ip and page.items[0].spec.ports[0].target_port == 80
    api.create(service("s5"))  # later pages still show the first page's snapshot
    names = [s.metadata.name for s in page.items]
    while page.metadata._continue:
        page = c.core.list_namespaced_service("default", limit=2, _continue=page.metadata._continue)
        names += [s.metadata.name for s in page.items]
    assert names == ["s0", "s1", "s2", "s3", "s4"]
    token = c.core.list_namespaced_service("default", limit=2).metadata._continue
    api.compact()
    with pytest.raises(ApiException) as info:
        c.core.list_namespaced_service("default", limit=2, _continue=token)
    assert info.value.status == 410 and status_of(info.value)["reason"] == "Expired"


# --- faults ----------------------------------------------------------------------------------------------
def test_fail_requests_by_count_duration_and_retry_after(api: ApiServer, c: Clients) -> None:
    api.create(ingress("a"))
    api.fail_requests(2, code=500, verbs="list", resources="ingresses")
    assert c.core.list_namespaced_service("default").items == []  # not matched
    for _ in range(2):
        with pytest.raises(ApiException) as info:
            c.net.list_namespaced_ingress("default")
        assert info.value.status == 500 and status_of(info.value)["reason"] == "InternalError"
    assert len(c.net.list_namespaced_ingress("default").items) == 1

    api.fail_requests(1, verbs="watch")  # a failed watch raises at once, with or without timeout_seconds
    with pytest.raises(ApiException) as info:
        list(watch.Watch().stream(c.net.list_namespaced_ingress, "default"))
    assert info.value.status == 500

    api.fail_requests(None, for_s=0.5, code=503)
    with pytest.raises(ApiException) as info:
        c.net.read_namespaced_ingress("a", "default")
    assert info.value.status == 503 and status_of(info.value)["reason"] == "ServiceUnavailable"

    def read_ok() -> bool:
        try:
            return bool(c.net.read_namespaced_ingress("a", "default"))
        except ApiException as exc:
            assert exc.status == 503
            return False
    wait_until(read_ok, "the end of the 503 window")

    api.reset_counters()
    api.fail_requests(2, code=503, retry_after_s=0)  # urllib3 retries 503 + Retry-After by itself
    assert c.net.read_namespaced_ingress("a", "default").metadata.name == "a"
    assert api.count("get", "ingresses") == 3


def test_delay_requests_and_the_clients_read_timeout(api: ApiServer, c: Clients) -> None:
    api.create(ingress("a"))
    api.delay_requests(0.3, 1, verbs="get")
    started = time.monotonic()
    c.net.read_namespaced_ingress("a", "default")
    assert time.monotonic() - started >= 0.3

    api.reset_counters()
    api.delay_requests(1.0, None, verbs="get")  # every GET now outlives a 0.1 s read timeout
    with pytest.raises(urllib3.exceptions.MaxRetryError) as info:
        c.net.read_namespaced_ingress("a", "default", _request_timeout=(1, 0.1))
    assert isinstance(info.value.reason, urllib3.exceptions.ReadTimeoutError)
    assert api.count("get") == 4  # urllib3's default Retry: the GET was sent 1 + 3 times
    api.clear_faults()


def test_send_bookmarks_queues_behind_earlier_events(api: ApiServer, c: Clients) -> None:
    rv = str(api.resource_version)
    with_bookmarks = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=rv,
                                 allow_watch_bookmarks=True, timeout_seconds=30)
    without = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=rv, timeout_seconds=30)
    api.wait_for_watches(2)
    rvs = [api.create(ingress(name))["metadata"]["resourceVersion"] for name in "abc"]
    assert api.send_bookmarks() == 1  # only the watch that asked for bookmarks
    api.create(ingress("d"))
    assert with_bookmarks.events(4, bookmarks=True) == [
        ("ADDED", "a", rvs[0]), ("ADDED", "b", rvs[1]), ("ADDED", "c", rvs[2]), ("BOOKMARK", None, rvs[2])]
    assert [t for t, _, _ in without.events(4, bookmarks=True)] == ["ADDED"] * 4
    for w in (with_bookmarks, without):
        w.stop()


def test_drop_watches_then_resume(api: ApiServer, c: Clients) -> None:
    rv = str(api.create(ingress("a"))["metadata"]["resourceVersion"])
    w = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=rv, timeout_seconds=30)
    b_rv = api.create(ingress("b"))["metadata"]["resourceVersion"]
    assert w.events(1) == [("ADDED", "b", b_rv)]
    assert api.drop_watches() == 1
    outcome = w.outcome()
    assert isinstance(outcome, urllib3.exceptions.ProtocolError) and "ended prematurely" in str(outcome)
    c_rv = api.create(ingress("c"))["metadata"]["resourceVersion"]  # written while nobody watches
    resumed = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=w.watch.resource_version,
                          timeout_seconds=30)
    assert resumed.events(1) == [("ADDED", "c", c_rv)]
    resumed.stop()
    wait_until(lambda: api.open_watches() == 0, "the stopped watch's end on the server")


def test_stop_and_restart_on_the_same_port(api: ApiServer, c: Clients) -> None:
    rv = str(api.create(ingress("a"))["metadata"]["resourceVersion"])
    w = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=rv, timeout_seconds=30)
    api.wait_for_watches(1)
    port = api.port
    api.stop()
    assert isinstance(w.outcome(), urllib3.exceptions.ProtocolError)
    with pytest.raises(urllib3.exceptions.MaxRetryError) as info:
        c.net.list_namespaced_ingress("default")
    assert isinstance(info.value.reason, urllib3.exceptions.NewConnectionError)  # connection refused
    outage_rv = api.create(ingress("b"))["metadata"]["resourceVersion"]  # the store lives on
    api.start()
    assert api.port == port
    assert c.net.list_namespaced_ingress("default").metadata.resource_version == outage_rv
    resumed = WatchThread(c.net.list_namespaced_ingress, "default", resource_version=rv, timeout_seconds=30)
    assert resumed.events(1) == [("ADDED", "b", outage_rv)]
    api.restart()
    assert isinstance(resumed.outcome(), urllib3.exceptions.ProtocolError)
    assert api.counts()[("watch", "ingresses")] == 2


def test_kubeconfig_and_bearer_token(tmp_path: Path) -> None:
    with ApiServer(token="s3cret") as api:
        api.create(service("web"))
        path = api.write_kubeconfig(tmp_path / "kubeconfig")
        from_file = config.new_client_from_config(config_file=str(path))
        assert [s.metadata.name for s in client.CoreV1Api(from_file).list_namespaced_service("default").items] == \
            ["web"]
        anonymous = client.ApiClient(client.Configuration(host=api.url))
        with pytest.raises(ApiException) as info:
            client.CoreV1Api(anonymous).list_namespaced_service("default")
        assert info.value.status == 401 and status_of(info.value)["reason"] == "Unauthorized"
        for api_client in (from_file, anonymous):
            api_client.close()
