"""The benchmark scenarios, one short file each; `SCENARIOS` maps the name given to `--scenario` to each.

TLS scenarios (`tls-keepalive`, `tls-handshake`) join when the workers terminate TLS (the TLS issue).
"""

from loadtest.scenario import Scenario
from loadtest.scenarios import churn, close, many_routes, propagation, r1m, r16k, scale, small, upload

SCENARIOS: dict[str, Scenario] = {m.SCENARIO.name: m.SCENARIO for m in (
    small, r16k, r1m, upload, close, many_routes, churn, scale, propagation)}
