"""TableWriter and TableReader in one process: publish, poll, ack, RCU reclamation and clean-up.

Most tests use a temporary directory as the shm dir (the writer and readers only `os.open` files in
it); one runs against the real /dev/shm. Multi-process behaviour is in
tests/integration/test_shm_publish.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastingress.compiler.emit import emit_endpoints, emit_routes
from fastingress.compiler.types import (
    MATCH_PREFIX,
    CompiledConfig,
    Endpoint,
    Route,
    Upstream,
    UpstreamEndpoints,
    VirtualHost,
)
from fastingress.errors import TableError
from fastingress.model.objects import ObjectKey
from fastingress.table import schema as s
from fastingress.table.shm import (
    D_ARENA,
    D_GEN,
    D_LENGTH,
    D_OFFSET,
    DESC_SLOTS,
    SHM_DIR,
    SL_ACK,
    SL_PID,
    TableReader,
    TableWriter,
    pack_word,
    remove_stale_segments,
    unpack_word,
)

KEY = ObjectKey("default", "ing")
# above the largest pid_max Linux allows (2**22): never a live process, so "dead" is deterministic
DEAD_PID = 2**22 + 1


def config(name: str, port: int = 8080) -> CompiledConfig:
    """One host routing everything to upstream `name`, with one endpoint on `port`."""
    route = Route(path="", match=MATCH_PREFIX, upstream=name, ingress=KEY, rule_host=f"{name}.test",
                  rule_path="/", path_type="Prefix")
    return CompiledConfig(
        vhosts=(VirtualHost(host=f"{name}.test", routes=(route,)),),
        upstreams=(Upstream(name=name, service=KEY, port=80),),
        endpoints=(UpstreamEndpoints(endpoints=(Endpoint("10.0.0.1", port),)),),
    )


def routes(name: str) -> bytes:
    return emit_routes(config(name))


def endpoints(port: int) -> bytes:
    return emit_endpoints(config("x", port).endpoints)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[TableWriter]:
    w = TableWriter(shm_dir=str(tmp_path), max_slots=4)
    yield w
    w.close()


def _files(writer: TableWriter) -> set[str]:
    """The live segments ("r<gen>", "e<gen>") and the control block."""
    return {"ctl"} | writer.live_segments()


def _disk(writer: TableWriter) -> set[str]:
    return {name[len(writer.prefix) + 1:] for name in os.listdir(writer.shm_dir) if name.startswith(writer.prefix)}


def _upstream_and_port(reader: TableReader, host: bytes) -> tuple[str, int]:
    view = reader.view
    assert view is not None
    entry = view.routes.route(view.routes.match(host, b"/"))
    return view.routes.upstream(entry.upstream).name, view.endpoints.endpoints(entry.upstream)[0][1]


def test_word_packing() -> None:
    assert unpack_word(pack_word(3, 2**32 - 1)) == (3, 2**32 - 1)
    assert unpack_word(pack_word(0, 0)) == (0, 0)


def test_publish_poll_ack(writer: TableWriter) -> None:
    reader = TableReader(writer.control_path, 0)
    assert reader.poll() is None  # nothing published yet
    assert writer.publish(routes("a"), endpoints(1)) == (1, 1)
    view = reader.poll()
    assert view is not None and view is reader.view
    assert view.generation == (1, 1)
    assert _upstream_and_port(reader, b"a.test") == ("a", 1)
    assert reader.poll() is None  # unchanged word: nothing to do
    reader.ack()
    reader.heartbeat(now_ns=123)
    assert writer.readers() == [(0, os.getpid(), pack_word(1, 1), 123)]
    assert _files(writer) == {"ctl", "r1", "e1"}


def test_first_publish_needs_routes(writer: TableWriter) -> None:
    with pytest.raises(TableError):
        writer.publish(None, endpoints(1))


def test_endpoints_only_publish_keeps_the_route_table(writer: TableWriter) -> None:
    reader = TableReader(writer.control_path, 0)
    writer.publish(routes("a"), endpoints(1))
    first = reader.poll()
    assert first is not None
    first.routes.match(b"a.test", b"/")  # warm a route cache
    assert writer.publish(None, endpoints(2)) == (1, 2)
    second = reader.poll()
    assert second is not None
    assert second.routes is first.routes  # same object: the caches survive
    assert second.endpoints is not first.endpoints
    assert _upstream_and_port(reader, b"a.test") == ("a", 2)
    assert first.endpoints.endpoints(0) == (("10.0.0.1", 1),)  # a request on the old view keeps its snapshot
    writer.publish(routes("b"), endpoints(3))
    third = reader.poll()
    assert third is not None and third.routes is not first.routes
    assert _upstream_and_port(reader, b"b.test") == ("b", 3)


def test_reclaim_waits_for_every_live_reader(writer: TableWriter) -> None:
    fast, slow = TableReader(writer.control_path, 0), TableReader(writer.control_path, 1)
    writer.publish(routes("a"), endpoints(1))
    for r in (fast, slow):
        r.poll()
        r.ack()
    writer.publish(routes("b"), endpoints(2))
    writer.publish(None, endpoints(3))
    fast.poll()
    fast.ack()  # fast is at (2, 3); slow still holds (1, 1)
    assert writer.reclaim() == 0
    assert _files(writer) == {"ctl", "r1", "r2", "e1", "e2", "e3"}
    slow.poll()  # seeing a generation is not enough: only an ack releases the old one
    assert writer.reclaim() == 0
    slow.ack()
    assert writer.reclaim() == 3
    assert _files(writer) == {"ctl", "r2", "e3"}
    assert slow.view is not None and slow.view.generation == (2, 3)


def test_unacknowledged_new_reader_holds_everything(writer: TableWriter) -> None:
    writer.publish(routes("a"), endpoints(1))
    reader = TableReader(writer.control_path, 2)  # attached, never acked: it may be mapping generation 1
    writer.publish(routes("b"), endpoints(2))
    assert _files(writer) == {"ctl", "r1", "r2", "e1", "e2"}
    assert reader.poll() is not None
    reader.ack()
    writer.reclaim()
    assert _files(writer) == {"ctl", "r2", "e2"}


def test_without_readers_only_the_current_generation_stays(writer: TableWriter) -> None:
    for i in range(5):
        writer.publish(routes(f"h{i}") if i % 2 == 0 else None, endpoints(i))
    assert _files(writer) == {"ctl", "r3", "e5"}


def test_free_slot_releases_the_hold(writer: TableWriter) -> None:
    reader = TableReader(writer.control_path, 1)
    writer.publish(routes("a"), endpoints(1))
    reader.poll()
    reader.ack()
    writer.publish(routes("b"), endpoints(2))
    assert "r1" in _files(writer)
    writer.free_slot(1)
    assert writer.readers() == []
    writer.reclaim()
    assert _files(writer) == {"ctl", "r2", "e2"}


def test_reap_dead_readers(writer: TableWriter) -> None:
    live, dead = TableReader(writer.control_path, 0), TableReader(writer.control_path, 3)
    writer.publish(routes("a"), endpoints(1))
    for r in (live, dead):
        r.poll()
        r.ack()
    writer.ctl.slots[3, SL_PID] = DEAD_PID  # as if slot 3's process had exited without releasing
    writer.publish(routes("b"), endpoints(2))
    live.poll()
    live.ack()
    assert writer.reclaim() == 0  # the dead reader's ack still holds generation 1
    assert writer.reap_dead_readers() == [DEAD_PID]
    assert [pid for _, pid, _, _ in writer.readers()] == [os.getpid()]
    assert int(writer.ctl.slots[3, SL_ACK]) == 0
    assert writer.reclaim() == 2
    assert _files(writer) == {"ctl", "r2", "e2"}
    assert writer.reap_dead_readers() == []


def test_release_leaves_the_slot(writer: TableWriter) -> None:
    reader = TableReader(writer.control_path, 0)
    writer.publish(routes("a"), endpoints(1))
    reader.poll()
    reader.ack()
    reader.release()
    assert writer.readers() == []


def test_close_leaves_nothing(tmp_path: Path) -> None:
    w = TableWriter(shm_dir=str(tmp_path))
    reader = TableReader(w.control_path, 0)
    w.publish(routes("a"), endpoints(1))
    reader.poll()
    w.publish(routes("b"), endpoints(2))  # the reader holds generation 1 back: two generations live
    assert len(_files(w)) == 5
    assert _disk(w) == {"ctl", "a1"}  # one arena holds them all
    w.close()
    assert os.listdir(tmp_path) == []
    assert reader.view is not None  # a mapping outlives the unlinked names
    assert _upstream_and_port(reader, b"a.test") == ("a", 1)
    w.close()  # idempotent


def test_close_leaves_nothing_in_dev_shm() -> None:
    if not os.path.isdir(SHM_DIR):
        pytest.skip("no /dev/shm")
    w = TableWriter()
    try:
        reader = TableReader(w.control_path, 0)
        w.publish(routes("a"), endpoints(1))
        assert reader.poll() is not None
        reader.ack()
        w.publish(None, endpoints(2))
        assert reader.poll() is not None
        assert any(name.startswith(w.prefix) for name in os.listdir(SHM_DIR))
    finally:
        w.close()
    assert not [name for name in os.listdir(SHM_DIR) if name.startswith(w.prefix)]


def test_remove_stale_segments(tmp_path: Path) -> None:
    dead = [f"fastingress-{DEAD_PID}-0badf00d{suffix}" for suffix in ("-ctl", "-a1", "-a12", "-stats")]
    live = [f"fastingress-1-0000beef{suffix}" for suffix in ("-ctl", "-a1", "-stats")]  # pid 1 always runs
    mine = [f"fastingress-{os.getpid()}-12345678-ctl"]
    foreign = ["fastingress-notapid-ctl", f"other-{DEAD_PID}-0badf00d-ctl", f"fastingress-{DEAD_PID}-xyz-ctl"]
    for name in dead + live + mine + foreign:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(remove_stale_segments(str(tmp_path))) == sorted(dead)
    assert sorted(os.listdir(tmp_path)) == sorted(live + mine + foreign)
    assert remove_stale_segments(str(tmp_path / "missing")) == []


def test_a_new_writer_removes_stale_segments(tmp_path: Path) -> None:
    stale = tmp_path / f"fastingress-{DEAD_PID}-0badf00d-a7"
    stale.write_bytes(b"x")
    w = TableWriter(shm_dir=str(tmp_path))
    try:
        assert not stale.exists()
    finally:
        w.close()


def test_missing_segment_keeps_the_view(writer: TableWriter) -> None:
    reader = TableReader(writer.control_path, 0)
    writer.publish(routes("a"), endpoints(1))
    before = reader.poll()
    writer.publish(routes("b"), endpoints(2))
    writer.ctl.routes_desc[2 % DESC_SLOTS, D_GEN] = -1  # generation 2 no longer described
    with pytest.raises(TableError):
        reader.poll()
    assert reader.view is before and reader.word == pack_word(1, 1)
    reader.ack()  # acknowledging after a failure still names the generation in use
    assert writer.readers()[0][2] == pack_word(1, 1)
    writer.publish(routes("c"), endpoints(3))  # the next good generation is picked up
    assert reader.poll() is not None
    assert _upstream_and_port(reader, b"c.test") == ("c", 3)


@pytest.mark.parametrize("damage", ["empty", "truncated", "foreign_routes_generation", "outside_arena",
                                    "missing_arena", "overwritten"])
def test_bad_segment_keeps_the_view(writer: TableWriter, damage: str) -> None:
    reader = TableReader(writer.control_path, 0)
    writer.publish(routes("a"), endpoints(1))
    before = reader.poll()
    writer.publish(None, endpoints(2))
    desc = writer.ctl.endpoints_desc[2 % DESC_SLOTS]
    arena, offset, length = int(desc[D_ARENA]), int(desc[D_OFFSET]), int(desc[D_LENGTH])
    seg = bytearray(endpoints(2))
    if damage == "empty":
        desc[D_LENGTH] = 0
    elif damage == "truncated":
        desc[D_LENGTH] = length // 2
    elif damage == "foreign_routes_generation":
        s.stamp_generation(seg, 2, 9)  # an endpoints segment written for another routes generation
        writer.arenas[arena].write(offset, seg)
    elif damage == "outside_arena":
        desc[D_OFFSET] = writer.arenas[arena].capacity
    elif damage == "missing_arena":
        desc[D_ARENA] = 99
    else:
        s.stamp_generation(seg, 3, 1)  # the space was reused by a later generation meanwhile
        writer.arenas[arena].write(offset, seg)
    with pytest.raises(TableError):
        reader.poll()
    assert reader.view is before


def test_reader_needs_a_control_block(tmp_path: Path, writer: TableWriter) -> None:
    with pytest.raises(TableError):
        TableReader(str(tmp_path / "fastingress-1-00000000-ctl"), 0)
    with pytest.raises(TableError):
        TableReader(writer.control_path, 4)  # max_slots=4
    foreign = tmp_path / "foreign-ctl"
    foreign.write_bytes(bytes(64 * 8))
    with pytest.raises(TableError):
        TableReader(str(foreign), 0)
