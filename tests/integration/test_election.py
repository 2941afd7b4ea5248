"""`LeaseElector` (fastingress/supervisor/election.py) against the test API server with the real client.

Short timings (lease 1.5 s, advertised as 2 s since the Lease API has whole seconds; renew deadline 1 s;
retry period 0.2 s) keep the file fast. A sampler thread reads every replica's `is_leader` in a tight
loop, so "never two leaders" is checked continuously, not only at the end.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes.client
import pytest

from fastingress.supervisor.election import JITTER, LeaseElector, describe_error, micro_time
from tests.support.apiserver import ApiServer

pytestmark = pytest.mark.integration

LEASE = "fastingress-leader"
LEASE_S, RENEW_S, RETRY_S = 1.5, 1.0, 0.2
WIRE_LEASE_S = math.ceil(LEASE_S)  # what followers wait: the holder's advertised leaseDurationSeconds
FOLLOWER_PERIOD_S = RETRY_S * (1 + JITTER)
SLACK_S = 0.35  # scheduling and request latency on a busy test machine
DEADLINE_S = 5.0


def wait_until(predicate: Callable[[], Any], what: str, timeout_s: float = DEADLINE_S) -> float:
    """Poll until `predicate()` is true; returns when (monotonic). AssertionError at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        time.sleep(0.002)
    return time.monotonic()


def lease_spec(api: ApiServer) -> dict[str, Any]:
    return dict(((api.get("leases", LEASE) or {}).get("spec")) or {})


class Replica:
    """One elector in its own thread, on its own client (retries off, as production's `client_for`)."""

    def __init__(self, api: ApiServer, identity: str) -> None:
        config = api.configuration()
        config.retries = False
        self.client = kubernetes.client.ApiClient(config)
        self.identity = identity
        self.elector = LeaseElector(self.client, namespace="default", name=LEASE, identity=identity,
                                    lease_duration_s=LEASE_S, renew_deadline_s=RENEW_S, retry_period_s=RETRY_S)
        self.changes: list[tuple[float, bool]] = []
        self.elector.on_change(lambda leader: self.changes.append((time.monotonic(), leader)))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.elector.run, args=(self.stop,), name=identity, daemon=True)

    @property
    def leader(self) -> bool:
        return self.elector.is_leader

    def start(self) -> Replica:
        self.thread.start()
        return self

    def halt(self, *, release: bool = True) -> float:
        """Stop the elector (release=False: like a crash, the Lease is left to run out); returns when."""
        self.elector.release_on_stop = release
        self.stop.set()
        self.thread.join(DEADLINE_S)
        assert not self.thread.is_alive()
        return time.monotonic()


