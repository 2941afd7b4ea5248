"""Endpoint choice and passive ejection (workers/proxy/pool.py): pure per-worker state, no sockets."""

from __future__ import annotations

from collections import Counter

from workers.proxy.pool import UpstreamPools

EPS = (("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80))


def pools(least_request: bool = False) -> UpstreamPools:
    return UpstreamPools(keepalive_max=2, keepalive_idle_s=60.0, eject_failures=3, eject_s=10.0,
                         least_request=least_request)


def test_round_robin_cycles_per_upstream() -> None:
    p = pools()
    picks = [p.choose(0, 1, EPS, now=0.0) for _ in range(6)]
    assert picks == [*EPS, *EPS]
    # another upstream has its own position: interleaving does not skew either
    assert [p.choose(1, 1, EPS, 0.0), p.choose(0, 1, EPS, 0.0), p.choose(1, 1, EPS, 0.0)] == [EPS[0], EPS[0], EPS[1]]


def test_excluded_endpoints_are_skipped_and_none_when_all_are() -> None:
    p = pools()
    assert p.choose(0, 1, EPS, 0.0, exclude=(EPS[0],)) == EPS[1]
    assert p.choose(0, 1, EPS, 0.0, exclude=EPS) is None
    assert p.choose(0, 1, EPS[:1], 0.0, exclude=EPS[:1]) is None


def test_ejection_after_consecutive_connect_failures_and_recovery() -> None:
    p = pools()
    for _ in range(3):
        p.connect_failed(EPS[0], now=100.0)
    assert p.ejections == 1
    picks = {p.choose(0, 1, EPS, now=101.0) for _ in range(10)}
    assert EPS[0] not in picks  # ejected for eject_s
    assert EPS[0] in {p.choose(0, 1, EPS, now=111.0) for _ in range(10)}  # back after eject_s
    p.connect_succeeded(EPS[0])
    assert p.state(EPS[0]).failures == 0


def test_failures_below_the_threshold_do_not_eject() -> None:
    p = pools()
    p.connect_failed(EPS[0], 0.0)
    p.connect_failed(EPS[0], 0.0)
    p.connect_succeeded(EPS[0])  # a success resets the count
    p.connect_failed(EPS[0], 0.0)
    assert p.ejections == 0 and EPS[0] in {p.choose(0, 1, EPS, 1.0) for _ in range(3)}


def test_all_ejected_still_serves_rather_than_fail() -> None:
    p = pools()
    for ep in EPS:
        for _ in range(3):
            p.connect_failed(ep, 0.0)
    assert p.choose(0, 1, EPS, 1.0) in EPS  # like Envoy's panic threshold: better a try than a certain 502


def test_least_request_prefers_the_idler_endpoint() -> None:
    p = pools(least_request=True)
    p.state(EPS[0]).active = 50
    p.state(EPS[1]).active = 50
    picks = Counter(p.choose(0, 1, EPS, 0.0) for _ in range(300))
    # power of two choices: EPS[2] wins every draw it is in (2 of 3 pairs), the busy two split the rest
    assert picks[EPS[2]] > 150 and picks[EPS[0]] + picks[EPS[1]] > 0


def test_least_request_skips_ejected() -> None:
    p = pools(least_request=True)
    for _ in range(3):
        p.connect_failed(EPS[2], 0.0)
    assert EPS[2] not in {p.choose(0, 1, EPS, 1.0) for _ in range(50)}
