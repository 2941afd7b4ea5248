"""The arbiter's listener indices through rolls, crashes and scaling, stepped in virtual time.

The workers are fakes (Popen, waitpid and kill patched): the cases here are races between a roll, a
crash and a TTOU that real processes hit only by chance. The integration tests cover the real ones.
At every step: each wanted index has a socket, and the supervisor holds no socket nobody wants
(one no worker accepts on would take its share of new connections and never answer them).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from fastingress.settings import Settings
from fastingress.supervisor import arbiter as arbiter_module
from fastingress.supervisor.arbiter import Arbiter
from fastingress.table.stats import ROW_WORDS

TICK = 0.1
BOOT_S = 0.5  # a fake worker acknowledges the table (is ready) this long after it started


class FakeProc:
    """A worker process that is alive until signalled or crashed; ready BOOT_S after it started."""

    def __init__(self, world: World, cmd: list[str], **kw: Any) -> None:
        world.next_pid += 1
        self.started = world.now
        self.pid = world.next_pid
        self.returncode: int | None = None
        self.alive = True
        world.procs[self.pid] = self

    def wait(self) -> int:
        return 0


class World:
    def __init__(self) -> None:
        self.next_pid = 1000
        self.procs: dict[int, FakeProc] = {}
        self.arbiter: Arbiter | None = None
        self.now = 0.0

    # the control block and stats block the arbiter reads
    control_path, routes_gen, path = "/fake-control", 1, "/fake-stats"
    rows = np.zeros((16, ROW_WORDS), dtype=np.int64)

    def free_slot(self, slot: int) -> None:
        pass

    clear_row = free_slot

    def readers(self) -> list[tuple[int, int, int, int]]:
        assert self.arbiter is not None
        return [(w.slot, w.pid, (1 << 32) | 1, 1 << 62) for w in self.arbiter._workers.values()
                if self.procs[w.pid].alive and self.now - self.procs[w.pid].started >= BOOT_S]

    def waitpid(self, pid: int, flags: int) -> tuple[int, int]:
        return (0, 0) if self.procs[pid].alive else (pid, 0)

    def kill(self, pid: int, sig: int) -> None:
        if sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGQUIT):
            self.procs[pid].alive = False  # drained at once

    def step(self, n: int = 1) -> None:
        assert self.arbiter is not None
        for _ in range(n):
            self.now += TICK
            self.arbiter.check(self.now)
            self.check_invariants()

    def check_invariants(self) -> None:
        arb = self.arbiter
        assert arb is not None
        assert arb._listeners.indices <= arb._wanted, "a socket no index wants is still held"

    def serving(self) -> list[int]:
        """Listener index of every live worker that is not retiring, sorted."""
        assert self.arbiter is not None
        return sorted(w.listener for w in self.arbiter._workers.values() if not w.retiring)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World()
    monkeypatch.setattr(arbiter_module.subprocess, "Popen", lambda cmd, **kw: FakeProc(w, cmd, **kw))
    monkeypatch.setattr(arbiter_module.os, "waitpid", w.waitpid)
    monkeypatch.setattr(arbiter_module.os, "kill", w.kill)
    monkeypatch.setattr(arbiter_module.os, "waitstatus_to_exitcode", lambda status: 0)
    monkeypatch.setattr(arbiter_module.time, "monotonic", lambda: 0.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(workers=3, http_port=port, bind_address="127.0.0.1", worker_heartbeat_timeout_s=1e9)
    w.arbiter = Arbiter(settings, w, w)  # type: ignore[arg-type]  # World stands in for writer and stats
    w.arbiter.start(w.now)
    w.step(int(BOOT_S / TICK) + 1)
    yield w
    w.arbiter.kill_all()


def test_a_roll_replaces_each_worker_on_its_own_sockets(world: World) -> None:
    arb = world.arbiter
    assert arb is not None
    before = {w.pid: w.listener for w in arb._workers.values()}
    sockets = {i: arb._listeners.fds(i) for i in range(3)}
    arb.handle_hup(world.now)
    world.step(60)
    after = {w.pid: w.listener for w in arb._workers.values()}
    assert not set(before) & set(after) and sorted(after.values()) == [0, 1, 2]
    assert {i: arb._listeners.fds(i) for i in range(3)} == sockets  # not one socket closed or rebound


def test_ttou_between_two_roll_steps_leaves_no_orphan_socket(world: World) -> None:
    arb = world.arbiter
    assert arb is not None
    arb.handle_hup(world.now)
    world.step(int(BOOT_S / TICK) + 1)  # the first old worker replaced; the next one not yet
    arb.handle_ttou(world.now)
    world.step(60)
    assert world.serving() == sorted(arb._wanted) and len(arb._wanted) == 2
    assert arb._listeners.indices == arb._wanted


def test_a_crash_mid_roll_is_replaced_before_the_roll_ends(world: World) -> None:
    arb = world.arbiter
    assert arb is not None
    arb.handle_hup(world.now)
    world.step(1)  # the roll works on its first worker
    last = max(arb._workers.values(), key=lambda w: w.listener)
    world.procs[last.pid].alive = False  # a worker the roll has not reached crashes
    world.step(1)
    assert arb._rolling, "the roll is still under way"
    world.step(int(arbiter_module.BACKOFF_MIN_S / TICK) + 1)
    assert arb._rolling, "the roll is still under way"
    assert last.listener in world.serving(), "the crashed worker's index waited for the roll"
    world.step(60)
    assert world.serving() == [0, 1, 2]


def test_the_first_of_a_roll_dying_does_not_retire_a_worker_without_replacement(world: World) -> None:
    arb = world.arbiter
    assert arb is not None
    arb.handle_hup(world.now)
    world.step(1)  # its replacement is spawned on the same index
    first = arb._workers[arb._rolling[0]]
    world.procs[first.pid].alive = False
    for _ in range(60):  # its replacement serves its index; no other index is ever left without a worker
        world.step()
        assert set(world.serving()) == {0, 1, 2}
    assert not arb._rolling
