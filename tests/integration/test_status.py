"""`StatusWriter` (fastingress/supervisor/status.py) against the test API server with the real client.

The `LoadBalancerIndex` is fed the way the kube source feeds it: from the objects the API server
holds (a feeder thread re-reads them every few milliseconds, like a watch with a little latency).
Leadership comes from a real `LeaseElector` on the same server.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastingress.model.objects import ObjectKey
from fastingress.sources.lbstatus import LoadBalancerIndex, parse_lb_ingress, service_addresses
from fastingress.supervisor.election import LeaseElector
from fastingress.supervisor.status import MERGE_PATCH, StatusWriter
from tests.support.apiserver import ApiServer
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

DEADLINE_S = 5.0
QUIET_S = 0.4  # how long "nothing happens" is watched for (a negative can only be checked for a while)
PUBLISHED = ObjectKey("default", "fastingress")
A, B, C = ObjectKey("default", "a"), ObjectKey("default", "b"), ObjectKey("other", "c")


def ingress(key: ObjectKey) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": key.name, "namespace": key.namespace},
            "spec": {"ingressClassName": "fastingress",
                     "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}


def lb_service(ips: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": PUBLISHED.name, "namespace": PUBLISHED.namespace},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def lb_of(api: ApiServer, key: ObjectKey) -> list[dict[str, str]] | None:
    obj = api.get("ingresses", key.name, key.namespace)
    return None if obj is None else ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")


def patches(api: ApiServer) -> int:
    return api.count("patch", "ingresses/status")


class Feeder:
    """Records what the API server holds into the index, as the kube source's watches would."""

    def __init__(self, api: ApiServer, index: LoadBalancerIndex) -> None:
        self.api, self.index = api, index
        self.paused = False
        self._stop = threading.Event()
        self.sync()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sync(self) -> None:
        items = self.api.objects("ingresses")
        self.index.replace_ingresses(
            (ObjectKey(o["metadata"]["namespace"], o["metadata"]["name"]), parse_lb_ingress(o.get("status")))
            for o in items)
        if self.index.publish_service is not None:
            svc = self.api.get("services", self.index.publish_service.name, self.index.publish_service.namespace)
            self.index.set_service(None if svc is None else service_addresses(svc))

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            if not self.paused:
                self.sync()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)


class World:
    """The API server with Ingresses a, b (default) and c (other), a fed index, an elector and the writer."""

    def __init__(self, api: ApiServer, *, publish_address: str = "", publish_service: ObjectKey | None = None,
                 lease_held_by: str = "") -> None:
        self.api = api
        for key in (A, B, C):
            api.create(ingress(key))
        if lease_held_by:  # someone else leads (for an hour): our elector stays a follower
            api.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": "fastingress-leader", "namespace": "default"},
                        "spec": {"holderIdentity": lease_held_by, "leaseDurationSeconds": 3600,
                                 "renewTime": "2030-01-01T00:00:00.000000Z", "leaseTransitions": 0}})
        self.client = api.api_client()
        self.index = LoadBalancerIndex(publish_service)
        self.feeder = Feeder(api, self.index)
        self.elector = LeaseElector(self.client, namespace="default", name="fastingress-leader", identity="me",
                                    lease_duration_s=1.5, renew_deadline_s=1.0, retry_period_s=0.2)
        self.writer = StatusWriter(self.client, self.index, self.elector, publish_address=publish_address,
                                   backoff_s=(0.05, 0.4))
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=t.run, args=(self.stop,), daemon=True)
                        for t in (self.elector, self.writer)]
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(DEADLINE_S)
            assert not t.is_alive()
        self.feeder.close()
        self.client.close()


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


@pytest.fixture
def world(api: ApiServer) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(**kw: Any) -> World:
        made.append(World(api, **kw))
        return made[-1]
    yield make
    for w in made:
        w.close()


