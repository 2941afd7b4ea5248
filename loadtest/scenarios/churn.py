"""`churn`: the `small` load on fastingress while endpoints change 10 times a second and an Ingress once a
second; measured against the same load without changes, in interleaved rounds.

The Service has no static endpoints: an EndpointSlice file moves its one endpoint between two ports of
the backend (an endpoints-only table swap each time), and a second Ingress file appears and disappears
(a full routes swap). Every change is a write then a rename, as a ConfigMap update would be. The
promise checked: zero non-2xx responses and zero socket errors during churn.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from loadtest import harness
from loadtest.scenario import Result, Scenario, stage, summarise

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: churn}
spec: {ports: [{name: web, port: 80, targetPort: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: churn}
spec: {ingressClassName: fastingress, defaultBackend: {service: {name: churn, port: {number: 80}}}}
"""
SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: churn-1, labels: {{kubernetes.io/service-name: churn}}}}
addressType: IPv4
ports: [{{name: web, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"""
EXTRA_INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: churn-extra}}
spec:
  ingressClassName: fastingress
  rules:
  - host: extra-{n}.bench.example
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: churn, port: {{number: 80}}}}}}}}
"""


class Churner(threading.Thread):
    """Rewrites the EndpointSlice every 100 ms and the extra Ingress every second until stopped."""

    def __init__(self, directory: Path, ports: list[int]) -> None:
        super().__init__(daemon=True)
        self.directory, self.ports = directory, ports
        self.stop_event = threading.Event()
        self.endpoint_changes = self.ingress_changes = 0

    def _write(self, name: str, text: str) -> None:
        staged = self.directory.parent / f"{name}.tmp"
        staged.write_text(text)
        staged.rename(self.directory / name)

    def run(self) -> None:
        tick = 0
        while not self.stop_event.wait(0.1):
            tick += 1
            self._write("slice.yaml", SLICE.format(port=self.ports[tick % 2]))
            self.endpoint_changes += 1
            if tick % 10 == 0:
                if (self.directory / "extra.yaml").exists():
                    (self.directory / "extra.yaml").unlink()
                else:
                    self._write("extra.yaml", EXTRA_INGRESS.format(n=tick))
                self.ingress_changes += 1


def run(scenario: Scenario, opts: harness.Options) -> Result:
    with tempfile.TemporaryDirectory() as tmpdir:
        st = stage(scenario, Path(tmpdir), backend_ports=2)
        (st.manifests_dir / "slice.yaml").write_text(SLICE.format(port=st.backend_ports[0]))
        rounds: dict[str, list[dict[str, float]]] = {"fastingress-idle": [], "fastingress-churn": []}
        churner = None
        try:
            server = harness.start_fastingress(st.manifests_dir, opts.python)
            st.servers.append(server)
            for _ in range(opts.rounds):
                rounds["fastingress-idle"].append(harness.measure(server, opts.seconds, scenario.load, st.tmp,
                                                                  opts.warmup_s))
                churner = Churner(st.manifests_dir, st.backend_ports)
                churner.start()
                try:
                    rounds["fastingress-churn"].append(harness.measure(server, opts.seconds, scenario.load, st.tmp,
                                                                       opts.warmup_s))
                finally:
                    churner.stop_event.set()
                    churner.join()
                time.sleep(0.2)
        finally:
            st.stop()
    result = summarise(scenario, rounds)
    med = result["median"]
    result["extra"] = {
        "non-2xx or socket errors during churn": int(sum(r["errors"] for r in rounds["fastingress-churn"])),
        "p99 churn / idle": round(med["fastingress-churn"]["p99_ms"] / med["fastingress-idle"]["p99_ms"], 2),
        "req/s churn / idle": round(med["fastingress-churn"]["rps"] / med["fastingress-idle"]["rps"], 2),
        "endpoint changes per round": churner.endpoint_changes if churner else 0,
        "Ingress changes per round": churner.ingress_changes if churner else 0,
    }
    return result


SCENARIO = Scenario("churn", "small, with endpoints changing 10/s and an Ingress 1/s (fastingress only)",
                    servers=("fastingress",), manifests=lambda port: SERVICE, run=run)
