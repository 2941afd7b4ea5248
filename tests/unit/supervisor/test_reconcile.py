"""The reconcile pipeline with an injected clock and a real TableWriter in a temporary directory.

Debounce (holdoff and max delay), initial sync, endpoints-only generations, unchanged tables and
problem logging, all without a sleep.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastingress.compiler import compile_config
from fastingress.model.objects import EndpointSlice, Ingress, Kind, Service, TLSSecret
from fastingress.model.problems import Problem
from fastingress.model.store import Change, Store
from fastingress.settings import Settings
from fastingress.supervisor.keystore import KeyStore
from fastingress.supervisor.offline import compile_options
from fastingress.supervisor.reconcile import HOLDOFF_S, MAX_DELAY_S, PUBLISH_RETRY_S, Reconciler
from fastingress.table.lookup import RouteTable
from fastingress.table.shm import TableReader, TableWriter
from tests.support.certs import make_cert
from tests.unit.compiler.builders import endpoint_slice, endpoints, ingress, path, rule, secret, service, tls


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def put(obj: Ingress | Service | EndpointSlice | TLSSecret) -> Change:
    kind = {Ingress: Kind.INGRESS, Service: Kind.SERVICE, EndpointSlice: Kind.ENDPOINT_SLICE,
            TLSSecret: Kind.SECRET}[type(obj)]
    return Change(kind=kind, key=obj.key, obj=obj)


WEB = ingress("web", rule("a.example.com", path("/")))
SVC = service("web")
SLICE = endpoint_slice("web-1", "web", endpoints("10.0.0.1"))


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[TableWriter]:
    w = TableWriter(shm_dir=str(tmp_path))
    yield w
    w.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rec(writer: TableWriter, clock: Clock) -> Reconciler:
    return Reconciler(Settings(), writer, now=clock)


def synced(rec: Reconciler, clock: Clock, *objs: Ingress | Service | EndpointSlice) -> None:
    """Deliver the initial state and publish it."""
    rec.apply([put(o) for o in objs], [])
    clock.t += HOLDOFF_S
    assert rec.due(clock.t)
    assert rec.publish(clock.t)


def test_nothing_is_published_before_the_first_emit(rec: Reconciler, writer: TableWriter, clock: Clock) -> None:
    assert rec.deadline() is None
    assert not rec.due(clock.t + 60)
    assert not rec.publish(clock.t + 60)
    assert writer.routes_gen == 0 and rec.state.routes_generation == 0 and not rec.state.synced


def test_an_empty_initial_state_is_still_published(rec: Reconciler, writer: TableWriter, clock: Clock) -> None:
    rec.apply([], [])
    assert not rec.due(clock.t + HOLDOFF_S - 0.001)
    assert rec.due(clock.t + HOLDOFF_S)
    assert rec.publish(clock.t + HOLDOFF_S)
    assert (writer.routes_gen, writer.endpoints_gen) == (1, 1)
    assert rec.state.synced and rec.state.config is not None and rec.state.routes_generation == 1
    assert rec.deadline() is None


def test_holdoff_restarts_with_each_relevant_change(rec: Reconciler, clock: Clock) -> None:
    synced(rec, clock, WEB, SVC)
    start = clock.t
    for i in range(3):
        clock.t = start + i * 0.04
        rec.apply([put(endpoint_slice(f"s{i}", "web", endpoints(f"10.0.0.{i + 1}")))], [])
    last = clock.t
    assert not rec.due(last + HOLDOFF_S - 0.001)
    assert rec.due(last + HOLDOFF_S)


def test_max_delay_bounds_a_steady_trickle(rec: Reconciler, clock: Clock) -> None:
    synced(rec, clock, WEB, SVC)
    start = clock.t
    for i in range(20):  # a change every 40 ms, never quiet for a whole holdoff
        clock.t = start + i * 0.04
        rec.apply([put(endpoint_slice("s", "web", endpoints(f"10.0.1.{i + 1}")))], [])
        assert rec.due(clock.t) == (clock.t >= start + MAX_DELAY_S)
        if rec.due(clock.t):
            break
    assert rec.deadline() == pytest.approx(start + MAX_DELAY_S)


def test_irrelevant_changes_do_not_mark_dirty(rec: Reconciler, clock: Clock) -> None:
    synced(rec, clock, WEB, SVC)
    rec.apply([put(WEB), put(SVC)], [])  # equal objects: Store.apply says not relevant
    assert rec.deadline() is None


def test_endpoints_only_change_bumps_only_the_endpoints_generation(
    rec: Reconciler, writer: TableWriter, clock: Clock
) -> None:
    synced(rec, clock, WEB, SVC, SLICE)
    assert (writer.routes_gen, writer.endpoints_gen) == (1, 1)
    rec.apply([put(endpoint_slice("web-1", "web", endpoints("10.0.0.1", "10.0.0.2")))], [])
    clock.t += HOLDOFF_S
    assert rec.publish(clock.t)
    assert (writer.routes_gen, writer.endpoints_gen) == (1, 2)
    assert (rec.state.routes_generation, rec.state.endpoints_generation) == (1, 2)
    # the endpoints-only path gives exactly what a full compile of the same Store gives
    store = Store()
    for change in [put(WEB), put(SVC), put(endpoint_slice("web-1", "web", endpoints("10.0.0.1", "10.0.0.2")))]:
        store.apply(change)
    assert rec.state.config == compile_config(store.snapshot(), compile_options(Settings()))[0]


def test_route_change_bumps_both_generations(rec: Reconciler, writer: TableWriter, clock: Clock) -> None:
    synced(rec, clock, WEB, SVC, SLICE)
    rec.apply([put(ingress("web", rule("a.example.com", path("/"), path("/api"))))], [])
    clock.t += HOLDOFF_S
    assert rec.publish(clock.t)
    assert (writer.routes_gen, writer.endpoints_gen) == (2, 2)


def test_unchanged_output_publishes_nothing(rec: Reconciler, writer: TableWriter, clock: Clock) -> None:
    synced(rec, clock, WEB, SVC, SLICE)
    rec.apply([put(service("unused"))], [])  # relevant to the Store, but no Ingress routes to it
    clock.t += HOLDOFF_S
    assert rec.due(clock.t)
    assert not rec.publish(clock.t)
    assert (writer.routes_gen, writer.endpoints_gen) == (1, 1)
    assert rec.deadline() is None


def test_problems_are_logged_once_and_again_after_they_cleared(
    rec: Reconciler, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fastingress.supervisor.reconcile")

    def warnings() -> list[str]:
        out = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        caplog.clear()
        return out

    synced(rec, clock, WEB)  # Service "web" missing
    first = warnings()
    assert len(first) == 1 and "web" in first[0]
    assert rec.state.problems[0].reason == "ServiceNotFound"
    rec.apply([put(SLICE)], [])  # another generation, same problem: not logged again
    clock.t += HOLDOFF_S
    rec.publish(clock.t)
    assert warnings() == []
    rec.apply([put(SVC)], [])  # fixed: forgotten
    clock.t += HOLDOFF_S
    rec.publish(clock.t)
    assert warnings() == [] and rec.state.problems == ()
    rec.apply([Change(kind=Kind.SERVICE, key=SVC.key, obj=None)], [])  # broken again: logged again
    clock.t += HOLDOFF_S
    rec.publish(clock.t)
    assert warnings() == first


def test_source_problems_alone_mark_dirty_and_are_reported(rec: Reconciler, writer: TableWriter, clock: Clock) -> None:
    synced(rec, clock, WEB, SVC)
    broken = Problem(kind=Kind.FILE, key=SVC.key, field="", reason="InvalidYAML", message="bad YAML", origin="x.yaml:3")
    rec.apply([], [broken])
    clock.t += HOLDOFF_S
    assert rec.due(clock.t)
    assert not rec.publish(clock.t)  # the table is the same: nothing published
    assert broken in rec.state.problems and writer.routes_gen == 1


class FullShm(TableWriter):
    """A real writer whose next publish fails as if /dev/shm were full (fault injection, not a mock)."""

    fail_next = False

    def publish(self, routes: bytes | None, endpoints: bytes) -> tuple[int, int]:
        if self.fail_next:
            self.fail_next = False
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().publish(routes, endpoints)


def test_a_failed_publish_keeps_the_last_table_and_is_retried(tmp_path: Path, clock: Clock) -> None:
    writer = FullShm(shm_dir=str(tmp_path))
    rec = Reconciler(Settings(), writer, now=clock)
    synced(rec, clock, WEB, SVC, SLICE)
    rec.apply([put(ingress("web", rule("b.example.com", path("/"))))], [])
    clock.t += HOLDOFF_S
    writer.fail_next = True
    assert not rec.publish(clock.t)
    assert rec.state.routes_generation == 1
    assert rec.deadline() == pytest.approx(clock.t + PUBLISH_RETRY_S)
    assert not rec.due(clock.t + PUBLISH_RETRY_S - 0.001)
    clock.t += PUBLISH_RETRY_S
    assert rec.publish(clock.t)
    assert rec.state.routes_generation == 2
    assert [vh.host for vh in rec.state.config.vhosts] == ["b.example.com"]  # type: ignore[union-attr]
    writer.close()


class FilesFirst(TableWriter):
    """A real writer that records, at each publish, whether every certificate file the new routes
    segment names was already in the key directory (the ordering the workers rely on)."""

    keys_dir = ""
    seen: list[tuple[int, bool]]

    def publish(self, routes: bytes | None, endpoints: bytes) -> tuple[int, int]:
        if routes is not None:
            table = RouteTable(routes)
            names = [table.cert(i).fingerprint for i in range(len(table.certs))]
            self.seen.append((len(names), all(os.path.exists(os.path.join(self.keys_dir, f"{fp}.pem"))
                                              for fp in names)))
        return super().publish(routes, endpoints)


def test_certificate_files_are_written_before_publishing_and_reclaimed_after(tmp_path: Path, clock: Clock) -> None:
    keys = KeyStore(str(tmp_path))
    writer = FilesFirst(shm_dir=str(tmp_path))
    writer.keys_dir, writer.seen = keys.path, []
    settings = Settings(default_tls_secret="ingress/fallback")
    rec = Reconciler(settings, writer, now=clock, keys=keys)
    crt, key = make_cert(["a.example.com"])
    fallback = secret("fallback", *make_cert(["fallback.example"]), ns="ingress")
    site = ingress("web", rule("a.example.com", path("/")), tls=(tls("site", "a.example.com"),))
    rec.apply([put(fallback), put(secret("site", crt, key)), put(site), put(SVC)], [])
    clock.t += HOLDOFF_S
    assert rec.publish(clock.t)
    config = rec.state.config
    assert config is not None and len(config.certs) == 2 and config.default_cert
    assert writer.seen == [(2, True)]
    assert keys.written() == {c.fingerprint for c in config.certs}
    site_fp = next(c.fingerprint for c in config.certs if c.fingerprint != config.default_cert)

    assert writer.oldest_acked()[0] == 1  # no worker: the current generation
    reader = TableReader(writer.control_path, 0)  # a worker still serving generation 1
    assert writer.oldest_acked()[0] == 0  # registered, nothing acknowledged yet: holds everything
    reader.poll()
    reader.ack()
    rec.apply([put(ingress("web", rule("a.example.com", path("/"))))], [])  # the TLS section is gone
    clock.t += HOLDOFF_S
    assert rec.publish(clock.t)
    assert writer.seen[-1] == (1, True) and writer.routes_gen == 2
    assert keys.reclaim(writer.oldest_acked()[0]) == []  # the worker may still need it
    assert os.path.exists(keys.pem_path(site_fp))
    reader.poll()
    reader.ack()
    assert keys.reclaim(writer.oldest_acked()[0]) == [site_fp]
    assert keys.written() == {config.default_cert}
    reader.release()
    writer.close()
    keys.close()