OURS = [{"hostname": "lb.example.com"}, {"ip": "203.0.113.7"}]  # sorted as the index sorts them


def test_the_leader_writes_the_publish_address_once(api: ApiServer, world: Callable[..., World]) -> None:
    w = world(publish_address="203.0.113.7, lb.example.com")
    wait_until(lambda: w.writer.is_leader, "leadership")
    w.writer.update_owned((A, B))
    wait_until(lambda: lb_of(api, A) == OURS and lb_of(api, B) == OURS, "status written")
    assert lb_of(api, C) == [] or lb_of(api, C) is None  # not ours: never written
    writes = [r for r in api.requests if r.verb == "patch"]
    assert len(writes) == 2 and {r.content_type for r in writes} == {MERGE_PATCH}
    # wake it every way there is: nothing differs any more, so nothing is written
    wait_until(lambda: w.index.ingress(A) == parse_lb_ingress({"loadBalancer": {"ingress": OURS}}), "index caught up")
    for _ in range(3):
        w.writer.update_owned((A, B))
        w.writer.wake()
        api.patch("ingresses", C.name, {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.3"}]}}}, C.namespace,
                  status=True)  # an index change of an Ingress that is not ours
        time.sleep(QUIET_S / 3)
    assert patches(api) == 2 and w.writer.stats() == {"writes": 2, "write_failures": 0, "clears": 0}


def test_the_published_services_addresses_are_written(api: ApiServer, world: Callable[..., World],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastingress.supervisor.status")
    w = world(publish_service=PUBLISHED)
    w.writer.update_owned((A, B, C))
    wait_until(lambda: w.writer.is_leader, "leadership")
    time.sleep(QUIET_S)  # the Service does not exist yet: nothing is known, nothing written
    assert patches(api) == 0
    assert any("is not known" in r.getMessage() for r in caplog.records)

    api.create(lb_service([]))  # a LoadBalancer Service whose load balancer is not provisioned yet
    wait_until(lambda: any("has no addresses" in r.getMessage() for r in caplog.records), "the pending load balancer")
    time.sleep(QUIET_S)
    assert patches(api) == 0  # never an empty list: external-dns would delete the records

    api.patch("services", PUBLISHED.name, {"status": lb_service(["198.51.100.1"])["status"]}, status=True)
    want = [{"ip": "198.51.100.1"}]
    wait_until(lambda: all(lb_of(api, k) == want for k in (A, B, C)), "the Service's address written")
    assert patches(api) == 3

    api.patch("services", PUBLISHED.name, {"status": lb_service(["198.51.100.2", "198.51.100.1"])["status"]},
              status=True)
    want = [{"ip": "198.51.100.1"}, {"ip": "198.51.100.2"}]
    wait_until(lambda: all(lb_of(api, k) == want for k in (A, B, C)), "the new addresses written")
    assert patches(api) == 6
    reasons = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert len(reasons) == 2  # once per reason, not once per pass


def test_a_follower_writes_nothing_until_it_leads(api: ApiServer, world: Callable[..., World]) -> None:
    w = world(publish_address="203.0.113.7", lease_held_by="other-replica")
    w.writer.update_owned((A, B))
    wait_until(lambda: w.elector.holder == "other-replica", "the follower seeing the leader")
    time.sleep(QUIET_S)
    assert not w.writer.is_leader and patches(api) == 0
    api.delete("leases", "fastingress-leader")  # the other replica is gone (and its Lease with it)
    wait_until(lambda: lb_of(api, A) == [{"ip": "203.0.113.7"}] and lb_of(api, B) == [{"ip": "203.0.113.7"}],
               "status written by the new leader")
    assert w.writer.is_leader and patches(api) == 2


def test_someone_elses_status_is_put_right(api: ApiServer, world: Callable[..., World]) -> None:
    w = world(publish_address="203.0.113.7")
    w.writer.update_owned((A,))
    wait_until(lambda: lb_of(api, A) == [{"ip": "203.0.113.7"}], "status written")
    wait_until(lambda: w.index.ingress(A) == (("203.0.113.7", ""),), "index caught up")
    api.patch("ingresses", A.name, {"status": {"loadBalancer": {"ingress": [{"ip": "10.9.9.9"}]}}}, status=True)
    wait_until(lambda: patches(api) == 2, "a second write")
    wait_until(lambda: lb_of(api, A) == [{"ip": "203.0.113.7"}], "status put right")
    time.sleep(QUIET_S)
    assert patches(api) == 2


def test_an_ingress_that_leaves_our_set_is_cleared_but_nothing_is_cleared_on_stop(
        api: ApiServer, world: Callable[..., World]) -> None:
    w = world(publish_address="203.0.113.7")
    w.writer.update_owned((A, B, C))
    ours = [{"ip": "203.0.113.7"}]
    wait_until(lambda: all(lb_of(api, k) == ours for k in (A, B, C)), "status written")
    wait_until(lambda: w.index.ingress(B) == (("203.0.113.7", ""),), "index caught up")
    w.writer.update_owned((A, C))
    wait_until(lambda: lb_of(api, B) == [], "B cleared")
    time.sleep(QUIET_S)
    assert lb_of(api, A) == ours and lb_of(api, C) == ours
    assert w.writer.stats() == {"writes": 3, "write_failures": 0, "clears": 1} and patches(api) == 4
    w.close()  # a rolling update: the status stays for the next leader, so external-dns keeps the records
    assert lb_of(api, A) == ours and lb_of(api, C) == ours and patches(api) == 4


def test_failures_are_retried_with_backoff_and_logged_once(
        api: ApiServer, world: Callable[..., World], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fastingress.supervisor.status")
    api.fail_requests(4, code=500, verbs="patch")
    w = world(publish_address="203.0.113.7")
    w.writer.update_owned((A, B))
    ours = [{"ip": "203.0.113.7"}]
    wait_until(lambda: lb_of(api, A) == ours and lb_of(api, B) == ours, "status written after the failures")
    # a 5xx ends the pass (the API is unwell): 4 failed passes with one PATCH each, then 2 writes
    assert patches(api) == 6 and w.writer.stats() == {"writes": 2, "write_failures": 4, "clears": 0}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 500" in warnings[0].getMessage()
    patch_times = [r.at for r in api.requests if r.verb == "patch"]
    gaps = [b - a for a, b in itertools.pairwise(patch_times[:4])]
    assert gaps[0] >= 0.04 and gaps[1] >= 0.09 and gaps[2] >= 0.19  # 50 ms, doubling
    assert any("succeed again" in r.getMessage() for r in caplog.records)


def test_an_unreachable_api_and_a_deleted_ingress(api: ApiServer, world: Callable[..., World]) -> None:
    w = world(publish_address="203.0.113.7")
    wait_until(lambda: w.writer.is_leader, "leadership")
    w.feeder.paused = True  # the index keeps showing B after it is deleted (a watch running late)
    api.delete("ingresses", B.name)
    w.writer.update_owned((A, B))
    wait_until(lambda: lb_of(api, A) == [{"ip": "203.0.113.7"}], "A written")
    time.sleep(QUIET_S)
    # B answered 404: skipped, not a failure, not retried
    assert patches(api) == 2 and w.writer.stats() == {"writes": 1, "write_failures": 0, "clears": 0}

    api.create(ingress(B))
    api.stop()  # connection refused: urllib3 errors, the pass stops and backs off
    w.feeder.sync()  # the watch delivered the new B just before the outage
    wait_until(lambda: w.writer.stats()["write_failures"] >= 2, "failed attempts during the outage")
    api.start()
    w.feeder.paused = False
    wait_until(lambda: lb_of(api, B) == [{"ip": "203.0.113.7"}], "B written after the outage")
    assert all(t.is_alive() for t in w.threads)
