"""`churn-api`: the `small` load on fastingress serving from the Kubernetes API while the Service's
EndpointSlices are rewritten through the API 10 times a second; measured against the same load without
changes, in interleaved rounds (idle, churn, idle, churn, ...).

The test API server runs in this process (loadtest/kube.py); fastingress watches it (no `--manifests`,
KUBECONFIG, loopback endpoints allowed). The Service `be` has two EndpointSlices, `be-0` on one port of
the backend and `be-1` on another; every 100 ms one of them is replaced (HTTP PUT) so that its endpoint
appears or goes: the Service's endpoints cycle {0} -> {0, 1} -> {1} -> {0, 1} -> {0}, always non-empty,
one and two endpoints in turn (`slice_change`). Each change is an endpoints-only table generation, and
every other one removes an endpoint that requests were being sent to. The supervisor's log counts the
generations published during each churn round (the changes reached the table, not only the API).

The promise checked: zero non-2xx responses and zero socket errors, idle or churning: the scenario fails
(raises, with its figures) otherwise. Reported: req/s and p99 during churn against idle.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from loadtest import harness, kube
from loadtest.scenario import Result, Scenario, stage, summarise

CHANGES_PER_S = 10


def slice_change(tick: int) -> tuple[int, bool]:
    """The `tick`-th change (from 1): which slice (0 or 1) is rewritten, and whether its endpoint is then there.

    From the seeded state (slice 0 with its endpoint, slice 1 empty) the ticks go: 1 adds slice 1's, 2 removes
    slice 0's, 3 adds it back, 4 removes slice 1's, and so on, every 4 ticks back to the start.
    """
    return {1: (1, True), 2: (0, False), 3: (0, True), 0: (1, False)}[tick % 4]


def seeded_slices(ports: list[int]) -> list[dict[str, object]]:
    """The slices as seeded: `be-0` with 127.0.0.1 on ports[0], `be-1` without endpoints (its port ports[1])."""
    return [kube.backend_slice(0, ports[0]), kube.backend_slice(1, ports[1], ())]


class Churner(threading.Thread):
    """Replaces one EndpointSlice every 1/CHANGES_PER_S s over the API until stopped; then restores the seed."""

    def __init__(self, api_port: int, ports: list[int]) -> None:
        super().__init__(daemon=True, name="churn-api")
        self.api_port, self.ports = api_port, ports
        self.stop_event = threading.Event()
        self.changes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rest = kube.RestClient(self.api_port)
        try:
            interval = 1.0 / CHANGES_PER_S
            started = time.monotonic()
            tick = 0
            while not self.stop_event.wait(max(0.0, started + (tick + 1) * interval - time.monotonic())):
                tick += 1
                index, present = slice_change(tick)
                rest.replace(kube.backend_slice(index, self.ports[index], ("127.0.0.1",) if present else ()))
                self.changes += 1
            for obj in seeded_slices(self.ports):
                rest.replace(obj)
        except BaseException as exc:  # reported by the scenario: a churn that stopped is not a churn
            self.error = exc
        finally:
            rest.close()


def run(scenario: Scenario, opts: harness.Options) -> Result:
    rounds: dict[str, list[dict[str, float]]] = {"fastingress-api-idle": [], "fastingress-api-churn": []}
    changes: list[int] = []
    churn_s = 0.0  # how long the churn ran, over all rounds
    generations: list[int] = []  # endpoints generations published during each churn round
    endpoint_counts: set[int] = set()  # the endpoints those generations had
    with tempfile.TemporaryDirectory() as tmpdir:
        st = stage(scenario, Path(tmpdir), backend_ports=2)
        log = st.tmp / "fastingress-api.log"
        try:
            with kube.Cluster.start(st.tmp, seeded_slices(st.backend_ports), [kube.default_ingress()]) as cluster:
                server = harness.start_fastingress(None, opts.python, name="fastingress-api",
                                                   env={**cluster.env(), "FASTINGRESS_LOG_LEVEL": "INFO"}, log=log)
                st.servers.append(server)
                for _ in range(opts.rounds):
                    rounds["fastingress-api-idle"].append(
                        harness.measure(server, opts.seconds, scenario.load, st.tmp, opts.warmup_s))
                    churner = Churner(cluster.api.port, st.backend_ports)
                    began = time.time()
                    churner.start()
                    try:
                        rounds["fastingress-api-churn"].append(
                            harness.measure(server, opts.seconds, scenario.load, st.tmp, opts.warmup_s))
                    finally:
                        churner.stop_event.set()
                        churner.join()
                    ended = time.time()
                    if churner.error is not None:
                        raise RuntimeError(f"the EndpointSlice churn failed: {churner.error!r}")
                    changes.append(churner.changes)
                    churn_s += ended - began
                    time.sleep(0.3)  # the restoring change is published before the next idle round
                    events = kube.publishes(log.read_text().splitlines())
                    during = [p for p in events if began <= p.ts <= ended]
                    generations.append(len(during))
                    endpoint_counts.update(p.endpoints for p in during)
        finally:
            st.stop()
    result = summarise(scenario, rounds)
    med = result["median"]
    idle, churn = med["fastingress-api-idle"], med["fastingress-api-churn"]
    errors = {name: int(sum(r["errors"] for r in runs)) for name, runs in rounds.items()}
    result["extra"] = {
        "non-2xx or socket errors during churn": errors["fastingress-api-churn"],
        "non-2xx or socket errors idle": errors["fastingress-api-idle"],
        "req/s idle": round(idle["rps"]), "req/s churn": round(churn["rps"]),
        "req/s churn / idle": round(churn["rps"] / idle["rps"], 2),
        "p99 ms idle": round(idle["p99_ms"], 2), "p99 ms churn": round(churn["p99_ms"], 2),
        "p99 churn / idle": round(churn["p99_ms"] / idle["p99_ms"], 2),
        "EndpointSlice changes per churn round (median)": sorted(changes)[len(changes) // 2] if changes else 0,
        "EndpointSlice changes per second": round(sum(changes) / churn_s, 1) if churn_s else 0,
        "table generations published per churn round (median)":
            sorted(generations)[len(generations) // 2] if generations else 0,
        "endpoints in those generations": ", ".join(str(n) for n in sorted(endpoint_counts)) or "-",
    }
    if any(errors.values()):
        raise RuntimeError(f"{scenario.name}: non-2xx responses or socket errors: {errors}; {result['extra']}")
    return result


SCENARIO = Scenario("churn-api", "small, from the Kubernetes API, with EndpointSlices changing 10/s through the API "
                    "(fastingress only)", servers=("fastingress",), run=run)
