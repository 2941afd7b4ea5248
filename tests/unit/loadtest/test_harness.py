"""The estimates of loadtest/harness.py (best rounds, medians), the settled rule, and the extra rounds it
asks for: scripted req/s, no server, no wrk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest import harness
from loadtest.machine import SpeedProbe
from loadtest.scenario import Scenario, summarise


def _round(rps: float, p99: float = 1.0) -> harness.Round:
    return {"rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "errors": 0.0}


def test_best_averages_every_metric_over_the_fastest_rounds() -> None:
    rounds = {"fastingress": [_round(90, 9.0), _round(100, 2.0), _round(50, 30.0), _round(96, 4.0)],
              "nginx": [_round(200, 1.0)]}
    top = harness.best(rounds)
    # p99 comes from the rounds that gave the req/s (100 and 96), not from the lowest p99s
    assert top["fastingress"] == {"rps": 98.0, "p50_ms": 1.5, "p99_ms": 3.0, "errors": 0.0}
    assert top["nginx"] == _round(200, 1.0)  # fewer rounds than BEST_ROUNDS: all of them
    assert harness.best(rounds, k=1)["fastingress"]["rps"] == 100.0
    assert harness.ratios(top)["fastingress/nginx"] == pytest.approx(0.49)
    assert harness.ratios(top)["p99 fastingress/nginx"] == pytest.approx(3.0)


def test_best_and_medians_have_the_same_shape_and_leave_the_extra_round_flag_out() -> None:
    rounds = {"fastingress": [_round(90), _round(100), {**_round(99), harness.EXTRA_ROUND: True}], "nginx": [],
              "haproxy": [_round(10)]}
    top, med = harness.best(rounds), harness.medians(rounds)
    assert top.keys() == med.keys() == {"fastingress", "haproxy"}
    assert all(top[name].keys() == med[name].keys() == _round(1).keys() for name in top)
    assert med["fastingress"]["rps"] == 99.0  # medians take the extra rounds too
    assert top["fastingress"]["rps"] == 99.5


@pytest.mark.parametrize(("rps", "settled"), [([100, 96, 50], True), ([95, 100], True), ([100, 94.9, 94], False),
                                              ([100], False), ([], False)])
def test_settled_when_the_two_fastest_rounds_are_within_five_percent(rps: list[float], settled: bool) -> None:
    assert harness.is_settled([_round(r) for r in rps]) is settled


class Script:
    """Scripted req/s per server, round after round, recording the order servers were measured in."""

    def __init__(self, rps: dict[str, list[int]]) -> None:
        self.left: dict[str, Iterator[int]] = {name: iter(values) for name, values in rps.items()}
        self.order: list[str] = []

    def __call__(self, name: str) -> harness.Round:
        self.order.append(name)
        return _round(float(next(self.left[name])))


def _extras(runs: list[harness.Round]) -> int:
    return sum(bool(r.get(harness.EXTRA_ROUND)) for r in runs)


def test_settled_servers_get_no_extra_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    rounds = harness.run_rounds(["a", "b"], Script({"a": [100, 99, 98], "b": [50, 49, 48]}), 3, 3)
    assert [len(runs) for runs in rounds.values()] == [3, 3]
    assert _extras(rounds["a"]) == _extras(rounds["b"]) == 0
    assert capsys.readouterr().err == ""


def test_a_server_with_one_fast_round_gets_extra_rounds_until_two_agree(capsys: pytest.CaptureFixture[str]) -> None:
    script = Script({"fastingress": [100] + [80] * 14 + [80, 81, 99], "nginx": [200] * 15})
    rounds = harness.run_rounds(["fastingress", "nginx"], script, 15, 15)
    assert len(rounds["fastingress"]) == 18 and _extras(rounds["fastingress"]) == 3
    assert [r.get(harness.EXTRA_ROUND, False) for r in rounds["fastingress"][14:]] == [False, True, True, True]
    assert len(rounds["nginx"]) == 15 and _extras(rounds["nginx"]) == 0
    assert script.order[30:] == ["fastingress"] * 3
    assert harness.best(rounds)["fastingress"]["rps"] == 99.5
    err = capsys.readouterr().err
    assert err.count("extra round") == 3 and "fastingress" in err and "nginx" not in err


def test_extra_rounds_are_interleaved_among_the_unsettled_and_capped() -> None:
    script = Script({"a": [100] + [50] * 40, "b": [100] * 40, "c": [100] + [70] * 40})
    rounds = harness.run_rounds(["a", "b", "c"], script, 15, 15)
    assert [len(rounds[name]) for name in "abc"] == [30, 15, 30]  # at most as many again as planned
    assert script.order[45:] == ["a", "c"] * 15


class FixedProbe(SpeedProbe):
    """A machine always at full speed (no SHA-256 run)."""

    def __init__(self, cpu: int | None = None) -> None:
        super().__init__(cpu=cpu)
        self.reference = 100.0

    def sample(self) -> float:
        return 100.0


class Named:
    def __init__(self, name: str) -> None:
        self.name = name


def _interleave(monkeypatch: pytest.MonkeyPatch, quick: bool) -> tuple[harness.Rounds, list[int | None]]:
    """interleave's rounds with a scripted measure_steady, and the CPUs of the probes it made."""
    script = Script({"fastingress": [100] + [80] * 5, "nginx": [100] * 6})
    probes_for: list[int | None] = []

    def measure_steady(server: Any, load: Any, opts: Any, tmp: Path, probe: SpeedProbe) -> harness.Round:
        return script(server.name)

    def make_probe(cpu: int | None = None) -> SpeedProbe:
        probes_for.append(cpu)
        return FixedProbe(cpu)

    monkeypatch.setattr(harness, "measure_steady", measure_steady)
    monkeypatch.setattr(harness, "SpeedProbe", make_probe)
    servers: list[Any] = [Named("fastingress"), Named("nginx")]
    opts = harness.Options(rounds=3, quick=quick)
    return harness.interleave(servers, harness.Load(), opts, Path(".")), probes_for


def test_interleave_takes_extra_rounds_and_probes_on_the_proxy_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    rounds, probes_for = _interleave(monkeypatch, quick=False)
    assert [len(rounds["fastingress"]), len(rounds["nginx"])] == [6, 3]
    assert probes_for == [int(harness.PROXY_CPU)]


def test_quick_takes_no_extra_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    rounds, _ = _interleave(monkeypatch, quick=True)
    assert [len(rounds["fastingress"]), len(rounds["nginx"])] == [3, 3]


def test_summarise_adds_the_best_rounds_and_keeps_the_medians() -> None:
    rounds = {"fastingress": [_round(100), _round(60), _round(60)], "nginx": [_round(100)] * 3}
    result = summarise(Scenario("small", "keep-alive GET"), rounds)
    assert result["median"]["fastingress"]["rps"] == 60.0 and result["ratios"]["fastingress/nginx"] == 0.6
    assert result["best"]["fastingress"]["rps"] == 80.0 and result["best_ratios"]["fastingress/nginx"] == 0.8
