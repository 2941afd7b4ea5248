"""The shared-table acceptance test: a real writer against real reader processes, under churn.

The writer (this process) publishes PUBLISHES generations: endpoints change every generation, routes
(hosts, paths and upstream names) every ROUTES_EVERY generations. Two readers (fresh interpreters
running tests/integration/shm_reader.py) poll, look up and ack continuously and check every lookup
against content rules that make a torn or mixed table visible. One reader is SIGKILLed mid-run, the
other exits cleanly after the last generation. Then the dead reader's slot is reaped, reclamation
leaves only the current generation, and close() leaves no file of the writer's prefix.

The writer paces itself on the readers' acknowledgements (at most LAG generations ahead of every
live tracked reader) so that the readers see most generations; waits are on conditions with deadlines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fastingress.compiler.emit import emit_endpoints, emit_routes
from fastingress.compiler.types import (
    MATCH_EXACT,
    MATCH_PREFIX,
    CompiledConfig,
    Endpoint,
    Route,
    Upstream,
    UpstreamEndpoints,
    VirtualHost,
)
from fastingress.model.objects import ObjectKey
from fastingress.table.shm import SHM_DIR, TableWriter, unpack_word
from tests.integration import shm_reader as rules

pytestmark = pytest.mark.integration

READER = Path(__file__).with_name("shm_reader.py")
PUBLISHES = 1000
ROUTES_EVERY = 4
LAG = 4  # generations the writer may run ahead of a tracked reader's ack
KILL_AT = PUBLISHES // 3
KEY = ObjectKey("ns", "ing")


def _route(host: str, path: str, match: int, upstream: str) -> Route:
    return Route(path=path, match=match, upstream=upstream, ingress=KEY, rule_host=host, rule_path=path or "/",
                 path_type="Exact" if match == MATCH_EXACT else "Prefix")


def routes_config(rgen: int) -> CompiledConfig:
    """Routes generation `rgen`, following the rules in shm_reader (every name carries rgen)."""
    vhosts: list[VirtualHost] = []
    for i in range(rules.STABLE_HOSTS):
        host = rules.stable_host(i)
        vhosts.append(VirtualHost(host=host, routes=(  # precedence order: longest first
            _route(host, rules.exact_path(rgen), MATCH_EXACT, rules.upstream_name("x", rgen, i)),
            _route(host, rules.group_prefix(rgen), MATCH_PREFIX, rules.upstream_name("g", rgen, i)),
            _route(host, "", MATCH_PREFIX, rules.upstream_name("root", rgen, i)),
        )))
    for j in range(rules.GEN_HOSTS):
        host = rules.gen_host(rgen, j)
        vhosts.append(VirtualHost(host=host, routes=(_route(host, "", MATCH_PREFIX,
                                                            rules.upstream_name("gen", rgen, j)),)))
    names = sorted(r.upstream for vh in vhosts for r in vh.routes)
    return CompiledConfig(vhosts=tuple(sorted(vhosts, key=lambda vh: vh.host)),
                          upstreams=tuple(Upstream(name=n, service=KEY, port=80) for n in names))


def endpoints_for(rgen: int, egen: int, upstreams: int) -> tuple[UpstreamEndpoints, ...]:
    return tuple(UpstreamEndpoints(endpoints=tuple(
        Endpoint(rules.endpoint_address(rgen, u, k), egen) for k in range(rules.endpoint_count(egen, u))))
        for u in range(upstreams))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.0002)  # tiny pacing: the readers need the CPU (2 cores, 3 busy processes)


def _files(writer: TableWriter) -> set[str]:
    """The live segments ("r<gen>", "e<gen>") and the control block."""
    return {"ctl"} | writer.live_segments()


class Reader:
    """One reader process with its output in files (no pipe can fill up and stall it)."""

    def __init__(self, writer: TableWriter, slot: int, out_dir: Path) -> None:
        self.slot = slot
        self.out = out_dir / f"reader{slot}.out"
        self.err = out_dir / f"reader{slot}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(READER), writer.control_path, str(slot), str(PUBLISHES), "60"],
                stdout=out, stderr=err, cwd=str(Path(__file__).parents[2]))

    def acked_endpoints_gen(self, writer: TableWriter) -> int:
        for slot, _, ack, _ in writer.readers():
            if slot == self.slot:
                return unpack_word(ack)[1]
        return 0

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"reader {self.slot} exited {self.proc.returncode}: {self.err.read_text()}")

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.mark.parametrize("where", ["dev_shm", "tmp_dir"])
def test_publish_under_churn_never_shows_a_torn_table(where: str, tmp_path: Path) -> None:
    if where == "dev_shm" and not os.path.isdir(SHM_DIR):
        pytest.skip("no /dev/shm")
    shm_dir = SHM_DIR if where == "dev_shm" else str(tmp_path / "shm")
    os.makedirs(shm_dir, exist_ok=True)
    writer = TableWriter(shm_dir=shm_dir, max_slots=8)
    readers: list[Reader] = []
    try:
        rgen, config = 1, routes_config(1)
        n_up = len(config.upstreams)
        writer.publish(emit_routes(config), emit_endpoints(endpoints_for(1, 1, n_up)))
        readers = [Reader(writer, 0, tmp_path), Reader(writer, 1, tmp_path)]
        victim, survivor = readers
        tracked = [victim, survivor]
        wait_for(lambda: len(writer.readers()) == 2, "both readers to attach", timeout=30)

        for i in range(2, PUBLISHES + 1):
            routes = None
            if i % ROUTES_EVERY == 0:
                rgen += 1
                config = routes_config(rgen)
                n_up = len(config.upstreams)
                routes = emit_routes(config)
            assert writer.publish(routes, emit_endpoints(endpoints_for(rgen, i, n_up))) == (rgen, i)

            def caught_up(target: int = i) -> bool:
                for r in tracked:
                    r.check_alive()
                return all(r.acked_endpoints_gen(writer) >= target - LAG for r in tracked)

            wait_for(caught_up, f"readers to ack generation {i - LAG}")
            if i == KILL_AT:
                tracked.remove(victim)
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait(timeout=10)  # reaped: a zombie would still look alive to kill(pid, 0)
                kept = unpack_word(victim_ack := writer.readers()[0][2])  # slot 0: the victim's last ack
                assert writer.readers()[0][1] == victim.proc.pid and victim_ack != 0

        survivor.proc.wait(timeout=30)
        assert survivor.proc.returncode == 0, survivor.err.read_text()
        summary = json.loads(survivor.lines()[-1])
        # paced: at most LAG generations behind, so it sees a good share of them
        assert summary["words"] >= PUBLISHES // (2 * LAG), summary
        assert summary["routes_generations"] >= PUBLISHES // ROUTES_EVERY // 4, summary
        assert summary["lookups"] > 10 * PUBLISHES, summary
        assert victim.proc.returncode == -signal.SIGKILL
        progress = [int(line.split()[1]) for line in victim.lines() if line.startswith("progress")]
        assert progress and progress[-1] >= 50, victim.lines()  # it was checking generations when killed
        assert victim.err.read_text() == ""

        # the dead reader's last ack still holds its generations back, until it is reaped
        assert {f"r{kept[0]}", f"e{kept[1]}"} <= _files(writer)
        assert [pid for _, pid, _, _ in writer.readers()] == [victim.proc.pid]  # the survivor released its slot
        assert writer.reap_dead_readers() == [victim.proc.pid]
        writer.reclaim()
        assert _files(writer) == {"ctl", f"r{rgen}", f"e{PUBLISHES}"}
    finally:
        for r in readers:
            r.stop()
        writer.close()
    assert not [n for n in os.listdir(shm_dir) if n.startswith(writer.prefix)]
