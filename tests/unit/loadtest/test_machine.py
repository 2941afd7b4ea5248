"""The machine-speed probe (pinned to a CPU when given one) and the repeat-a-disturbed-round rule of
`harness.measure_steady`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from loadtest import harness
from loadtest.machine import DISTURBED_BELOW, MAX_ATTEMPTS, SpeedProbe


class ScriptedProbe(SpeedProbe):
    """A probe whose samples are given (the machine's speed is what is under test, not SHA-256)."""

    def __init__(self, speeds: list[float]) -> None:
        super().__init__()
        self.speeds = list(speeds)
        self.reference = 100.0

    def sample(self) -> float:
        return self.speeds.pop(0)


@pytest.fixture
def rounds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    made: list[int] = []

    def fake_measure(server: Any, seconds: float, load: Any, tmp: Path, warmup_s: float = 1.0) -> dict[str, float]:
        made.append(1)
        return {"rps": 1000.0 * len(made), "p99_ms": 1.0}

    monkeypatch.setattr(harness, "measure", fake_measure)
    monkeypatch.setattr(harness, "RETRY_PAUSE_S", 0.0)
    return made


class Named:
    name = "fastingress"


def run(probe: SpeedProbe, quick: bool = False) -> dict[str, float]:
    return harness.measure_steady(Named(), harness.Load(), harness.Options(quick=quick), Path("."),  # type: ignore[arg-type]
                                  probe)


def test_a_round_in_a_slow_spell_is_measured_again(rounds: list[int]) -> None:
    result = run(ScriptedProbe([100, 60, 70, 99, 98, 100]))
    assert len(rounds) == 3 and result["attempts"] == 3 and result["machine_speed"] == 0.98


def test_a_steady_round_is_kept_and_the_slower_probe_counts(rounds: list[int]) -> None:
    result = run(ScriptedProbe([100, DISTURBED_BELOW * 100]))
    assert len(rounds) == 1 and result["machine_speed"] == DISTURBED_BELOW


def test_attempts_are_bounded_and_quick_never_repeats(rounds: list[int]) -> None:
    assert run(ScriptedProbe([50.0] * 2 * MAX_ATTEMPTS))["attempts"] == MAX_ATTEMPTS
    rounds.clear()
    assert run(ScriptedProbe([50.0, 50.0]), quick=True)["attempts"] == 1 and len(rounds) == 1


def test_the_real_probe_is_relative_to_its_best() -> None:
    probe = SpeedProbe(repeats=1, blocks=1)
    probe.calibrate(3)
    assert 0 < probe.relative(probe.sample()) <= 1.0


class AffinityProbe(SpeedProbe):
    """A real probe that notes the CPUs it may run on while it times (`fail`: the timing raises)."""

    def __init__(self, cpu: int | None, fail: bool = False) -> None:
        super().__init__(repeats=1, blocks=1, cpu=cpu)
        self.fail = fail
        self.during: list[set[int]] = []

    def time_blocks(self) -> float:
        self.during.append(os.sched_getaffinity(0))
        if self.fail:
            raise RuntimeError("timing failed")
        return super().time_blocks()


def test_the_probe_samples_pinned_to_its_cpu_and_restores_the_affinity() -> None:
    before = os.sched_getaffinity(0)
    cpu = max(before)  # one the test may run on; a single CPU, so pinning narrows when there are two or more
    probe = AffinityProbe(cpu)
    assert probe.sample() > 0
    assert probe.during == [{cpu}]
    assert os.sched_getaffinity(0) == before


def test_the_affinity_is_restored_when_sampling_fails_and_left_alone_without_a_cpu() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError):
        AffinityProbe(min(before), fail=True).sample()
    assert os.sched_getaffinity(0) == before
    unpinned = AffinityProbe(None)
    unpinned.sample()
    assert unpinned.during == [before]
