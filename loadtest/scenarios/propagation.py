"""`propagation`: time from a manifest change to the first request served by the new route.

Each change writes (atomically: write, then rename) a new Ingress for a host nobody routes yet; the
clock starts at the rename and stops at the first 200 for that host, probing every 2 ms on a fresh
connection. The manifests source polls the directory (FASTINGRESS_MANIFESTS_POLL_S, 0.05 s here;
the Kubernetes source is woken by the watch instead), so half a poll interval is the expected floor.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from loadtest import configs, harness
from loadtest.scenario import Result, Scenario, stage

INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: new-{i}, creationTimestamp: "2026-01-01T00:00:00Z"}}
spec:
  ingressClassName: fastingress
  rules:
  - host: new-{i}.bench.example
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(scenario: Scenario, opts: harness.Options) -> Result:
    changes = 10 if opts.quick else 100
    times_ms: list[float] = []
    timeouts = 0
    with tempfile.TemporaryDirectory() as tmpdir:
        st = stage(scenario, Path(tmpdir))
        try:
            server = harness.start_fastingress(st.manifests_dir, opts.python, name="fastingress")
            st.servers.append(server)
            for i in range(changes):
                host = f"new-{i}.bench.example"
                if harness.http_status(server.port, "/", host) != 404:
                    raise RuntimeError(f"{host} is served before its Ingress exists")
                staged = st.tmp / f"new-{i}.yaml.tmp"
                staged.write_text(INGRESS.format(i=i, service=configs.SERVICE))
                start = time.perf_counter()
                staged.rename(st.manifests_dir / f"new-{i}.yaml")
                while harness.http_status(server.port, "/", host) != 200:
                    if time.perf_counter() - start > 10:
                        timeouts += 1
                        break
                    time.sleep(0.002)
                else:
                    times_ms.append((time.perf_counter() - start) * 1000)
        finally:
            st.stop()
    extra: dict[str, float | str] = {"changes": changes, "timeouts (> 10 s)": timeouts,
                                     "manifests poll interval s": 0.05}
    if times_ms:
        extra |= {"propagation p50 ms": round(statistics.median(times_ms), 1),
                  "propagation p99 ms": round(_percentile(times_ms, 0.99), 1),
                  "propagation max ms": round(max(times_ms), 1)}
    return {"name": scenario.name, "description": scenario.description, "rounds": {}, "median": {}, "ratios": {},
            "extra": extra}


SCENARIO = Scenario("propagation", "manifest change -> first request served by the new route (100 changes)",
                    servers=("fastingress",), run=run,
                    manifests=lambda port: configs.many_routes_manifests(1, 1, port))  # no catch-all: 404 first
