"""The pure parts of loadtest's `propagation` and `churn-api` scenarios: percentiles, summaries, the
verdict against issue 6's targets, and the EndpointSlice cycle the churn walks."""

from __future__ import annotations

from loadtest.scenarios import SCENARIOS
from loadtest.scenarios.churn_api import seeded_slices, slice_change
from loadtest.scenarios.propagation import Split, p50_p99, percentile, summary, verdict


def test_both_scenarios_are_registered() -> None:
    assert SCENARIOS["propagation"].servers == ("fastingress",)
    assert SCENARIOS["churn-api"].servers == ("fastingress",)
    assert SCENARIOS["churn-api"].run is not None and SCENARIOS["churn"].run is not None


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == 51.0  # round(49.5) = 50 -> the 51st
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0


def test_summary_rounds_and_names_by_label() -> None:
    assert summary("API", []) == {}
    out = summary("API", [10.04, 20.0, 30.0, 250.06])
    assert out == {"API p50 ms": 25.0, "API p99 ms": 250.1, "API max ms": 250.1}


def test_p50_p99() -> None:
    assert p50_p99([1.0, 2.0, 3.0, 40.04]) == "2.5 / 40.0"
    assert p50_p99([5.0]) == "5.0 / 5.0"


def test_verdict_says_met_or_by_how_much_it_is_missed() -> None:
    assert verdict(58.6, 60.8).startswith("met")
    assert verdict(101.0, 120.0) == "missed: p50 101.0 ms > 100 ms (+1.0 ms)"
    assert verdict(99.0, 350.5) == "missed: p99 350.5 ms > 300 ms (+50.5 ms)"
    assert verdict(100.0, 300.0).count("+0.0 ms") == 2  # "under" is strict


def test_split_describes_where_the_time_went() -> None:
    text = Split(61.0, 52.2, 0.6, 8.8).describe()
    assert text == "61.0 ms = 52.2 to the publish (compile 0.6) + 8.8 to the first 200"


def _endpoints(present: dict[int, bool]) -> frozenset[int]:
    return frozenset(i for i, on in present.items() if on)


def test_slice_changes_cycle_between_one_and_two_endpoints_and_never_none() -> None:
    seeded = seeded_slices([18080, 18081])
    present = {i: bool(s["endpoints"]) for i, s in enumerate(seeded)}
    assert _endpoints(present) == {0}
    sizes, seen = [], []
    for tick in range(1, 13):
        index, on = slice_change(tick)
        assert present[index] != on, f"tick {tick} would rewrite slice {index} without changing it"
        present[index] = on
        assert _endpoints(present), f"tick {tick} leaves the Service without endpoints"
        sizes.append(len(_endpoints(present)))
        seen.append(_endpoints(present))
    assert sizes == [2, 1] * 6
    assert seen[:4] == [{0, 1}, {1}, {0, 1}, {0}]  # each endpoint is removed in turn, under load
    assert _endpoints(present) == {0}  # a whole number of cycles ends where it started
