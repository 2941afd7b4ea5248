"""loadtest/agreement.py: how far apart two runs' fastingress/reference ratios are, over small synthetic
result files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loadtest import agreement


def _rounds(*rps: float) -> list[dict[str, float]]:
    return [{"rps": r, "p99_ms": 1.0} for r in rps]


def _scenario(name: str, **servers: list[dict[str, float]]) -> dict[str, Any]:
    # only `rounds` is read: `median` and `ratios` are there, wrong on purpose, as files from any harness have them
    return {"name": name, "rounds": servers, "median": {}, "ratios": {"fastingress/nginx": 123.0}}


def _write(path: Path, *scenarios: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"started": "2026-11-27T00:00:00Z", "scenarios": list(scenarios)}))
    return path


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    calm = _write(tmp_path / "run-a.json",
                  _scenario("small", fastingress=_rounds(90, 90, 90, 90, 90), nginx=_rounds(100, 100, 100, 100, 100),
                            haproxy=_rounds(100, 100, 100, 100, 100)),
                  _scenario("16k", fastingress=_rounds(50, 50, 50), nginx=_rounds(100, 100, 100)),
                  _scenario("scale", **{"fastingress-1w": _rounds(10), "fastingress-2w": _rounds(20)}),
                  _scenario("only-in-a", fastingress=_rounds(1), nginx=_rounds(1)))
    # run B: a slow spell over three of fastingress's five small rounds, and a 16k 12% faster
    spell = _write(tmp_path / "run-b.json",
                   _scenario("small", fastingress=_rounds(90, 90, 54, 54, 54), nginx=_rounds(100, 100, 100, 100, 100),
                             haproxy=_rounds(100, 100, 100, 100, 100)),
                   _scenario("16k", fastingress=_rounds(56, 56, 56), nginx=_rounds(100, 100, 100)),
                   _scenario("scale", **{"fastingress-1w": _rounds(10), "fastingress-2w": _rounds(20)}),
                   {"name": "failed", "rounds": {}, "median": {}, "ratios": {}})
    return [calm, spell]


def test_rows_compare_both_estimators_over_the_scenarios_both_runs_have(runs: list[Path]) -> None:
    first, second = (agreement.load(path) for path in runs)
    rows = {row.scenario: row for row in agreement.compare(first, second, "nginx")}
    assert list(rows) == ["small", "16k"]  # scale has no fastingress and nginx; the others are in one run only
    best, medians = agreement.ESTIMATORS
    assert rows["small"].ratios[best] == (0.9, 0.9) and rows["small"].apart(best) == 0.0
    assert rows["small"].ratios[medians] == (0.9, 0.54)
    assert rows["small"].apart(medians) == pytest.approx(0.9 / 0.54 - 1)
    assert rows["16k"].apart(best) == rows["16k"].apart(medians) == pytest.approx(0.12)


def test_deviation_is_symmetric() -> None:
    assert agreement.deviation(1.0, 1.1) == agreement.deviation(1.1, 1.0) == pytest.approx(0.1)


def test_verdicts_count_the_scenarios_within_ten_percent_and_name_the_worst(runs: list[Path]) -> None:
    first, second = (agreement.load(path) for path in runs)
    rows = agreement.compare(first, second, "nginx")
    best, medians = agreement.ESTIMATORS
    assert agreement.verdict(rows, best) == "within 10% on 1 of 2 scenarios, max deviation 12.0% (16k)"
    assert agreement.verdict(rows, medians) == "within 10% on 0 of 2 scenarios, max deviation 66.7% (small)"
    assert agreement.verdict([], best) == "no scenario in common"


def test_main_prints_a_table_and_verdicts_per_pair_and_reference(runs: list[Path], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    third = _write(tmp_path / "run-c.json", _scenario("small", fastingress=_rounds(90), nginx=_rounds(100)))
    assert agreement.main([str(p) for p in (*runs, third)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n### ") == 6  # 3 pairs x (nginx, haproxy)
    assert "### run-a (A) vs run-b (B): fastingress/nginx" in out
    assert "| small | 0.90x | 0.90x | 0.0% | 0.90x | 0.54x | 66.7% |" in out
    assert "- best 2 rounds: within 10% on 1 of 2 scenarios, max deviation 12.0% (16k)" in out
    haproxy = out.split("### run-a (A) vs run-b (B): fastingress/haproxy")[1].split("###")[0]
    assert "- ratio of medians: within 10% on 0 of 1 scenarios, max deviation 66.7% (small)" in haproxy
    vs_c = out.split("### run-a (A) vs run-c (B): fastingress/haproxy")[1].split("###")[0]
    assert "- best 2 rounds: no scenario in common" in vs_c


def test_main_needs_two_files(runs: list[Path]) -> None:
    with pytest.raises(SystemExit) as exit_:
        agreement.main([str(runs[0])])
    assert exit_.value.code == 2
