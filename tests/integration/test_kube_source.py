"""The Kubernetes source against the test API server, through the real `kubernetes` client.

What must hold: nothing is emitted before every kind has listed; changes arrive as Change batches;
status-only updates never reach the Store; dropped watches resume from the last resourceVersion
(no relist); a 410 relists and the diff (including deletions missed meanwhile) is emitted; errors
back off, degrade health and recover; a restricted namespace still delivers the default certificate
and the published Service; stop is prompt.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastingress.model.objects import Ingress, Kind, ObjectKey
from fastingress.model.problems import Problem
from fastingress.model.store import Change, Store
from fastingress.settings import Settings
from fastingress.sources.kube import KubeSource
from fastingress.sources.kubeapi import client_for
from tests.support import kubeobjects as k
from tests.support.apiserver import ApiServer
from tests.support.certs import make_cert

pytestmark = pytest.mark.integration

DEADLINE_S = 10.0


class Running:
    """A KubeSource in a thread; its emits in a queue, applied to a Store like the supervisor does."""

    def __init__(self, api: ApiServer, settings: Settings | None = None) -> None:
        self.source = KubeSource(settings or Settings(), client_factory=lambda: client_for(api.configuration()))
        self.batches: queue.Queue[tuple[list[Change], list[Problem]]] = queue.Queue()
        self.store = Store()
        self.problems: list[Problem] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.source.run, args=(self._emit, self.stop), daemon=True)
        self.thread.start()

    def _emit(self, changes: Any, problems: Any) -> None:
        self.batches.put((list(changes), list(problems)))

    def next(self, timeout_s: float = DEADLINE_S) -> tuple[list[Change], list[Problem]]:
        changes, problems = self.batches.get(timeout=timeout_s)
        for change in changes:
            self.store.apply(change)
        self.problems = problems
        return changes, problems

    def until(self, predicate: Callable[[], Any], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not predicate():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{what} not within {DEADLINE_S} s"
            try:
                self.next(remaining)
            except queue.Empty:
                pass

    def ingress_hosts(self) -> dict[str, str]:
        return {key.name: ing.rules[0].host for key, ing in self.store.snapshot().ingresses.items()}

    def close(self) -> float:
        started = time.monotonic()
        self.stop.set()
        self.thread.join(DEADLINE_S)
        return time.monotonic() - started


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


@pytest.fixture
def running(api: ApiServer) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(settings: Settings | None = None) -> Running:
        started.append(Running(api, settings))
        return started[-1]

    yield start
    for r in started:
        r.close()


def wait_health(r: Running, state: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while r.source.health() != state:
        assert time.monotonic() < deadline, f"health {r.source.health()}, not {state}"
        time.sleep(0.01)


def seed(api: ApiServer) -> None:
    api.create(k.ingress_class())
    api.create(k.service("web"))
    api.create(k.endpoint_slice("web-1", "web", ["10.0.0.1"], 8080))
    api.create(k.ingress("a", "a.test"))
    api.create(k.tls_secret("a-cert", *make_cert(["a.test"])))


def _pem_pair() -> tuple[bytes, bytes]:
    return make_cert(["a.test"])


def test_the_first_emit_waits_for_every_kind_and_carries_everything(api: ApiServer, running: Any) -> None:
    seed(api)
    api.create(k.opaque_secret("password"))
    api.delay_requests(1.0, count=1, verbs="list", resources="secrets")
    r = running()
    with pytest.raises(queue.Empty):
        r.next(0.6)  # Secrets are still listing: nothing may be emitted
    changes, problems = r.next()
    kinds = sorted(str(c.kind) for c in changes)
    assert kinds == sorted(str(x) for x in (Kind.INGRESS_CLASS, Kind.SERVICE, Kind.ENDPOINT_SLICE, Kind.INGRESS,
                                           Kind.SECRET))
    assert problems == []
    secrets = r.store.snapshot().secrets
    assert list(secrets) == [ObjectKey("default", "a-cert")]  # the Opaque one was filtered by the server
    assert all("type=kubernetes.io/tls" in (q.query.get("fieldSelector") or "")
               for q in api.requests if q.resource == "secrets")
    assert r.source.health() == "ok"


def test_changes_follow_and_status_only_updates_are_silent(api: ApiServer, running: Any) -> None:
    seed(api)
    r = running()
    r.next()
    api.create(k.ingress("b", "b.test"))
    r.until(lambda: r.ingress_hosts().get("b") == "b.test", "the new Ingress")
    api.patch("ingresses", "b", {"spec": {"rules": [{"host": "b2.test", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
    r.until(lambda: r.ingress_hosts().get("b") == "b2.test", "the edited Ingress")
    # a status write (what the leader does) reaches the load-balancer index, never the Store
    api.patch("ingresses", "b", {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}}, status=True)
    deadline = time.monotonic() + DEADLINE_S
    while r.source.index.ingress(ObjectKey("default", "b")) != (("192.0.2.7", ""),):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    api.delete("ingresses", "a")
    changes, _ = r.next()
    assert changes == [Change(Kind.INGRESS, ObjectKey("default", "a"), None)]  # the status write emitted nothing


def test_an_invalid_object_becomes_a_problem_and_goes_away_with_it(api: ApiServer, running: Any) -> None:
    seed(api)
    r = running()
    r.next()
    bad = k.ingress("bad", "b.test")
    bad["spec"]["rules"][0]["http"]["paths"][0]["path"] = "no-slash"
    api.create(bad)
    r.until(lambda: any(p.key.name == "bad" for p in r.problems), "the problem")
    assert ObjectKey("default", "bad") not in r.store.snapshot().ingresses
    api.delete("ingresses", "bad")
    r.until(lambda: not r.problems, "the problem to clear")


def test_dropped_watches_resume_from_the_last_version_without_relisting(api: ApiServer, running: Any) -> None:
    seed(api)
    r = running()
    r.next()
    api.wait_for_watches(5)
    lists = api.count("list")
    assert api.drop_watches() == 5
    api.create(k.ingress("c", "c.test"))  # while no watch is open
    r.until(lambda: "c" in r.ingress_hosts(), "the Ingress created during the drop")
    api.wait_for_watches(5)
    assert api.count("list") == lists  # resumed, not relisted
    resumed = [q for q in api.requests if q.verb == "watch"][-5:]
    assert all(q.query.get("resourceVersion") not in (None, "", "0") for q in resumed)


def test_410_relists_and_delivers_what_was_missed(api: ApiServer, running: Any) -> None:
    seed(api)
    api.create(k.ingress("gone", "gone.test"))
    r = running()
    r.next()
    api.wait_for_watches(5)
    api.stop()  # the API server goes away; meanwhile "gone" is deleted and history compacted
    api.start()
    api.delete("ingresses", "gone")
    api.create(k.ingress("new", "new.test"))
    api.compact()
    r.until(lambda: "gone" not in r.ingress_hosts() and "new" in r.ingress_hosts(), "convergence after 410")
    assert sum(reflector.counters["relists"] for reflector in r.source.reflectors) >= 1
    wait_health(r, "ok")


def test_watch_error_410_mid_stream_relists(api: ApiServer, running: Any) -> None:
    seed(api)
    r = running()
    r.next()
    api.wait_for_watches(5)
    lists = api.count("list", "ingresses")
    api.expire_watches(resources="ingresses")
    api.create(k.ingress("d", "d.test"))
    r.until(lambda: "d" in r.ingress_hosts(), "the Ingress after the relist")
    assert api.count("list", "ingresses") == lists + 1


def test_failures_degrade_health_back_off_and_recover(api: ApiServer, running: Any) -> None:
    seed(api)
    r = running()
    r.next()
    api.wait_for_watches(5)
    api.fail_requests(None, for_s=2.0, code=500)
    api.drop_watches()
    wait_health(r, "degraded")
    time.sleep(1.9)
    failed = api.count("watch")
    assert failed < 5 * 8, f"{failed} watch attempts in 2 s: no backoff"
    api.create(k.ingress("e", "e.test"))
    r.until(lambda: "e" in r.ingress_hosts(), "convergence after the 500s")
    wait_health(r, "ok")


def test_a_restricted_namespace_still_sees_the_default_certificate_and_published_service(
        api: ApiServer, running: Any) -> None:
    api.create(k.ingress_class())
    api.create(k.ingress("mine", "m.test", namespace="team"))
    api.create(k.ingress("theirs", "t.test", namespace="other"))
    api.create(k.tls_secret("default-cert", *_pem_pair(), namespace="infra"))
    api.create(k.tls_secret("unrelated", *_pem_pair(), namespace="infra"))
    svc = k.service("fastingress", namespace="infra", service_type="LoadBalancer")
    api.create(svc)
    api.patch("services", "fastingress", {"status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}},
              namespace="infra", status=True)
    r = running(Settings(watch_namespace="team", default_tls_secret="infra/default-cert",
                         publish_service="infra/fastingress"))
    r.next()
    snap = r.store.snapshot()
    assert list(snap.ingresses) == [ObjectKey("team", "mine")]
    assert list(snap.secrets) == [ObjectKey("infra", "default-cert")]
    assert r.source.index.service() == (("", "lb.example"),)
    assert not any(q.namespace == "other" for q in api.requests)


def test_stop_is_prompt_with_open_watches(api: ApiServer, running: Any) -> None:
    seed(api)
    r = running()
    r.next()
    api.wait_for_watches(5)
    assert r.close() < 2.0
    assert not r.thread.is_alive()


def test_ingress_objects_are_converted_as_the_manifests_source_would(api: ApiServer, running: Any) -> None:
    seed(api)
    r = running()
    r.next()
    ing = r.store.snapshot().ingresses[ObjectKey("default", "a")]
    assert isinstance(ing, Ingress)
    assert ing.class_name == "fastingress" and ing.generation == 1 and ing.uid and ing.created
