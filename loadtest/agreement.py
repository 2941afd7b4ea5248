"""`python -m loadtest.agreement A.json B.json [C.json ...]`: do full runs of `python -m loadtest` agree?

For every pair of result files, every scenario both measured with fastingress and a reference proxy
(nginx, haproxy), and both estimators: fastingress/reference in req/s by the best rounds (harness.best,
recomputed from the raw `rounds`, so result files from before that estimate work too) and by the ratio
of medians (harness.medians, likewise), and how far the two runs are apart. Apart means the larger
ratio over the smaller, minus one: symmetric, so the order of the files does not matter, and never
below the deviation relative to either run. Under each pair's table a verdict line per estimator:
"within 10% on N of M scenarios, max deviation X% (scenario)". Prints Markdown to stdout.

It reads result files only: it measures nothing and starts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest import harness

SUBJECT = "fastingress"
REFERENCES = ("nginx", "haproxy")
TOLERANCE = 0.10  # the reproducibility target: two full runs' ratios within 10% of each other
Estimator = Callable[[harness.Rounds], dict[str, harness.Round]]
ESTIMATORS: dict[str, Estimator] = {f"best {harness.BEST_ROUNDS} rounds": harness.best,
                                    "ratio of medians": harness.medians}


@dataclass(frozen=True)
class Run:
    """One result file: its name and each scenario's raw rounds per server."""

    name: str
    scenarios: dict[str, harness.Rounds]


@dataclass(frozen=True)
class Row:
    """One scenario of a pair of runs: fastingress/reference per estimator, in the first and second run."""

    scenario: str
    ratios: dict[str, tuple[float, float]]  # estimator -> (first run, second run)

    def apart(self, estimator: str) -> float:
        return deviation(*self.ratios[estimator])


def load(path: Path) -> Run:
    """A result file's scenarios with their rounds; scenarios without rounds (failed ones) are left out."""
    data: dict[str, Any] = json.loads(path.read_text())
    scenarios = {}
    for scenario in data.get("scenarios", []):
        rounds = {server: runs for server, runs in scenario.get("rounds", {}).items() if runs}
        if rounds:
            scenarios[str(scenario.get("name"))] = rounds
    return Run(path.stem, scenarios)


def subject_ratio(rounds: harness.Rounds, reference: str, estimate: Estimator) -> float | None:
    """fastingress/reference in req/s by `estimate`; None unless both have rounds and the reference served."""
    if not rounds.get(SUBJECT) or not rounds.get(reference):
        return None
    per_server = estimate({SUBJECT: rounds[SUBJECT], reference: rounds[reference]})
    denominator = per_server[reference]["rps"]
    return per_server[SUBJECT]["rps"] / denominator if denominator else None


def deviation(first: float, second: float) -> float:
    """How far apart two ratios are: the larger over the smaller, minus one (0.1: 10% apart)."""
    return max(first, second) / min(first, second) - 1.0


def compare(first: Run, second: Run, reference: str) -> list[Row]:
    """A row per scenario in both runs (first run's order) where every estimator gives both runs a ratio."""
    rows = []
    for name, rounds in first.scenarios.items():
        if name not in second.scenarios:
            continue
        ratios = {}
        for label, estimate in ESTIMATORS.items():
            a = subject_ratio(rounds, reference, estimate)
            b = subject_ratio(second.scenarios[name], reference, estimate)
            if a and b:
                ratios[label] = (a, b)
        if len(ratios) == len(ESTIMATORS):
            rows.append(Row(name, ratios))
    return rows


def verdict(rows: list[Row], estimator: str) -> str:
    """`within 10% on 8 of 9 scenarios, max deviation 12.3% (close)`."""
    if not rows:
        return "no scenario in common"
    within = sum(row.apart(estimator) <= TOLERANCE for row in rows)
    worst = max(rows, key=lambda row: row.apart(estimator))
    return (f"within {TOLERANCE:.0%} on {within} of {len(rows)} scenarios, "
            f"max deviation {worst.apart(estimator):.1%} ({worst.scenario})")


def table(first: Run, second: Run, reference: str) -> list[str]:
    """The Markdown section of one pair and one reference: the table, then a verdict per estimator."""
    rows = compare(first, second, reference)
    lines = [f"### {first.name} (A) vs {second.name} (B): {SUBJECT}/{reference}", ""]
    header = ["scenario"] + [f"{label} {part}" for label in ESTIMATORS for part in ("A", "B", "apart")]
    lines += ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in rows:
        cells = [row.scenario]
        for label in ESTIMATORS:
            a, b = row.ratios[label]
            cells += [f"{a:.2f}x", f"{b:.2f}x", f"{row.apart(label):.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {label}: {verdict(rows, label)}" for label in ESTIMATORS]
    return lines


def markdown(runs: list[Run]) -> str:
    lines = [f"# Agreement of {len(runs)} runs", ""]
    lines += [f"Apart: the larger {SUBJECT}/reference ratio of the two runs over the smaller, minus one; "
              f"the target is {TOLERANCE:.0%}."]
    for first, second in itertools.combinations(runs, 2):
        for reference in REFERENCES:
            lines += ["", *table(first, second, reference)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.agreement", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="result files of python -m loadtest (JSON)")
    args = parser.parse_args(argv)
    if len(args.results) < 2:
        parser.error("give at least two result files")
    sys.stdout.write(markdown([load(path) for path in args.results]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