class Sampler:
    """Reads `is_leader` of every replica in a loop; `most` is the largest number of leaders seen at once."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.most = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, sum(r.leader for r in self.replicas))
            self.samples += 1
            time.sleep(0.0005)

    def close(self) -> int:
        self._stop.set()
        self._thread.join(DEADLINE_S)
        assert self.samples > 100
        return self.most


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


@pytest.fixture
def replicas(api: ApiServer) -> Iterator[Callable[[str], Replica]]:
    made: list[Replica] = []

    def make(identity: str) -> Replica:
        made.append(Replica(api, identity))
        return made[-1]
    yield make
    for r in made:
        r.stop.set()
    for r in made:
        if r.thread.ident is not None:
            r.thread.join(DEADLINE_S)
        r.client.close()


def leader_of(group: list[Replica]) -> Replica:
    wait_until(lambda: sum(r.leader for r in group) == 1, "one leader")
    return next(r for r in group if r.leader)


# --- pure helpers -------------------------------------------------------------------------------------------
def elected_pair(replicas: Callable[[str], Replica]) -> tuple[Sampler, Replica, Replica]:
    """Replicas a and b started under a never-two-leaders sampler, once one of them leads."""
    group = [replicas("a").start(), replicas("b").start()]
    sampler = Sampler(group)
    leader = leader_of(group)
    return sampler, leader, next(r for r in group if r is not leader)


def test_micro_time_never_lands_on_a_whole_second() -> None:
    whole = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert micro_time(whole).isoformat() == "2030-01-02T03:04:05.000001+00:00"
    assert micro_time(whole.replace(microsecond=7)).microsecond == 7
    assert micro_time(whole.astimezone(dt.timezone(dt.timedelta(hours=2)))).tzinfo == dt.UTC


def test_describe_error_is_stable_per_reason() -> None:
    a = kubernetes.client.ApiException(status=500, reason="Internal Server Error")
    assert describe_error(a) == "HTTP 500 Internal Server Error"
    assert describe_error(ValueError("x")) == "ValueError"


def test_timings_must_be_ordered(api: ApiServer) -> None:
    with pytest.raises(ValueError):
        LeaseElector(api.api_client(), namespace="default", name=LEASE, identity="a", lease_duration_s=1.0,
                     renew_deadline_s=1.0, retry_period_s=0.2)


# --- one replica --------------------------------------------------------------------------------------------
def test_a_single_replica_acquires_renews_and_releases(api: ApiServer, replicas: Callable[[str], Replica]) -> None:
    a = replicas("a").start()
    wait_until(lambda: a.leader, "leadership")
    spec = lease_spec(api)
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 0
    assert spec["leaseDurationSeconds"] == WIRE_LEASE_S
    assert spec["acquireTime"] == spec["renewTime"]
    first_rv = (api.get("leases", LEASE) or {})["metadata"]["resourceVersion"]
    renewals: set[str] = set()
    wait_until(lambda: renewals.add(lease_spec(api)["renewTime"]) or len(renewals) >= 4, "4 renewals")
    for value in renewals:  # RFC 3339 with the six fraction digits metav1.MicroTime requires
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)", value), value
    after = api.get("leases", LEASE)
    assert after is not None and after["metadata"]["resourceVersion"] != first_rv  # every renewal is a real write
    assert after["spec"]["acquireTime"] == spec["acquireTime"] and after["spec"]["leaseTransitions"] == 0
    # the leader renews on the resourceVersion of its own last write: the one GET was the initial 404
    assert api.count("get", "leases") == 1 and api.count("create", "leases") == 1
    assert api.count("update", "leases") >= 3
    assert a.leader and [v for _, v in a.changes] == [True]

    a.halt(release=True)
    released = lease_spec(api)
    assert not released.get("holderIdentity") and released["leaseDurationSeconds"] == 1
    assert released["leaseTransitions"] == 0
    assert not a.leader and [v for _, v in a.changes] == [True, False]


# --- two replicas -------------------------------------------------------------------------------------------
def test_two_replicas_never_lead_together(api: ApiServer, replicas: Callable[[str], Replica]) -> None:
    sampler, leader, follower = elected_pair(replicas)
    time.sleep(4 * LEASE_S / 3)  # a while of steady state (longer than a lease): the follower must stay a follower
    assert leader.leader and not follower.leader
    assert follower.elector.holder == leader.identity
    assert lease_spec(api)["leaseTransitions"] == 0
    assert sampler.close() == 1


def test_a_crashed_leader_is_replaced_after_the_lease_duration(
        api: ApiServer, replicas: Callable[[str], Replica]) -> None:
    sampler, leader, follower = elected_pair(replicas)
    acquired = lease_spec(api)["acquireTime"]
    wait_until(lambda: follower.elector.holder == leader.identity, "the follower seeing the leader")
    crashed = leader.halt(release=False)
    assert lease_spec(api)["holderIdentity"] == leader.identity  # not released
    took_over = wait_until(lambda: follower.leader, "takeover", timeout_s=WIRE_LEASE_S + 3)
    # never before the lease ran out on the follower's own clock (it saw the last renewal at most one
    # retry period before the crash), and within the lease plus one follower period after it
    assert WIRE_LEASE_S - RETRY_S - 0.05 <= took_over - crashed <= WIRE_LEASE_S + FOLLOWER_PERIOD_S + SLACK_S
    spec = lease_spec(api)
    assert spec["holderIdentity"] == follower.identity and spec["leaseTransitions"] == 1
    assert spec["acquireTime"] != acquired and spec["leaseDurationSeconds"] == WIRE_LEASE_S
    assert sampler.close() == 1


def test_a_released_lease_is_taken_over_within_a_retry_period(
        api: ApiServer, replicas: Callable[[str], Replica]) -> None:
    sampler, leader, follower = elected_pair(replicas)
    wait_until(lambda: follower.elector.holder == leader.identity, "the follower seeing the leader")
    stopped = leader.halt(release=True)
    took_over = wait_until(lambda: follower.leader, "takeover")
    assert took_over - stopped <= FOLLOWER_PERIOD_S + SLACK_S
    spec = lease_spec(api)
    assert spec["holderIdentity"] == follower.identity and spec["leaseTransitions"] == 1
    assert sampler.close() == 1


# --- failures -----------------------------------------------------------------------------------------------
def test_the_leader_steps_down_when_it_cannot_renew_for_the_renew_deadline(
        api: ApiServer, replicas: Callable[[str], Replica], caplog: pytest.LogCaptureFixture) -> None:
    a = replicas("a").start()
    wait_until(lambda: a.leader, "leadership")
    caplog.set_level(logging.INFO, logger="fastingress.supervisor.election")
    outage_s = RENEW_S + 0.8
    api.fail_requests(None, for_s=outage_s, code=500, resources="leases")
    began = time.monotonic()
    lost = wait_until(lambda: not a.leader, "stepping down")
    assert lost - began <= RENEW_S + 0.05  # is_leader itself turns False at the deadline
    reported = wait_until(lambda: len(a.changes) >= 2, "the loss reported to on_change")
    assert reported - began <= RENEW_S + RETRY_S + SLACK_S and a.changes[1][1] is False
    # nobody else wants the Lease: once the API answers again the same replica leads again
    wait_until(lambda: len(a.changes) >= 3, "leadership again", timeout_s=outage_s + 2)
    assert a.leader and [v for _, v in a.changes] == [True, False, True]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 500" in warnings[0].getMessage()  # one line for a streak of ~9 failures
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("lost leadership: not renewed") for m in messages)
    assert any("reachable again" in m for m in messages)


def test_a_hung_api_server_cannot_keep_a_leader_past_its_deadline(
        api: ApiServer, replicas: Callable[[str], Replica]) -> None:
    a = replicas("a").start()
    wait_until(lambda: a.leader, "leadership")
    api.delay_requests(30.0, for_s=RENEW_S + 0.5, resources="leases")  # requests hang (until the client gives up)
    began = time.monotonic()
    lost = wait_until(lambda: not a.leader, "stepping down")
    assert lost - began <= RENEW_S + 0.05
    # the per-request timeout (renew deadline / 4) lets the loop itself notice soon after
    reported = wait_until(lambda: len(a.changes) >= 2, "the loss reported")
    assert reported - began <= RENEW_S + RENEW_S / 2 + RETRY_S + SLACK_S
    wait_until(lambda: a.leader, "leadership again")


def test_no_exception_escapes_an_api_outage(api: ApiServer, replicas: Callable[[str], Replica]) -> None:
    group = [replicas("a").start(), replicas("b").start()]
    sampler = Sampler(group)
    leader_of(group)
    api.stop()  # connection refused: urllib3 errors, not ApiExceptions
    wait_until(lambda: not any(r.leader for r in group), "stepping down")
    time.sleep(RETRY_S * 3)
    assert all(r.thread.is_alive() for r in group)
    api.start()
    leader_of(group)
    assert sampler.close() == 1


# --- races --------------------------------------------------------------------------------------------------
def test_a_create_race_yields_one_leader(api: ApiServer, replicas: Callable[[str], Replica]) -> None:
    group = [replicas(name) for name in "abcd"]
    sampler = Sampler(group)
    api.delay_requests(0.15, verbs="create", resources="leases")  # all GETs 404 before the first create lands
    for r in group:
        r.start()
    leader = leader_of(group)
    time.sleep(2 * RETRY_S)
    assert sum(r.leader for r in group) == 1 and leader.leader
    assert api.count("create", "leases") >= 3  # the losers got 409 AlreadyExists
    assert lease_spec(api)["holderIdentity"] == leader.identity
    assert sampler.close() == 1


def test_a_takeover_race_yields_one_leader(api: ApiServer, replicas: Callable[[str], Replica]) -> None:
    now = micro_time(dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE, "namespace": "default"},
                "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 1, "acquireTime": now,
                         "renewTime": now, "leaseTransitions": 4}})
    group = [replicas(name) for name in "abcd"]
    sampler = Sampler(group)
    for r in group:
        r.start()
    wait_until(lambda: all(r.elector.holder == "ghost" for r in group), "everyone seeing the ghost")
    # Followers GET before they PUT, so without help a late GET would already see the winner. Holding each
    # PUT 50 ms before it is served makes every follower's GET come before the first write lands: a real
    # four-way compare-and-swap race on one resourceVersion.
    api.delay_requests(0.05, verbs="update", resources="leases")
    api.reset_counters()
    leader = leader_of(group)
    time.sleep(2 * RETRY_S)
    assert sum(r.leader for r in group) == 1 and leader.leader
    # all four waited out the same observed record and wrote on the same resourceVersion at about the same
    # time (the winner's first renewal comes a retry period later): one won, three got 409
    puts = [r.at for r in api.requests if r.verb == "update"]
    assert len([t for t in puts if t - puts[0] < RETRY_S / 2]) >= 3
    spec = lease_spec(api)
    assert spec["holderIdentity"] == leader.identity and spec["leaseTransitions"] == 5
    assert sampler.close() == 1
