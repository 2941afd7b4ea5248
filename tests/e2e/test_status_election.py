"""Two replicas on one API server: one leader (the Lease `fastingress-leader` in `default` names it),
Ingress status written by the leader only and never flipped by the other, fail-over after a SIGKILL
within the lease duration, hand-over within a retry period after a SIGTERM (the Lease is released),
and a Warning Event about a broken Ingress posted once, by the leader.

Replicas differ in FASTINGRESS_POD_NAME (replica-a, replica-b, ...) and FASTINGRESS_PUBLISH_ADDRESS
(192.0.2.1, 192.0.2.2, ...), so the status shows which replica wrote it. Lease timings are short
(2 s / 1.5 s / 0.3 s). The tests share the API server (conftest.py); `replicas.ensure()` starts what
is missing so that each test begins with two live replicas, and each test uses Ingresses of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.harness import (
    DEADLINE_S,
    Backends,
    ProxyFactory,
    answered_by,
    expose,
    holds_for,
    record_latency,
    timed_wait,
    wait_served,
)
from tests.support import kubeobjects as k
from tests.support.apiserver import ApiServer
from tests.support.proxy import ServedProxy

pytestmark = pytest.mark.e2e

LEASE = "fastingress-leader"
LEASE_DURATION_S = 2.0
LEASE_ENV = {"FASTINGRESS_POD_NAMESPACE": "default", "FASTINGRESS_LEASE_DURATION_S": "2",
             "FASTINGRESS_LEASE_RENEW_DEADLINE_S": "1.5", "FASTINGRESS_LEASE_RETRY_PERIOD_S": "0.3"}
# A follower takes over once the record it saw stayed unchanged for the lease duration, checked every
# retry period (+20 % jitter): 2.4 s after the last renewal at most; the rest is margin for a busy machine.
TAKEOVER_S = LEASE_DURATION_S + 1.5
# After a release the follower takes over at its next attempt (0.36 s at most) once the leader has
# drained and exited; this must stay under the lease duration, which an unreleased Lease needs.
RELEASED_TAKEOVER_S = 1.5
QUIET_S = 1.0  # a negative (no second write, no second Event) is watched for this long: 3 follower periods


@dataclass
class Replica:
    name: str
    address: str
    proxy: ServedProxy


class Replicas:
    """The live replicas of this module, by name."""

    def __init__(self, api: ApiServer, factory: ProxyFactory) -> None:
        self.api, self.factory = api, factory
        self.live: dict[str, Replica] = {}
        self._started = 0

    def ensure(self, count: int = 2) -> None:
        """Start replicas (at the same time) until `count` are live."""
        envs: list[dict[str, str]] = []
        while len(self.live) + len(envs) < count:
            self._started += 1
            name, address = f"replica-{'abcdefghij'[self._started - 1]}", f"192.0.2.{self._started}"
            envs.append({**LEASE_ENV, "FASTINGRESS_POD_NAME": name, "FASTINGRESS_PUBLISH_ADDRESS": address})
        for env, proxy in zip(envs, self.factory.start_many(envs), strict=True):
            name = env["FASTINGRESS_POD_NAME"]
            self.live[name] = Replica(name, env["FASTINGRESS_PUBLISH_ADDRESS"], proxy)

    def holder(self) -> str | None:
        lease = self.api.get("leases", LEASE, "default")
        return None if lease is None else (lease.get("spec") or {}).get("holderIdentity")

    def leader(self) -> Replica:
        """The leader, once exactly one replica leads: the Lease names it, and /metrics of every live
        replica agree (fastingress_leader 1 on it, 0 on the others)."""
        seen: list[object] = []

        def settled() -> bool:
            holder = self.holder()
            gauges = {name: leader_gauge(r.proxy) for name, r in self.live.items()}
            seen[:] = [holder, gauges]
            return holder in self.live and all(g == (1.0 if n == holder else 0.0) for n, g in gauges.items())
        try:
            timed_wait(settled, f"exactly one leader among {sorted(self.live)}", TAKEOVER_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: Lease holder {seen[0]!r}, fastingress_leader {seen[1]}") from None
        return self.live[str(seen[0])]

    def pair(self) -> tuple[Replica, Replica]:
        """(leader, follower) of two live replicas."""
        leader = self.leader()
        (follower,) = [r for r in self.live.values() if r is not leader]
        return leader, follower

    def remove(self, replica: Replica) -> None:
        del self.live[replica.name]


def leader_gauge(proxy: ServedProxy) -> float | None:
    status, body = proxy.admin("/metrics")
    assert status == 200, body
    for line in body.decode().splitlines():
        if line.startswith("fastingress_leader "):
            return float(line.split()[1])
    return None


def lb_ips(api: ApiServer, name: str) -> list[str] | None:
    obj = api.get("ingresses", name)
    if obj is None:
        return None
    entries = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [e.get("ip") or e.get("hostname") for e in entries]


def status_patches(api: ApiServer, name: str) -> int:
    return sum(1 for r in api.requests if r.verb == "patch" and r.resource == "ingresses/status" and r.name == name)


def events_about(api: ApiServer, name: str) -> list[dict[str, Any]]:
    return [e for e in api.objects("events") if (e.get("involvedObject") or {}).get("name") == name]


def served_by_all(replicas: Replicas, host: str, backend: str, what: str) -> None:
    """Wait until every live replica serves `host` from `backend`."""
    probes = {name: answered_by(r.proxy.http_port, host, backend) for name, r in replicas.live.items()}

    def everywhere() -> tuple[bool, str]:
        answers = {name: probe() for name, probe in probes.items()}
        return all(ok for ok, _ in answers.values()), "; ".join(f"{n}: {seen}" for n, (_, seen) in answers.items())
    wait_served(f"{what}, on every replica", everywhere)


def expose_served_with_status(api: ApiServer, backends: Backends, replicas: Replicas, name: str, leader: Replica,
                              what: str = "a new Ingress") -> None:
    """Expose `name` at `name.test`; wait until every replica serves it and its status names `leader`."""
    expose(api, name, f"{name}.test", backends(name))
    served_by_all(replicas, f"{name}.test", name, what)
    timed_wait(lambda: lb_ips(api, name) == [leader.address], f"status of {name} = {leader.name}'s address")


@pytest.fixture(scope="module")
def replicas(api: ApiServer, proxy_factory: ProxyFactory) -> Replicas:
    api.create(k.ingress_class())
    return Replicas(api, proxy_factory)


def test_one_leader_writes_status_and_the_other_never_flips_it(api: ApiServer, backends: Backends,
                                                               replicas: Replicas) -> None:
    replicas.ensure(2)
    leader, follower = replicas.pair()
    expose_served_with_status(api, backends, replicas, "st", leader)

    # more publishes on both replicas: each one's status writer wakes; only the leader may write
    expose_served_with_status(api, backends, replicas, "st-more", leader, "another Ingress")
    holds_for(QUIET_S, lambda: lb_ips(api, "st") == lb_ips(api, "st-more") == [leader.address],
              lambda: f"status flipped away from the leader {leader.name}: {lb_ips(api, 'st')}, "
                      f"{lb_ips(api, 'st-more')}")
    assert replicas.holder() == leader.name
    assert (status_patches(api, "st"), status_patches(api, "st-more")) == (1, 1), \
        f"status PATCHes: st {status_patches(api, 'st')}, st-more {status_patches(api, 'st-more')} (want 1 each)"
    assert follower.address not in (lb_ips(api, "st") or [])


def test_a_broken_ingress_yields_one_warning_event_from_the_leader(api: ApiServer, backends: Backends,
                                                                   replicas: Replicas) -> None:
    replicas.ensure(2)
    leader = replicas.leader()
    api.create(k.ingress("broken", "broken.test", "no-such-service"))
    timed_wait(lambda: events_about(api, "broken"), "a Warning Event about Ingress broken")
    (event,) = events_about(api, "broken")
    assert event["type"] == "Warning"
    assert event["reason"] == "ServiceNotFound"  # fastingress/compiler/upstreams.py
    assert {k: event["involvedObject"].get(k) for k in ("kind", "namespace", "name")} == \
        {"kind": "Ingress", "namespace": "default", "name": "broken"}
    assert event.get("reportingInstance") == leader.name
    assert (event.get("source") or {}).get("host") == leader.name

    # another table publish on both replicas: the problem is still there, and is not reported again
    expose(api, "ev-tick", "ev-tick.test", backends("ev-tick"))
    served_by_all(replicas, "ev-tick.test", "ev-tick", "a publish after the Event")
    holds_for(QUIET_S, lambda: len(events_about(api, "broken")) == 1, lambda: str(events_about(api, "broken")))
    api.delete("ingresses", "broken")  # a later fail-over would report it again (design 0007: no Event reads)


def test_sigkill_of_the_leader_fails_over_within_the_lease_duration(api: ApiServer, backends: Backends,
                                                                     replicas: Replicas) -> None:
    replicas.ensure(2)
    leader, follower = replicas.pair()
    expose_served_with_status(api, backends, replicas, "ko", leader)

    killed = time.monotonic()
    replicas.factory.kill(leader.proxy)
    replicas.remove(leader)
    took = timed_wait(lambda: replicas.holder() == follower.name, f"{follower.name} takes the Lease", TAKEOVER_S)
    record_latency(f"SIGKILL of {leader.name}: {follower.name} holds the Lease", took)
    rewritten = timed_wait(lambda: lb_ips(api, "ko") == [follower.address],
                           f"status of ko rewritten to {follower.name}'s address", DEADLINE_S)
    record_latency(f"status rewritten by {follower.name} after the takeover", rewritten)
    assert replicas.leader() is follower
    assert time.monotonic() - killed < TAKEOVER_S + DEADLINE_S


def test_sigterm_of_the_leader_releases_the_lease(api: ApiServer, backends: Backends, replicas: Replicas) -> None:
    replicas.ensure(2)
    leader, follower = replicas.pair()
    expose_served_with_status(api, backends, replicas, "bye", leader)

    leader.proxy.proc.terminate()  # graceful: drain, then release the Lease on the way out
    took = timed_wait(lambda: replicas.holder() == follower.name, f"{follower.name} takes the released Lease",
                      RELEASED_TAKEOVER_S)
    record_latency(f"SIGTERM of {leader.name}: {follower.name} holds the Lease", took)
    assert leader.proxy.proc.wait(10) == 0  # its own exit: stop() now would signal a process tearing down
    replicas.factory.stop(leader.proxy)
    replicas.remove(leader)
    timed_wait(lambda: lb_ips(api, "bye") == [follower.address], f"status of bye rewritten to {follower.name}'s")
    assert replicas.leader() is follower
