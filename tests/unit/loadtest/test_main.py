"""`python -m loadtest`: a scenario that fails is recorded as failed and the others' figures are kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import loadtest.__main__ as entry
from loadtest import harness
from loadtest.scenario import Result, Scenario


def _ok(scenario: Scenario, opts: harness.Options) -> Result:
    return {"name": scenario.name, "description": scenario.description, "rounds": {}, "median": {}, "ratios": {},
            "extra": {"figure": 1}}


def _broken(scenario: Scenario, opts: harness.Options) -> Result:
    raise RuntimeError("3 non-2xx responses during churn")


def test_a_failed_scenario_is_reported_and_the_rest_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(entry, "SCENARIOS", {"broken": Scenario("broken", "fails", run=_broken),
                                             "fine": Scenario("fine", "works", run=_ok)})
    monkeypatch.setattr(harness, "missing_tools", lambda extra=(): [])
    monkeypatch.setattr(harness, "versions", lambda python: {})
    assert entry.main(["--scenario", "broken,fine", "--quick", "--out", str(tmp_path)]) == 1
    (written,) = tmp_path.glob("*.json")
    scenarios = {s["name"]: s for s in json.loads(written.read_text())["scenarios"]}
    assert scenarios["broken"]["extra"] == {"FAILED": "RuntimeError: 3 non-2xx responses during churn"}
    assert scenarios["fine"]["extra"] == {"figure": 1}
    assert list(tmp_path.glob("*.md"))
