"""`/metrics`: the workers' shared stats rows and the supervisor's state in Prometheus text format 0.0.4.

Theory of operation: every worker writes its own row of int64 counters into the stats block
(`fastingress.table.stats`) once a second; the supervisor sums the live rows plus a `retired` row
(the counters of workers that already exited, folded in by the arbiter when it reaps them, so
counters never go backwards when a worker is replaced) and renders them here. Latency is kept per
bucket (not cumulative) by the workers; the cumulative `le` buckets are computed here.

Names follow `fastingress_<subsystem>_<name>_<unit>`; each family has `# HELP` and `# TYPE` lines.
Pure: no I/O, no clocks; the caller hands in numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from fastingress.table import stats as st

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
WORKER_STATES = ("booting", "running", "stopping")
GAUGE_WORDS = (st.CONNECTIONS_OPEN, st.TABLE_ROUTES_GEN, st.TABLE_ENDPOINTS_GEN)  # not summed into `retired`

Row = npt.NDArray[np.int64]
CertExpiry = tuple[str, str, float]  # Secret "namespace/name", fingerprint, seconds until not_after


def sum_rows(rows: Row, retired: Row | None = None) -> Row:
    """Column sums of the stats rows (a copy), plus the retired counters."""
    total: Row = rows.sum(axis=0, dtype=np.int64) if len(rows) else np.zeros(st.ROW_WORDS, dtype=np.int64)
    if retired is not None:
        total = total + retired
    return total


def counters_only(row: Row) -> Row:
    """A copy of one worker's row with the gauges zeroed: what is added to `retired` when it exits."""
    out: Row = np.array(row, dtype=np.int64, copy=True)
    out[list(GAUGE_WORDS)] = 0
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, value: float, labels: Mapping[str, str] | None = None) -> str:
    text = str(int(value)) if float(value).is_integer() else repr(float(value))
    if not labels:
        return f"{name} {text}"
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {text}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _histogram(totals: Row) -> list[str]:
    name = "fastingress_http_request_duration_seconds"
    per_bucket = [int(totals[st.LATENCY_BASE + i]) for i in range(len(st.LATENCY_BUCKETS_S) + 1)]
    lines, running = [], 0
    for bound, count in zip(st.LATENCY_BUCKETS_S, per_bucket, strict=False):
        running += count
        lines.append(_sample(f"{name}_bucket", running, {"le": repr(float(bound))}))
    total = sum(per_bucket)
    lines.append(_sample(f"{name}_bucket", total, {"le": "+Inf"}))
    lines.append(_sample(f"{name}_sum", int(totals[st.LATENCY_SUM_US]) / 1e6))
    lines.append(_sample(f"{name}_count", total))
    return _family(name, "histogram", "Time from request head received to response complete.", lines)


def _worker_families(totals: Row) -> list[str]:
    out: list[str] = []
    out += _family("fastingress_http_requests_total", "counter", "Responses sent, by status class.",
                   [_sample("fastingress_http_requests_total", int(totals[st.REQ_1XX + i]), {"code_class": c})
                    for i, c in enumerate(CODE_CLASSES)])
    out += _family("fastingress_upstream_errors_total", "counter", "Failed upstream attempts, by reason.",
                   [_sample("fastingress_upstream_errors_total", int(totals[st.UP_CONNECT_REFUSED + i]), {"reason": r})
                    for i, r in enumerate(st.UPSTREAM_REASONS)])
    out += _family("fastingress_tls_handshake_failures_total", "counter", "Failed TLS handshakes, by reason.",
                   [_sample("fastingress_tls_handshake_failures_total", int(totals[st.TLS_FAIL_BASE + i]),
                            {"reason": r}) for i, r in enumerate(st.TLS_FAIL_REASONS)])
    out += _histogram(totals)
    simple = (
        ("fastingress_retries_total", "counter", "Requests retried on another endpoint.", st.RETRIES),
        ("fastingress_upstream_ejections_total", "counter", "Endpoints ejected by passive health checks.",
         st.EJECTIONS),
        ("fastingress_connections_open", "gauge", "Client connections open now.", st.CONNECTIONS_OPEN),
        ("fastingress_connections_accepted_total", "counter", "Client connections accepted.", st.CONNECTIONS_TOTAL),
        ("fastingress_connections_refused_total", "counter",
         "Client connections closed at once: over the per-worker or per-address limit.", st.CONNECTIONS_REFUSED),
        ("fastingress_tls_handshakes_total", "counter", "TLS handshakes completed.", st.TLS_HANDSHAKES),
        ("fastingress_table_errors_total", "counter", "Table generations workers could not load (kept the old).",
         st.TABLE_ERRORS),
        ("fastingress_access_log_dropped_total", "counter", "Access-log lines dropped on a full buffer.",
         st.ACCESS_LOG_DROPPED),
    )
    for name, kind, help_text, word in simple:
        out += _family(name, kind, help_text, [_sample(name, int(totals[word]))])
    return out


