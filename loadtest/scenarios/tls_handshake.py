"""`tls-handshake`: a full TLS handshake per request (`close` over HTTPS), ~100 B responses, 64 connections.

Each request opens a connection, completes a full handshake (TLS 1.3 here: ECDHE, the server's ECDSA
P-256 signature, which wrk verifies), sends one GET with `Connection: close` and closes. Left alone,
wrk would resume instead: it reuses each connection's SSL object, which keeps the session, so every
reconnection offers the server's session ticket and all three servers accept it (see
loadtest/wrk_noresume.c). The load therefore preloads that shim (`resume_tls=False`), and each run
checks it first: 1 s of this load against a probe nginx (the same certificate, answering by itself)
that logs `$ssl_session_reused`; the result records how many of those handshakes were resumed (0
expected) and what they negotiated.
"""

from __future__ import annotations

from collections import Counter

from loadtest import configs, harness
from loadtest.harness import Load
from loadtest.scenario import Result, Scenario, Stage, compare

PROBE_LOG = "$ssl_session_reused $ssl_server_name $ssl_protocol $ssl_cipher $ssl_curve"  # "r" = resumed


def probe(scenario: Scenario, st: Stage, opts: harness.Options) -> Result:
    """Full handshakes or not: the scenario's wrk load for 1 s against an nginx that logs each one."""
    assert st.tls is not None, f"{scenario.name} is not a TLS scenario"
    port = harness.free_port()
    log = st.tmp / "probe.log"
    body = (configs.nginx_tls(st.tls) + f"  log_format probe '{PROBE_LOG}';\n"
            f"  server {{ listen 127.0.0.1:{port} ssl; access_log {log} probe;\n"
            '    location / { return 200 "ok\\n"; } }')
    conf = harness.nginx_conf(st.tmp, "probe", body)
    server = harness.Server("probe", ["nginx", "-c", str(conf)], port, harness.PROXY_CPU, https_port=port)
    st.servers.append(server)
    try:
        harness.run_wrk(port, 1.0, scenario.load, st.tmp)
    finally:
        server.stop()
        st.servers.remove(server)
    lines = [line.split(" ", 1) for line in log.read_text().splitlines() if " " in line]
    resumed = sum(1 for reused, _ in lines if reused == "r")
    negotiated = Counter(rest for _, rest in lines).most_common(1)
    facts: Result = {"probe handshakes": len(lines), "probe resumed handshakes": resumed,
                     "probe SNI, protocol, cipher, group": negotiated[0][0] if negotiated else "-"}
    if resumed or not lines:
        facts["warning"] = "wrk resumed TLS sessions or the probe saw none: these are not full-handshake figures"
    return facts


def run(scenario: Scenario, opts: harness.Options) -> Result:
    return compare(scenario, opts, probe)


SCENARIO = Scenario("tls-handshake", "HTTPS GET with Connection: close: a full TLS handshake per request "
                    "(no resumption), ~100 B responses, 64 connections",
                    load=Load(headers=("Connection: close",), https_host=configs.TLS_HOST, resume_tls=False),
                    manifests=configs.tls_manifests, run=run)
