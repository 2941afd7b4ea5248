"""`scale`: fastingress with 1 worker vs 2 workers under the `small` load (both cores available to it)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from loadtest import harness
from loadtest.scenario import Result, Scenario, stage, summarise


def run(scenario: Scenario, opts: harness.Options) -> Result:
    with tempfile.TemporaryDirectory() as tmpdir:
        st = stage(scenario, Path(tmpdir))
        try:
            servers = []
            for workers in (1, 2):
                server = harness.start_fastingress(st.manifests_dir, opts.python, workers, f"fastingress-{workers}w",
                                                   harness.ANY_CPU)
                st.servers.append(server)
                servers.append(server)
            rounds = harness.interleave(servers, scenario.load, opts, st.tmp)
        finally:
            st.stop()
    result = summarise(scenario, rounds)
    med = result["median"]
    gain = med["fastingress-2w"]["rps"] / med["fastingress-1w"]["rps"]
    result["extra"]["2 workers / 1 worker (req/s)"] = round(gain, 2)
    result["extra"]["note"] = "wrk and the backend share CPU 1 with the second worker: a 2-core machine caps the gain"
    return result


SCENARIO = Scenario("scale", "keep-alive GET, ~100 B, 64 connections: 1 vs 2 workers", run=run)
