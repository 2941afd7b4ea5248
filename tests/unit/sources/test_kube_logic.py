"""Pure parts of the Kubernetes source: the watch line splitter, the backoff, the status-only rule,
and the load-balancer address parsing."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from fastingress.model.objects import Ingress, Kind, ObjectKey, Service
from fastingress.model.problems import Problem
from fastingress.sources.kubeapi import is_gone, iter_watch
from fastingress.sources.lbstatus import LoadBalancerIndex, parse_lb_ingress, service_addresses
from fastingress.sources.reflector import Backoff, Reflector


class Chunks:
    """A response body cut into the given pieces (what urllib3's `stream` yields)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def stream(self, amt: int, decode_content: bool = True) -> Iterator[bytes]:
        yield from self.pieces


EVENTS = [{"type": "ADDED", "object": {"metadata": {"name": f"n{i}", "resourceVersion": str(i)}}} for i in range(5)]
BODY = b"".join(msgspec.json.encode(e) + b"\n" for e in EVENTS)


@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=12))
def test_watch_lines_decode_the_same_however_the_stream_is_cut(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(BODY)]
    pieces = [BODY[a:b] for a, b in itertools.pairwise(bounds)]
    assert list(iter_watch(Chunks(pieces))) == EVENTS


def test_a_last_line_without_newline_and_blank_lines() -> None:
    body = b"\n" + msgspec.json.encode(EVENTS[0]) + b"\n\n" + msgspec.json.encode(EVENTS[1])
    assert list(iter_watch(Chunks([body]))) == EVENTS[:2]


def test_410_is_recognised_by_code_not_reason() -> None:
    assert is_gone({"kind": "Status", "code": 410, "reason": "Gone"})
    assert is_gone({"kind": "Status", "code": 410, "reason": "Expired"})
    assert not is_gone({"kind": "Status", "code": 500, "reason": "Expired"})
    assert is_gone(410) and not is_gone(404)


@given(st.lists(st.booleans(), max_size=30), st.floats(min_value=0, max_value=0.999))
def test_backoff_doubles_within_jitter_bounds_and_resets(resets: list[bool], r: float) -> None:
    backoff = Backoff(0.5, 10.0, rng=lambda: r)
    nominal = 0.5
    for reset in resets:
        if reset:
            backoff.reset()
            nominal = 0.5
        delay = backoff.next()
        assert nominal / 2 <= delay < nominal + 1e-9
        nominal = min(nominal * 2, 10.0)


def _ingress(rv: str, host: str = "a.test") -> Ingress:
    return Ingress(ObjectKey("default", "a"), resource_version=rv, generation=1,
                   annotations={"host": host})


def test_only_a_new_resource_version_is_not_a_change() -> None:
    problem = Problem(Kind.INGRESS, ObjectKey("default", "a"), "", "InvalidPath", "bad")
    assert not Reflector._changed((_ingress("1"), ()), (_ingress("2"), ()))
    assert Reflector._changed((_ingress("1"), ()), (_ingress("2", "b.test"), ()))
    assert Reflector._changed((_ingress("1"), ()), (_ingress("2"), (problem,)))
    assert Reflector._changed(None, (None, (problem,)))
    assert Reflector._changed((_ingress("1"), ()), (None, (problem,)))
    assert not Reflector._changed((None, (problem,)), (None, (problem,)))
    svc = Service(ObjectKey("default", "s"), resource_version="3")
    assert not Reflector._changed((svc, ()), (msgspec.structs.replace(svc, resource_version="9"), ()))


def test_load_balancer_entries_are_parsed_sorted_and_garbage_skipped() -> None:
    status: Any = {"loadBalancer": {"ingress": [{"hostname": "lb.example"}, {"ip": "192.0.2.1"}, "junk", {},
                                                {"ip": 7}]}}
    assert parse_lb_ingress(status) == (("", "lb.example"), ("192.0.2.1", ""))
    assert parse_lb_ingress(None) == () and parse_lb_ingress({"loadBalancer": {"ingress": "x"}}) == ()


def test_service_addresses_fall_back_to_external_then_cluster_ip() -> None:
    lb = {"spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.9"},
          "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}}
    assert service_addresses(lb) == (("203.0.113.5", ""),)
    pending = {"spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.9"}, "status": {}}
    assert service_addresses(pending) == ()  # a load balancer still being provisioned publishes nothing
    external = {"spec": {"type": "NodePort", "externalIPs": ["198.51.100.2"]}}
    assert service_addresses(external) == (("198.51.100.2", ""),)
    assert service_addresses({"spec": {"clusterIP": "10.0.0.9"}}) == (("10.0.0.9", ""),)
    assert service_addresses({"spec": {"clusterIP": "None"}}) == ()  # headless


def test_index_calls_back_only_on_change() -> None:
    index = LoadBalancerIndex(ObjectKey("ns", "svc"))
    calls: list[int] = []
    index.on_change(lambda: calls.append(1))
    key = ObjectKey("default", "a")
    index.set_ingress(key, (("192.0.2.1", ""),))
    index.set_ingress(key, (("192.0.2.1", ""),))
    index.set_service(None)  # unknown -> unknown: no change
    index.set_service((("", "lb"),))
    index.replace_ingresses([(key, (("192.0.2.1", ""),))])
    index.set_ingress(key, None)
    assert len(calls) == 3 and index.ingress(key) is None and index.service() == (("", "lb"),)
