"""Ordered control-block words: both implementations, and the shm cycle through the libatomic path.

On x86-64 the machine's own path is plain numpy; forcing libatomic runs the arm64 code (ctypes,
raw addresses) here, so that a release build for arm64 does not run it for the first time.
Ordering itself cannot be observed in one process; what these tests pin down is that both paths
read and write the same words with the same values and errors, and that TableWriter/TableReader
keep their behaviour whichever path each side takes.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
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
from fastingress.table import atomics
from fastingress.table.shm import D_ARENA, D_GEN, DESC_SLOTS, SL_ACK, TableReader, TableWriter, pack_word

IMPLEMENTATIONS: dict[str, Callable[[np.ndarray], atomics.OrderedWords]] = {
    "plain": atomics.PlainWords,
    "libatomic": atomics.LibatomicWords,
}
VALUES = [0, 1, -1, 2**31, -(2**31) - 1, 2**32, pack_word(2**31 - 1, 2**32 - 1), -1234567890123456789,
          atomics.INT64_MIN, atomics.INT64_MAX]
KEY = ObjectKey("default", "ing")


@pytest.fixture
def shared(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two mappings of one 64-word file, at two addresses, as two processes would have them."""
    path = tmp_path / "words"
    path.write_bytes(bytes(64 * 8))
    with path.open("r+b") as f:
        first, second = mmap.mmap(f.fileno(), 0), mmap.mmap(f.fileno(), 0)
    return np.frombuffer(first, dtype="<i8"), np.frombuffer(second, dtype="<i8")


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_values_round_trip_through_another_mapping(impl: str, shared: tuple[np.ndarray, np.ndarray]) -> None:
    mine, theirs = shared
    words, other = IMPLEMENTATIONS[impl](mine), IMPLEMENTATIONS[impl](theirs)
    for i, value in enumerate(VALUES):
        words.store_release(i, value)
        words.fence()
        assert other.load_acquire(i) == value
        assert int(theirs[i]) == value  # the very same word a plain numpy view sees
        theirs[i + 32] = value
        assert words.load_acquire(i + 32) == value
    assert [words.load_acquire(i) for i in range(len(VALUES))] == VALUES
    assert words.load_acquire_run(0, len(VALUES)) == VALUES
    assert other.load_acquire_run(32, len(VALUES)) == VALUES
    assert words.load_acquire_run(64, 0) == []
    assert all(type(v) is int for v in [*words.load_acquire_run(0, 3), words.load_acquire(0)])


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_errors_match_numpy(impl: str, shared: tuple[np.ndarray, np.ndarray]) -> None:
    mine, _ = shared
    words = IMPLEMENTATIONS[impl](mine)
    for value in (atomics.INT64_MAX + 1, atomics.INT64_MIN - 1):
        with pytest.raises(OverflowError):
            words.store_release(0, value)  # ctypes alone would store it wrapped
    assert words.load_acquire(0) == 0
    with pytest.raises(IndexError):
        words.load_acquire(len(mine))  # a raw pointer past the mapping would be a SIGSEGV
    with pytest.raises(IndexError):
        words.store_release(len(mine), 1)
    for index, count in ((-1, 2), (60, 5), (0, -1)):
        with pytest.raises(IndexError):
            words.load_acquire_run(index, count)
    read_only = IMPLEMENTATIONS[impl](np.frombuffer(bytes(64), dtype="<i8"))
    assert read_only.load_acquire(7) == 0
    with pytest.raises(ValueError):
        read_only.store_release(0, 1)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_only_aligned_int64_vectors(impl: str) -> None:
    for bad in (np.zeros(8, dtype="<i4"), np.zeros((2, 4), dtype="<i8"), np.zeros(16, dtype="<i8")[::2],
                np.frombuffer(bytearray(72), dtype="<i8", count=8, offset=4)):
        with pytest.raises(ValueError):
            IMPLEMENTATIONS[impl](bad)


def test_the_machine_picks_its_path() -> None:
    words = np.zeros(4, dtype="<i8")
    expected = atomics.PlainWords if atomics.is_tso() else atomics.LibatomicWords
    assert type(atomics.ordered_words(words)) is expected
    assert type(atomics.ordered_words(words, force_libatomic=True)) is atomics.LibatomicWords


def test_a_missing_libatomic_is_a_table_error(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="libatomic"):
        atomics.open_libatomic(str(tmp_path / "libatomic.so.1"))
    with pytest.raises(TableError, match="lacks"):
        atomics.open_libatomic("libc.so.6")  # loads, but has no __atomic_load_8


# --- TableWriter and TableReader with each side on either path ---

