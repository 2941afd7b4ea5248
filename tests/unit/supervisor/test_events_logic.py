"""`EventRecorder.record` without the sender: which problems become queued Events, and what they look like.

Dedupe per object generation, forget-and-resend, the per-object and global token buckets (injected
clock; hypothesis for the "never more than burst + elapsed/refill" bounds), the queue bound, message
truncation, skipped problems and cluster-scoped objects. No thread is started and nothing is posted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastingress.model.objects import Ingress, IngressClass, Kind, ObjectKey, Service, Snapshot
from fastingress.model.problems import Problem
from fastingress.supervisor.events import (
    GLOBAL_BURST,
    MAX_IDLE_BUCKETS,
    NOTE_LIMIT_BYTES,
    OBJECT_BURST,
    OBJECT_REFILL_S,
    EventRecorder,
    event_message,
    truncate_utf8,
)

WALL_NS = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z
WEB = ObjectKey("default", "web")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")  # module scope: hypothesis tests may not take function-scoped fixtures
def api_client() -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.client.ApiClient(kubernetes.client.Configuration(host="http://127.0.0.1:9"))  # never used
    yield client
    client.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(api_client: kubernetes.client.ApiClient, clock: Clock) -> Any:
    def make(**kw: Any) -> EventRecorder:
        kw.setdefault("queue_size", 100_000)
        return EventRecorder(api_client, "fastingress-7d9f-abcde", now=clock, wall_ns=lambda: WALL_NS, **kw)
    return make


def problem(name: str = "web", message: str = "path '/a' is invalid", *, kind: Kind = Kind.INGRESS,
            namespace: str = "default", field: str = "spec.rules[0].http.paths[0].path", reason: str = "InvalidPath",
            origin: str = "") -> Problem:
    return Problem(kind, ObjectKey(namespace, name), field, reason, message, origin=origin)


def ingress(name: str = "web", generation: int = 1, uid: str = "uid-1", rv: str = "10") -> Ingress:
    return Ingress(key=ObjectKey("default", name), uid=uid, generation=generation, resource_version=rv)


def snap(*ingresses: Ingress, services: tuple[Service, ...] = (), classes: tuple[IngressClass, ...] = ()) -> Snapshot:
    return Snapshot(ingresses={i.key: i for i in ingresses}, services={s.key: s for s in services},
                    classes={c.name: c for c in classes})


def drain(recorder: EventRecorder) -> list[tuple[str, dict[str, Any]]]:
    out = []
    while not recorder.outbox.empty():
        item = recorder.outbox.get_nowait()
        out.append((item.namespace, item.body))
    return out


# --- what an Event looks like ------------------------------------------------------------------------
def test_an_ingress_problem_becomes_one_warning_event(make: Any) -> None:
    rec = make()
    rec.record([problem()], snap(ingress()))
    [(namespace, body)] = drain(rec)
    assert namespace == "default"
    name = body["metadata"].pop("name")
    assert re.fullmatch(r"web\.[0-9a-f]{16}", name) and name == f"web.{WALL_NS:016x}"
    assert body == {
        "apiVersion": "v1", "kind": "Event", "metadata": {"namespace": "default"},
        "involvedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "namespace": "default",
                           "name": "web", "uid": "uid-1", "resourceVersion": "10"},
        "type": "Warning", "reason": "InvalidPath",
        "message": "path '/a' is invalid (field spec.rules[0].http.paths[0].path)",
        "source": {"component": "fastingress", "host": "fastingress-7d9f-abcde"},
        "reportingComponent": "fastingress.io/ingress-controller", "reportingInstance": "fastingress-7d9f-abcde",
        "firstTimestamp": "2023-11-14T22:13:20Z", "lastTimestamp": "2023-11-14T22:13:20Z", "count": 1,
    }
    assert rec.stats() == {"offered": 1, "sent": 0, "dropped_rate": 0, "dropped_full": 0, "failed": 0,
                           "retries": 0, "queued": 0, "tracked": 1}


def test_cluster_scoped_ingress_class_goes_to_the_default_namespace(make: Any) -> None:
    rec = make()
    klass = IngressClass(name="fastingress", controller="fastingress.io/ingress-controller", resource_version="7")
    rec.record([problem("fastingress", "bad parameters", kind=Kind.INGRESS_CLASS, namespace="", field="",
                        reason="InvalidParameters")], snap(classes=(klass,)))
    [(namespace, body)] = drain(rec)
    assert namespace == body["metadata"]["namespace"] == "default"
    assert body["involvedObject"] == {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                                      "name": "fastingress", "resourceVersion": "7"}
    assert body["message"] == "bad parameters"  # no field, no suffix


def test_objects_missing_from_the_snapshot_get_an_event_without_uid_or_version(make: Any) -> None:
    rec = make()
    secret = problem("tls", "the default certificate cannot be used", kind=Kind.SECRET, field="",
                     reason="DefaultCertificateUnusable")
    rec.record([secret], snap())
    [(_, body)] = drain(rec)
    assert body["involvedObject"] == {"apiVersion": "v1", "kind": "Secret", "namespace": "default", "name": "tls"}
    rec.record([secret], snap())  # still unknown: the same version "", nothing new
    assert drain(rec) == []


@pytest.mark.parametrize("skipped", [
    problem("", "not a mapping", kind=Kind.FILE, namespace="", reason="InvalidObject", origin="app.yaml:3"),
    problem("web", "from a manifests file", origin="manifests/app.yaml:12"),
    problem("", "no name", reason="InvalidName"),
])
def test_problems_without_a_kubernetes_object_are_skipped(make: Any, skipped: Problem) -> None:
    rec = make()
    rec.record([skipped], snap(ingress()))
    assert drain(rec) == [] and rec.stats()["offered"] == 0 and rec.stats()["tracked"] == 0


def test_long_names_and_reasons_stay_within_the_api_limits(make: Any) -> None:
    rec = make()
    long_name = "a" * 235 + "-" + "b" * 17  # 253 characters, the longest valid name; the cut falls after "-"
    rec.record([problem(long_name, reason="R" * 200)], snap())
    [(_, body)] = drain(rec)
    name = body["metadata"]["name"]
    assert len(name) <= 253 and re.fullmatch(r"a{235}\.[0-9a-f]{16}", name)  # no "-." left at the cut
    assert body["reason"] == "R" * 128 and body["involvedObject"]["name"] == long_name


def test_event_names_are_unique_within_one_clock_tick(make: Any) -> None:
    rec = make()
    rec.record([problem(message=f"m{i}") for i in range(5)], snap(ingress()))
    names = [body["metadata"]["name"] for _, body in drain(rec)]
    assert len(set(names)) == 5 and all(re.fullmatch(r"web\.[0-9a-f]{16}", n) for n in names)


# --- message truncation ------------------------------------------------------------------------------
def test_messages_are_cut_to_1024_bytes_on_a_character_boundary() -> None:
    assert truncate_utf8("x" * 1024, NOTE_LIMIT_BYTES) == "x" * 1024
    cut = truncate_utf8("x" * 1025, NOTE_LIMIT_BYTES)
    assert cut == "x" * 1021 + "..." and len(cut.encode()) == 1024
    accents = truncate_utf8("é" * 1000, NOTE_LIMIT_BYTES)  # 2000 bytes
    assert accents == "é" * 510 + "..." and len(accents.encode()) == 1023
    assert truncate_utf8("bad \ud800 surrogate", NOTE_LIMIT_BYTES) == "bad ? surrogate"
    long = problem(message="m" * 2000)
    assert len(event_message(long).encode()) == 1024 and event_message(long).endswith("m...")


@given(st.text(), st.integers(min_value=4, max_value=2048))
def test_truncation_never_exceeds_the_limit_and_keeps_what_fits(text: str, limit: int) -> None:
    out = truncate_utf8(text, limit)
    raw = out.encode()  # always valid UTF-8
    assert len(raw) <= limit
    clean = text.encode("utf-8", "replace").decode()
    if len(clean.encode()) <= limit:
        assert out == clean
    else:
        assert out.endswith("...") and clean.startswith(out[:-3])


# --- dedupe per generation ---------------------------------------------------------------------------
def test_the_same_problem_is_sent_once_per_ingress_generation(make: Any) -> None:
    rec = make()
    p = problem()
    rec.record([p], snap(ingress()))
    rec.record([p], snap(ingress()))
    assert len(drain(rec)) == 1
    rec.record([p], snap(ingress(rv="11")))  # a status write: new resourceVersion, same generation
    assert drain(rec) == []
    rec.record([p], snap(ingress(generation=2, rv="12")))  # edited, still broken
    [(_, body)] = drain(rec)
    assert body["involvedObject"]["resourceVersion"] == "12"
    rec.record([p], snap(ingress(generation=2, uid="uid-2", rv="13")))  # deleted and created again
    assert len(drain(rec)) == 1


def test_other_kinds_are_versioned_by_resource_version(make: Any) -> None:
    rec = make()
    p = problem("web", "port 81 not found", kind=Kind.SERVICE, field="spec.ports", reason="PortNotFound")
    rec.record([p], snap(services=(Service(key=WEB, resource_version="5"),)))
    rec.record([p], snap(services=(Service(key=WEB, resource_version="5"),)))
    assert len(drain(rec)) == 1
    rec.record([p], snap(services=(Service(key=WEB, resource_version="6"),)))
    assert len(drain(rec)) == 1


def test_a_problem_that_goes_away_is_forgotten_and_sent_again_when_it_returns(make: Any) -> None:
    rec = make()
    a, b = problem(message="a"), problem(message="b")
    rec.record([a, b], snap(ingress()))
    assert len(drain(rec)) == 2 and rec.stats()["tracked"] == 2
    rec.record([b], snap(ingress()))
    assert drain(rec) == [] and rec.stats()["tracked"] == 1  # memory follows the current problems
    rec.record([a, b], snap(ingress()))
    assert [body["message"].split(" ")[0] for _, body in drain(rec)] == ["a"]
    rec.record([], snap(ingress()))
    assert rec.stats()["tracked"] == 0


def test_problems_differing_only_by_field_are_two_events(make: Any) -> None:
    rec = make()
    rec.record([problem(field="spec.rules[0].host"), problem(field="spec.rules[1].host")], snap(ingress()))
    assert len(drain(rec)) == 2


def test_reset_forgets_what_was_offered(make: Any) -> None:
    rec = make()
    rec.record([problem()], snap(ingress()))
    rec.reset()
    rec.record([problem()], snap(ingress()))
    assert len(drain(rec)) == 2


# --- rate limits -------------------------------------------------------------------------------------
def test_per_object_burst_then_one_event_per_refill(make: Any, clock: Clock) -> None:
    rec = make()
    many = [problem(message=f"broken {i:02d}") for i in range(OBJECT_BURST + 5)]
    rec.record([*many, problem("other")], snap(ingress(), ingress("other")))
    assert len(drain(rec)) == OBJECT_BURST + 1  # the other Ingress has its own bucket
    assert rec.stats()["dropped_rate"] == 5
    rec.record([*many, problem("other")], snap(ingress(), ingress("other")))
    assert drain(rec) == [] and rec.stats()["dropped_rate"] == 5  # dropped for this generation, not retried
    clock.t += OBJECT_REFILL_S / 2
    rec.record([*many, problem(message="new 1")], snap(ingress()))
    assert drain(rec) == [] and rec.stats()["dropped_rate"] == 6
    clock.t += OBJECT_REFILL_S / 2
    rec.record([*many, problem(message="new 2"), problem(message="new 3")], snap(ingress()))
    assert [body["message"][:5] for _, body in drain(rec)] == ["new 2"]
    assert rec.stats()["dropped_rate"] == 7


def test_a_mass_breakage_is_capped_globally(make: Any, clock: Clock) -> None:
    rec = make()
    ingresses = [ingress(f"web-{i:05d}") for i in range(10_000)]
    problems = [problem(i.key.name) for i in ingresses]
    rec.record(problems, snap(*ingresses))
    s = rec.stats()
    assert s["queued"] == GLOBAL_BURST and s["dropped_rate"] == 10_000 - GLOBAL_BURST and s["offered"] == 10_000
    drain(rec)
    clock.t += 2.0  # 5 per second refill
    edited = [ingress(i.key.name, generation=2) if n < 50 else i for n, i in enumerate(ingresses)]
    rec.record(problems, snap(*edited))
    assert len(drain(rec)) == 10 and rec.stats()["dropped_rate"] == 10_000 - GLOBAL_BURST + 40


def test_a_full_queue_drops_and_counts_without_using_tokens(make: Any) -> None:
    rec = make(queue_size=2, global_burst=3)
    rec.record([problem(message=f"m{i}") for i in range(5)], snap(ingress()))
    assert rec.stats()["queued"] == 2 and rec.stats()["dropped_full"] == 3
    drain(rec)
    rec.record([problem(message="later")], snap(ingress()))  # the global bucket still holds a token
    assert len(drain(rec)) == 1


def test_buckets_of_healed_objects_are_forgotten_once_full(make: Any, clock: Clock) -> None:
    rec = make(global_burst=10**6)
    broken = [ingress(f"web-{i}") for i in range(MAX_IDLE_BUCKETS + 10)]
    rec.record([problem(i.key.name) for i in broken], snap(*broken))
    rec.record([], snap(*broken))  # all healed; their buckets are still refilling
    assert len(rec._buckets) == MAX_IDLE_BUCKETS  # the oldest beyond the bound went first
    clock.t += OBJECT_REFILL_S
    rec.record([], snap(*broken))
    assert rec._buckets == {}


@settings(max_examples=200, deadline=None)
@given(burst=st.integers(1, 6), refill_s=st.floats(1.0, 100.0),
       steps=st.lists(st.tuples(st.floats(0.0, 150.0), st.integers(0, 8), st.booleans()), max_size=40))
def test_events_per_object_never_exceed_burst_plus_elapsed_over_refill(
        api_client: kubernetes.client.ApiClient, burst: int, refill_s: float,
        steps: list[tuple[float, int, bool]]) -> None:
    clock = Clock()
    rec = EventRecorder(api_client, "pod", now=clock, object_burst=burst, object_refill_s=refill_s,
                        global_burst=10**6, queue_size=10**6)
    start, generation, messages, sent = clock.t, 1, 0, 0
    for dt, new, edited in steps:
        clock.t += dt
        generation += edited  # an edit offers every current problem again
        messages += new
        rec.record([problem(message=f"m{i}") for i in range(messages)], snap(ingress(generation=generation)))
        sent += len(drain(rec))
        assert sent <= burst + math.floor((clock.t - start) / refill_s + 1e-9)
    assert rec.stats()["offered"] == sent + rec.stats()["dropped_rate"]


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(0.0, 30.0), st.integers(0, 40), st.booleans()), max_size=15))
def test_events_overall_never_exceed_the_global_burst_plus_rate(
        api_client: kubernetes.client.ApiClient, steps: list[tuple[float, int, bool]]) -> None:
    clock = Clock()
    rec = EventRecorder(api_client, "pod", now=clock, global_burst=20, global_per_s=2.0, queue_size=10**6)
    start, sent, generation = clock.t, 0, 1
    problems: list[Problem] = []
    for dt, new, edited in steps:
        clock.t += dt
        generation += edited  # every broken Ingress edited at once: all offered again
        problems += [problem(f"web-{len(problems) + i}") for i in range(new)]
        rec.record(problems, snap(*(ingress(p.key.name, generation) for p in problems)))
        sent += len(drain(rec))
        assert sent <= 20 + math.floor((clock.t - start) * 2.0 + 1e-9)
    assert rec.stats()["offered"] == sent + rec.stats()["dropped_rate"]
