"""The benchmark scenarios, one short file each; `SCENARIOS` maps the name given to `--scenario` to each."""

from loadtest.scenario import Scenario
from loadtest.scenarios import (
    churn,
    churn_api,
    close,
    many_routes,
    propagation,
    r1m,
    r16k,
    scale,
    small,
    small_unique,
    tls_handshake,
    tls_keepalive,
    upload,
)

SCENARIOS: dict[str, Scenario] = {m.SCENARIO.name: m.SCENARIO for m in (
    small, small_unique, r16k, r1m, upload, close, tls_keepalive, tls_handshake, many_routes, churn, churn_api, scale,
    propagation)}