def routes(name: str) -> bytes:
    route = Route(path="", match=MATCH_PREFIX, upstream=name, ingress=KEY, rule_host=f"{name}.test",
                  rule_path="/", path_type="Prefix")
    return emit_routes(CompiledConfig(vhosts=(VirtualHost(host=f"{name}.test", routes=(route,)),),
                                      upstreams=(Upstream(name=name, service=KEY, port=80),)))


def endpoints(port: int) -> bytes:
    return emit_endpoints((UpstreamEndpoints(endpoints=(Endpoint("10.0.0.1", port),)),))


def served(reader: TableReader, host: bytes) -> tuple[str, int]:
    view = reader.view
    assert view is not None
    entry = view.routes.route(view.routes.match(host, b"/"))
    return view.routes.upstream(entry.upstream).name, view.endpoints.endpoints(entry.upstream)[0][1]


SIDES = [pytest.param(False, True, id="plain-writer-libatomic-reader"),
         pytest.param(True, False, id="libatomic-writer-plain-reader"),
         pytest.param(True, True, id="libatomic-both")]


@pytest.mark.parametrize(("writer_libatomic", "reader_libatomic"), SIDES)
def test_publish_poll_ack_reclaim(tmp_path: Path, writer_libatomic: bool, reader_libatomic: bool) -> None:
    writer = TableWriter(shm_dir=str(tmp_path), max_slots=4, force_libatomic=writer_libatomic)
    try:
        fast = TableReader(writer.control_path, 0, force_libatomic=reader_libatomic)
        slow = TableReader(writer.control_path, 3, force_libatomic=reader_libatomic)
        assert (type(writer.ctl.ordered) is atomics.LibatomicWords) == writer_libatomic
        assert (type(fast.ctl.ordered) is atomics.LibatomicWords) == reader_libatomic
        assert fast.poll() is None and fast.ctl.current() == 0
        assert writer.publish(routes("a"), endpoints(1)) == (1, 1)
        for r in (fast, slow):
            assert r.poll() is not None
            r.ack()
            r.heartbeat(now_ns=-(2**62))  # any int64 goes through
        assert served(fast, b"a.test") == ("a", 1)
        assert writer.readers() == [(0, os.getpid(), pack_word(1, 1), -(2**62)),
                                    (3, os.getpid(), pack_word(1, 1), -(2**62))]
        writer.publish(routes("b"), endpoints(2))
        writer.publish(None, endpoints(3))
        first = fast.poll()
        assert first is not None and first.generation == (2, 3)
        fast.ack()
        assert served(fast, b"b.test") == ("b", 3)
        assert writer.reclaim() == 0  # slow still acknowledges (1, 1)
        assert writer.live_segments() == {"r1", "r2", "e1", "e2", "e3"}
        slow.poll()
        slow.ack()
        assert writer.reclaim() == 3
        assert writer.live_segments() == {"r2", "e3"}
        writer.publish(None, endpoints(4))
        second = fast.poll()
        assert second is not None and second.routes is first.routes  # endpoints-only: same route table
        slow.release()
        assert [slot for slot, *_ in writer.readers()] == [0]
        writer.free_slot(0)
        assert writer.readers() == []
    finally:
        writer.close()


@pytest.mark.parametrize(("writer_libatomic", "reader_libatomic"), SIDES)
def test_a_descriptor_being_rewritten_keeps_the_view(tmp_path: Path, writer_libatomic: bool,
                                                     reader_libatomic: bool) -> None:
    writer = TableWriter(shm_dir=str(tmp_path), max_slots=4, force_libatomic=writer_libatomic)
    try:
        reader = TableReader(writer.control_path, 1, force_libatomic=reader_libatomic)
        writer.publish(routes("a"), endpoints(1))
        before = reader.poll()
        writer.publish(routes("b"), endpoints(2))
        row = writer.ctl.routes_desc[2 % DESC_SLOTS]
        described = int(row[D_GEN])
        for gen in (-1, 2 + DESC_SLOTS):  # mid-rewrite, and rewritten for a generation 64 later
            row[D_GEN] = gen
            with pytest.raises(TableError, match="not described"):
                reader.poll()
            assert reader.view is before and reader.word == pack_word(1, 1)
        row[D_GEN] = described
        row[D_ARENA] = 99  # restored generation, foreign field: the arena check catches it
        with pytest.raises(TableError):
            reader.poll()
        reader.ack()
        assert int(writer.ctl.slots[1, SL_ACK]) == pack_word(1, 1)
        writer.publish(routes("c"), endpoints(3))
        assert reader.poll() is not None
        assert served(reader, b"c.test") == ("c", 3)
    finally:
        writer.close()
