"""/metrics rendering: a StatsBlock with known rows, parsed back with the text-format rules (0.0.4)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from fastingress.supervisor.metrics import KubeStats, cert_expiries, counters_only, render_metrics, sum_rows
from fastingress.table import stats as st

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(family -> type, samples): every sample must follow its family's # TYPE line."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: Samples = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ", 3)[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped") and name not in types
            types[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types and family in helped, f"{name} has no # TYPE/# HELP"
        pairs = frozenset(_LABEL.findall(labels or ""))
        samples[(name, pairs)] = float(value)
    return types, samples


def rows(tmp_path: Path) -> st.StatsBlock:
    block = st.StatsBlock(str(tmp_path / "stats"), rows=4, create=True)
    a = [0] * st.ROW_WORDS
    a[st.REQ_2XX], a[st.REQ_5XX], a[st.UP_CONNECT_REFUSED], a[st.RETRIES] = 10, 2, 3, 1
    a[st.CONNECTIONS_OPEN], a[st.LATENCY_BASE + 0], a[st.LATENCY_BASE + 3] = 5, 4, 6
    a[st.LATENCY_BASE + len(st.LATENCY_BUCKETS_S)] = 2  # slower than the last bound: only +Inf
    a[st.LATENCY_SUM_US] = 25_500_000
    b = [0] * st.ROW_WORDS
    b[st.REQ_2XX], b[st.CONNECTIONS_OPEN], b[st.LATENCY_BASE + 0] = 5, 1, 3
    block.write_row(0, a)
    block.write_row(2, b)
    return block


def test_sums_rows_and_renders_every_family(tmp_path: Path) -> None:
    block = rows(tmp_path)
    retired = counters_only(block.rows[2])  # as if the worker of row 2 had exited once already
    assert retired[st.CONNECTIONS_OPEN] == 0 and retired[st.REQ_2XX] == 5
    text = render_metrics(sum_rows(block.rows.copy(), retired), routes_generation=7, endpoints_generation=9,
                          workers={"running": 2, "booting": 1}, restarts=3,
                          problems={"ServiceNotFound": 2, 'Odd"Reason\\': 1})
    types, s = parse(text)
    block.unlink()

    def get(name: str, **labels: str) -> float:
        return s[(name, frozenset(labels.items()))]

    assert types["fastingress_http_requests_total"] == "counter"
    assert get("fastingress_http_requests_total", code_class="2xx") == 20  # 10 + 5 + 5 retired
    assert get("fastingress_http_requests_total", code_class="5xx") == 2
    assert get("fastingress_http_requests_total", code_class="1xx") == 0
    assert get("fastingress_upstream_errors_total", reason="connect_refused") == 3
    assert get("fastingress_retries_total") == 1
    assert get("fastingress_connections_open") == 6  # gauges: live rows only
    assert get("fastingress_table_routes_generation") == 7
    assert get("fastingress_table_endpoints_generation") == 9
    assert get("fastingress_workers", state="running") == 2 and get("fastingress_workers", state="stopping") == 0
    assert get("fastingress_worker_restarts_total") == 3
    assert get("fastingress_config_problems", reason="ServiceNotFound") == 2
    assert get("fastingress_config_problems", reason='Odd\\"Reason\\\\') == 1  # escaped as the format says
    for family in ("fastingress_upstream_ejections_total", "fastingress_connections_accepted_total"):
        assert family in types


def test_histogram_is_cumulative_with_inf_sum_and_count(tmp_path: Path) -> None:
    block = rows(tmp_path)
    text = render_metrics(sum_rows(block.rows.copy()), routes_generation=1, endpoints_generation=1,
                          workers={}, restarts=0, problems={})
    types, s = parse(text)
    block.unlink()
    name = "fastingress_http_request_duration_seconds"
    assert types[name] == "histogram"
    buckets = sorted(((float(dict(labels)["le"]), v) for (n, labels), v in s.items() if n == f"{name}_bucket"))
    bounds = [b for b, _ in buckets]
    assert bounds == [*st.LATENCY_BUCKETS_S, math.inf]
    counts = [v for _, v in buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts[0] == 7 and counts[3] == 13 and counts[-2] == 13 and counts[-1] == 15
    assert s[(f"{name}_count", frozenset())] == 15
    assert s[(f"{name}_sum", frozenset())] == 25.5


def test_no_rows_renders_zeros() -> None:
    text = render_metrics(sum_rows(np.zeros((0, st.ROW_WORDS), dtype=np.int64)), routes_generation=0,
                          endpoints_generation=0, workers={}, restarts=0, problems={})
    _, s = parse(text)
    assert s[("fastingress_http_request_duration_seconds_count", frozenset())] == 0


def test_tls_handshake_counters_are_summed_by_reason(tmp_path: Path) -> None:
    block = st.StatsBlock(str(tmp_path / "stats"), rows=2, create=True)
    a, b = [0] * st.ROW_WORDS, [0] * st.ROW_WORDS
    a[st.TLS_HANDSHAKES], a[st.TLS_FAIL_BASE + 0], a[st.TLS_FAIL_BASE + 3] = 7, 1, 4
    b[st.TLS_HANDSHAKES], b[st.TLS_FAIL_BASE + 1], b[st.TLS_FAIL_BASE + 2] = 3, 2, 5
    block.write_row(0, a)
    block.write_row(1, b)
    retired = counters_only(block.rows[1])  # counters, not gauges: a replaced worker's handshakes still count
    types, s = parse(render_metrics(sum_rows(block.rows.copy(), retired), routes_generation=1,
                                    endpoints_generation=1, workers={}, restarts=0, problems={}))
    block.unlink()
    assert types["fastingress_tls_handshakes_total"] == "counter"
    assert types["fastingress_tls_handshake_failures_total"] == "counter"
    assert s[("fastingress_tls_handshakes_total", frozenset())] == 13
    failures = {dict(labels)["reason"]: v for (n, labels), v in s.items()
                if n == "fastingress_tls_handshake_failures_total"}
    assert failures == {"timeout": 1, "protocol": 4, "aborted": 10, "other": 4}
    assert tuple(failures) == st.TLS_FAIL_REASONS


def test_stats_words_of_tls_do_not_overlap_the_others() -> None:
    tls_words = {st.TLS_HANDSHAKES, *(st.TLS_FAIL_BASE + i for i in range(len(st.TLS_FAIL_REASONS)))}
    assert tls_words == set(range(41, 46))
    used = {*range(st.LATENCY_BASE + len(st.LATENCY_BUCKETS_S) + 1), st.CONNECTIONS_REFUSED}
    assert not tls_words & used and max(tls_words) < st.ROW_WORDS


def test_certificate_expiry_gauge() -> None:
    now = 1_700_000_000.7
    certs = [("default/site", "ab" * 32, 1_700_086_400), ("ingress/default", "cd" * 32, 1_699_999_000)]
    expiries = cert_expiries(certs, now)
    assert expiries == [("default/site", "ab" * 32, 86_400.0), ("ingress/default", "cd" * 32, -1_000.0)]
    types, s = parse(render_metrics(sum_rows(np.zeros((0, st.ROW_WORDS), dtype=np.int64)), routes_generation=1,
                                    endpoints_generation=1, workers={}, restarts=0, problems={},
                                    certificates=expiries))
    name = "fastingress_tls_certificate_expiry_seconds"
    assert types[name] == "gauge"
    assert s[(name, frozenset({("secret", "default/site"), ("fingerprint", "ab" * 32)}))] == 86_400
    assert s[(name, frozenset({("secret", "ingress/default"), ("fingerprint", "cd" * 32)}))] == -1_000
    _, none = parse(render_metrics(sum_rows(np.zeros((0, st.ROW_WORDS), dtype=np.int64)), routes_generation=0,
                                   endpoints_generation=0, workers={}, restarts=0, problems={}))
    assert not [k for k in none if k[0] == name]  # no certificates: the family has no samples


def test_kubernetes_families_are_labelled_by_resource_and_outcome() -> None:
    kube = KubeStats({"Ingress": {"lists": 2, "relists": 1, "watches": 7, "events": 40, "errors": 3},
                      "Secret": {"lists": 1}}, leader=True, status={"writes": 5, "write_failures": 1},
                     events={"sent": 4, "dropped_rate": 2})
    types, samples = parse(render_metrics(np.zeros(st.ROW_WORDS, dtype=np.int64), routes_generation=1,
                                          endpoints_generation=1, workers={}, restarts=0, problems={}, kube=kube))
    assert types["fastingress_kube_relists_total"] == "counter"
    assert samples[("fastingress_kube_relists_total", frozenset({("resource", "Ingress")}))] == 1
    assert samples[("fastingress_kube_watch_events_total", frozenset({("resource", "Ingress")}))] == 40
    assert samples[("fastingress_kube_errors_total", frozenset({("resource", "Secret")}))] == 0
    assert samples[("fastingress_leader", frozenset())] == 1
    assert samples[("fastingress_ingress_status_writes_total", frozenset({("outcome", "failed")}))] == 1
    assert samples[("fastingress_kube_events_total", frozenset({("outcome", "dropped_rate")}))] == 2


def test_without_status_updates_there_is_no_leader_gauge() -> None:
    text = render_metrics(np.zeros(st.ROW_WORDS, dtype=np.int64), routes_generation=1, endpoints_generation=1,
                          workers={}, restarts=0, problems={}, kube=KubeStats({"Ingress": {"lists": 1}}))
    assert "fastingress_kube_lists_total" in text and "fastingress_leader" not in text
