"""loadtest/report.py: the Markdown summary and the PNG plots of one benchmark results dict (synthetic, no run)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from loadtest import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _metrics(rps: float, p50: float, p90: float, p99: float, cpu_s: float, errors: float = 0.0) -> dict[str, float]:
    return {"rps": rps, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "cpu_s": cpu_s, "rps_per_cpu_s": rps * 5 / cpu_s,
            "errors": errors}


def _results() -> dict[str, Any]:
    small = {"fastingress": _metrics(24000, 2.1, 3.0, 5.65, 4.98), "nginx": _metrics(30000, 1.5, 2.2, 3.06, 4.6),
             "haproxy": _metrics(32000, 1.4, 2.0, 2.5, 4.9), "aiohttp": _metrics(6000, 9.0, 12.0, 20.0, 5.0, 3)}
    scale = {"fastingress-1w": _metrics(24000, 2.1, 3.0, 5.0, 5.0),
             "fastingress-2w": _metrics(31000, 1.8, 2.7, 4.4, 8.0)}
    return {
        "started": "2026-11-27T02:20:00Z",
        "machine": {"sysname": "Linux", "release": "6.1.0-test", "machine": "x86_64"},
        "cpus": 2,
        "versions": {"python": "3.11.7", "fastingress_python": "3.11.2 '--enable-optimizations'", "nginx": "1.22.1",
                     "haproxy": "2.6.12", "wrk": "4.1.0"},
        "options": {"rounds": 3, "seconds": 5.0, "quick": False},
        "scenarios": [
            {"name": "small", "description": "keep-alive GET, ~100 B responses, 64 connections",
             "rounds": {name: [m, m] for name, m in small.items()}, "median": small,
             "ratios": {"fastingress/nginx": 0.8, "fastingress/haproxy": 0.75, "p99 fastingress/nginx": 5.65 / 3.06},
             "extra": {}},
            {"name": "propagation", "description": "manifest change -> first request served by the new route",
             "rounds": {}, "median": {}, "ratios": {},
             "extra": {"propagation p50 ms": 41.2, "changes": 100, "note": "poll interval 0.05 s"}},
            {"name": "scale", "description": "1 vs 2 workers", "rounds": {}, "median": scale, "ratios": {},
             "extra": {"2 workers / 1 worker (req/s)": 1.29}},
        ],
    }


def _row(md: str, scenario: str) -> list[str]:
    rows = [line for line in md.splitlines() if line.startswith(f"| {scenario} |")]
    assert len(rows) == 1, md
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def _header_cells(md: str) -> list[str]:
    header = next(line for line in md.splitlines() if line.startswith("| scenario |"))
    return [cell.strip() for cell in header.strip("|").split("|")]


def test_header_names_date_machine_and_versions() -> None:
    md = report.markdown(_results(), [])
    assert md.startswith("# fastingress benchmark\n")
    assert "2026-11-27T02:20:00Z" in md
    assert "Linux 6.1.0-test x86_64, 2 CPUs" in md
    for version in ("3.11.7", "1.22.1", "2.6.12", "4.1.0", "--enable-optimizations"):
        assert version in md


def test_complete_scenario_row_has_every_server_and_the_ratios() -> None:
    md = report.markdown(_results(), [])  # a result from before the best rounds: ratios of medians alone
    cells = dict(zip(_header_cells(md), _row(md, "small"), strict=True))
    assert cells["fastingress req/s"] == "24,000"
    assert cells["nginx req/s"] == "30,000"
    assert cells["haproxy req/s"] == "32,000"
    assert cells["aiohttp req/s"] == "6,000"
    assert cells["fastingress/nginx"] == "0.80x"
    assert cells["fastingress/haproxy"] == "0.75x"
    assert cells["p99 ms nginx"] == "3.06"
    assert cells["p99 ms fastingress"] == "5.65 (1.85x)"
    assert cells["p99 ms haproxy"] == "2.50 (0.82x)"
    # (24000 * 5 / 4.98) / (30000 * 5 / 4.6)
    assert cells["req/CPU-s fastingress/nginx"] == f"{(24000 / 4.98) / (30000 / 4.6):.2f}x"
    assert cells["errors"] == "aiohttp 3"


def _with_best(results: dict[str, Any]) -> dict[str, Any]:
    """`results` as the harness writes them now: the best rounds and their ratios next to the medians."""
    small = results["scenarios"][0]
    small["best"] = {"fastingress": _metrics(27900, 2.0, 2.9, 5.0, 4.9), "nginx": _metrics(30000, 1.5, 2.2, 3.0, 4.6),
                     "haproxy": _metrics(31000, 1.4, 2.0, 2.5, 4.9)}
    small["best_ratios"] = {"fastingress/nginx": 0.93, "fastingress/haproxy": 0.9}
    return results


def test_ratio_columns_show_the_best_rounds_with_the_ratio_of_medians_in_parentheses() -> None:
    md = report.markdown(_with_best(_results()), [])
    cells = dict(zip(_header_cells(md), _row(md, "small"), strict=True))
    assert cells["fastingress/nginx"] == "0.93x (0.80x)"
    assert cells["fastingress/haproxy"] == "0.90x (0.75x)"
    # the other columns stay medians
    assert cells["fastingress req/s"] == "24,000" and cells["p99 ms fastingress"] == "5.65 (1.85x)"
    assert "best: mean of each server's 2 fastest rounds; in parentheses: ratio of medians." in md


def test_best_ratios_missing_are_computed_from_the_best_rounds() -> None:
    results = _with_best(_results())
    del results["scenarios"][0]["best_ratios"]
    md = report.markdown(results, [])
    cells = dict(zip(_header_cells(md), _row(md, "small"), strict=True))
    assert cells["fastingress/nginx"] == "0.93x (0.80x)"
    assert cells["fastingress/haproxy"] == "0.90x (0.75x)"


def test_results_without_best_rounds_show_the_ratio_of_medians_alone() -> None:
    for best in ({}, None, "junk", {"fastingress": {"rps": "n/a"}, "nginx": {"rps": 0}}):
        results = _results()
        results["scenarios"][0]["best"] = best
        md = report.markdown(results, [])
        cells = dict(zip(_header_cells(md), _row(md, "small"), strict=True))
        assert cells["fastingress/nginx"] == "0.80x"
        assert cells["fastingress/haproxy"] == "0.75x"


def test_ratios_missing_from_the_harness_are_computed_from_the_medians() -> None:
    results = _results()
    results["scenarios"][0]["ratios"] = {}
    md = report.markdown(results, [])
    cells = dict(zip(_header_cells(md), _row(md, "small"), strict=True))
    assert cells["fastingress/nginx"] == "0.80x"
    assert cells["fastingress/haproxy"] == "0.75x"


def test_fastingress_only_scenario_renders_dashes_and_its_extras() -> None:
    md = report.markdown(_results(), [])
    row = _row(md, "propagation")
    assert row[1:] == ["-"] * (len(row) - 1)
    assert "- propagation p50 ms: 41.2" in md
    assert "- changes: 100" in md
    assert "- note: poll interval 0.05 s" in md
    assert "manifest change -> first request served by the new route" in md


def test_scale_scenario_gets_columns_for_its_own_servers() -> None:
    md = report.markdown(_results(), [])
    cells = dict(zip(_header_cells(md), _row(md, "scale"), strict=True))
    assert cells["fastingress-1w req/s"] == "24,000"
    assert cells["fastingress-2w req/s"] == "31,000"
    assert cells["fastingress req/s"] == cells["nginx req/s"] == cells["fastingress/nginx"] == "-"
    assert cells["errors"] == "0"
    assert "- 2 workers / 1 worker (req/s): 1.29" in md
    # and the complete scenario has no figures for them
    small = dict(zip(_header_cells(md), _row(md, "small"), strict=True))
    assert small["fastingress-2w req/s"] == "-"


def test_every_row_has_as_many_cells_as_the_header() -> None:
    md = report.markdown(_results(), [])
    width = len(_header_cells(md))
    for name in ("small", "propagation", "scale"):
        assert len(_row(md, name)) == width


def test_image_links_are_relative_names() -> None:
    md = report.markdown(_results(), ["run-throughput.png", "run-latency.png"])
    assert "![run-throughput](run-throughput.png)" in md
    assert "![run-latency](run-latency.png)" in md


def test_empty_scenarios_and_missing_sections_still_give_a_summary() -> None:
    empty: list[dict[str, Any]] = [{"scenarios": []}, {}]
    for results in empty:
        md = report.markdown(results, ["x-throughput.png"])
        assert md.startswith("# fastingress benchmark\n")
        assert "No scenarios were run." in md
        assert "- date: -" in md
        assert "![x-throughput](x-throughput.png)" in md


def test_malformed_values_render_as_dashes_not_exceptions() -> None:
    results = _results()
    small = results["scenarios"][0]
    small["median"]["nginx"] = {"rps": None, "p99_ms": "n/a"}
    small["ratios"] = {"fastingress/nginx": float("nan")}
    del small["median"]["haproxy"]
    md = report.markdown(results, [])
    cells = dict(zip(_header_cells(md), _row(md, "small"), strict=True))
    assert cells["nginx req/s"] == cells["fastingress/nginx"] == cells["fastingress/haproxy"] == "-"
    assert cells["p99 ms fastingress"] == "5.65"
    small["best"] = {"fastingress": {"rps": 27900}, "nginx": {"rps": None}}
    small["best_ratios"] = {"fastingress/nginx": "n/a"}
    md = report.markdown(results, [])
    cells = dict(zip(_header_cells(md), _row(md, "small"), strict=True))
    assert cells["fastingress/nginx"] == cells["fastingress/haproxy"] == "-"


def test_write_report_writes_the_summary_and_two_pngs(tmp_path: Path) -> None:
    results = _results()
    md, plots = report.write_report(results, tmp_path / "out", "run")
    assert md == tmp_path / "out" / "run.md"
    assert plots == [tmp_path / "out" / "run-throughput.png", tmp_path / "out" / "run-latency.png"]
    for plot in plots:
        data = plot.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 10_000
    text = md.read_text()
    assert text == report.markdown(results, ["run-throughput.png", "run-latency.png"])
    assert "(run-latency.png)" in text


def test_plots_are_deterministic_and_do_not_mutate_the_results(tmp_path: Path) -> None:
    results = _results()
    before = copy.deepcopy(results)
    _, first = report.write_report(results, tmp_path / "a", "run")
    _, second = report.write_report(results, tmp_path / "b", "run")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert results == before


def test_write_report_with_no_scenarios(tmp_path: Path) -> None:
    md, plots = report.write_report({"scenarios": []}, tmp_path, "empty")
    assert "No scenarios were run." in md.read_text()
    assert all(p.read_bytes().startswith(PNG_SIGNATURE) for p in plots)