class KubeStats(NamedTuple):
    """The Kubernetes side's counters: per reflector (resource name -> counter -> value), and the writers'."""

    reflectors: Mapping[str, Mapping[str, int]]
    leader: bool | None = None  # None: status and Events are off (FASTINGRESS_UPDATE_STATUS=false)
    status: Mapping[str, int] = {}  # writes, write_failures, clears
    events: Mapping[str, int] = {}  # sent, dropped_rate, dropped_full, failed, ...


_REFLECTOR_FAMILIES = (
    ("lists", "fastingress_kube_lists_total", "Complete lists of a resource (the first and every relist)."),
    ("relists", "fastingress_kube_relists_total", "Relists after an expired resourceVersion (HTTP 410)."),
    ("watches", "fastingress_kube_watches_total", "Watch requests started (a watch ends at its timeout or on a drop)."),
    ("events", "fastingress_kube_watch_events_total", "ADDED/MODIFIED/DELETED events received."),
    ("errors", "fastingress_kube_errors_total", "Failed list or watch attempts (each followed by a backoff)."),
)


def kube_families(kube: KubeStats) -> list[str]:
    """The Kubernetes source's and the cluster writers' families."""
    out: list[str] = []
    for counter, name, help_text in _REFLECTOR_FAMILIES:
        out += _family(name, "counter", help_text, [_sample(name, values.get(counter, 0), {"resource": resource})
                                                   for resource, values in sorted(kube.reflectors.items())])
    if kube.leader is None:
        return out
    out += _family("fastingress_leader", "gauge", "1 when this replica holds the leader-election Lease.",
                   [_sample("fastingress_leader", int(kube.leader))])
    name = "fastingress_ingress_status_writes_total"
    out += _family(name, "counter", "Ingress status writes, by outcome.",
                   [_sample(name, kube.status.get(k, 0), {"outcome": o})
                    for k, o in (("writes", "ok"), ("write_failures", "failed"), ("clears", "cleared"))])
    name = "fastingress_kube_events_total"
    out += _family(name, "counter", "Kubernetes Events about problems, by outcome.",
                   [_sample(name, kube.events.get(k, 0), {"outcome": k})
                    for k in ("sent", "failed", "dropped_rate", "dropped_full")])
    return out


def render_metrics(
    totals: Row,
    *,
    routes_generation: int,
    endpoints_generation: int,
    workers: Mapping[str, int],
    restarts: int,
    problems: Mapping[str, int],
    certificates: Sequence[CertExpiry] = (),
    kube: KubeStats | None = None,
) -> str:
    """The whole exposition: worker counters (`totals` from `sum_rows`) and the supervisor's state.

    `certificates`: (Secret "namespace/name", fingerprint, seconds until expiry) per certificate of the
    current config (negative once expired); see `cert_expiries`.
    """
    out = _worker_families(totals)
    out += _family("fastingress_table_routes_generation", "gauge", "Routes generation last published.",
                   [_sample("fastingress_table_routes_generation", routes_generation)])
    out += _family("fastingress_table_endpoints_generation", "gauge", "Endpoints generation last published.",
                   [_sample("fastingress_table_endpoints_generation", endpoints_generation)])
    out += _family("fastingress_workers", "gauge", "Worker processes, by state.",
                   [_sample("fastingress_workers", workers.get(s, 0), {"state": s}) for s in WORKER_STATES])
    out += _family("fastingress_worker_restarts_total", "counter", "Workers replaced after an unexpected exit.",
                   [_sample("fastingress_worker_restarts_total", restarts)])
    out += _family("fastingress_config_problems", "gauge", "Current configuration problems, by reason.",
                   [_sample("fastingress_config_problems", n, {"reason": r}) for r, n in sorted(problems.items())])
    name = "fastingress_tls_certificate_expiry_seconds"
    out += _family(name, "gauge", "Seconds until a certificate of the current table expires (negative: expired).",
                   [_sample(name, seconds, {"secret": secret, "fingerprint": fp})
                    for secret, fp, seconds in sorted(certificates)])
    if kube is not None:
        out += kube_families(kube)
    return "\n".join(out) + "\n"


def cert_expiries(certs: Iterable[tuple[str, str, int]], now: float) -> list[CertExpiry]:
    """(secret, fingerprint, not_after epoch seconds) -> (secret, fingerprint, whole seconds from `now`)."""
    return [(secret, fp, float(not_after - int(now))) for secret, fp, not_after in certs]
