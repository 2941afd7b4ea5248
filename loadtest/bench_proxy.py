"""fastingress vs nginx (and haproxy) as reverse proxies, same machine, same run: `python -m loadtest.bench_proxy`.

One shared backend (nginx serving a cached file, its own worker), then in turn fastingress (`fastingress
serve` with one worker), nginx (one worker, `proxy_http_version 1.1`, upstream keepalive), haproxy
(`nbthread 1`, `http-reuse always`) and a naive aiohttp proxy (loadtest/naive_aiohttp_proxy.py) in
front of it, each driven by wrk over 64 keep-alive connections:
A B C A B C ... for `--rounds` rounds, medians reported. The proxy under test is pinned to CPU 0,
wrk and the backend to CPU 1 (`taskset`), as the data-plane issue asks. CPU time of each proxy
process (from /proc) gives requests per CPU-second as well.

Scenarios: `small` (~100-byte responses) and `16k` (16 KiB responses). Needs nginx, haproxy and wrk
(Debian: `apt-get install nginx-light haproxy wrk`); says what is missing and exits 2 otherwise.
Everything it starts listens on 127.0.0.1 and is stopped by PID when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BODY_SMALL = b"x" * 100
SCENARIOS = {"small": 100, "16k": 16 * 1024}
PROXY_CPU, LOAD_CPU = "0", "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (and their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


class Server:
    """A process we started, stopped by PID."""

    def __init__(self, name: str, argv: list[str], port: int, cpu: str, env: dict[str, str] | None = None) -> None:
        self.name, self.port = name, port
        self.proc = subprocess.Popen(["taskset", "-c", cpu, *argv], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env)
        wait_port(port)

    def pids(self) -> list[int]:
        """The processes doing the work: the workers (children), else the process itself."""
        kids = children(self.proc.pid)
        return kids or [self.proc.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def nginx_conf(tmp: Path, name: str, body: str) -> Path:
    conf = tmp / f"{name}.conf"
    conf.write_text(f"worker_processes 1;\ndaemon off;\npid {tmp}/{name}.pid;\nerror_log {tmp}/{name}.err;\n"
                    f"events {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n{body}\n}}\n")
    return conf


def start_backend(tmp: Path, size: int) -> Server:
    port = free_port()
    (tmp / "body").write_bytes(b"x" * size)
    os.chmod(tmp, 0o755)  # nginx's workers run as an unprivileged user and must read the body file
    os.chmod(tmp / "body", 0o644)
    # the backend must not be the bottleneck: the file is cached open and sent with sendfile
    body = ("  open_file_cache max=16 inactive=1h;\n  open_file_cache_valid 1h;\n  sendfile on;\n"
            f"  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;\n"
            f"    location / {{ root {tmp}; try_files /body =404; default_type text/plain; }} }}")
    return Server("backend", ["nginx", "-c", str(nginx_conf(tmp, "backend", body))], port, LOAD_CPU)


def start_nginx(tmp: Path, backend: int) -> Server:
    port = free_port()
    body = (f"  upstream be {{ server 127.0.0.1:{backend}; keepalive 64; }}\n"
            f"  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;\n"
            f"    location / {{ proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}")
    return Server("nginx", ["nginx", "-c", str(nginx_conf(tmp, "proxy", body))], port, PROXY_CPU)


def start_haproxy(tmp: Path, backend: int) -> Server:
    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(f"global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n"
                   f"  timeout client 60s\n  timeout server 60s\n  http-reuse always\n"
                   f"frontend fe\n  bind 127.0.0.1:{port}\n  default_backend be\n"
                   f"backend be\n  server s1 127.0.0.1:{backend}\n")
    return Server("haproxy", ["haproxy", "-f", str(cfg)], port, PROXY_CPU)


def start_fastingress(tmp: Path, backend: int, python: str = sys.executable) -> Server:
    port = free_port()
    manifests = tmp / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "bench.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: be, annotations: {fastingress.io/endpoints: '127.0.0.1'}}\n"
        f"spec: {{ports: [{{port: 80, targetPort: {backend}}}]}}\n---\n"
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: be}\n"
        "spec: {ingressClassName: fastingress, defaultBackend: {service: {name: be, port: {number: 80}}}}\n")
    env = {**os.environ, "FASTINGRESS_ACCESS_LOG": "false", "FASTINGRESS_LOG_LEVEL": "WARNING",
           "FASTINGRESS_LIMIT_REQUESTS_PER_CONNECTION": "1000000000"}
    argv = [python, "-m", "fastingress", "serve", "--manifests", str(manifests), "--http-port", str(port),
            "--https-port", "0", "--admin-port", "0", "--workers", "1"]
    return Server("fastingress", argv, port, PROXY_CPU, env)


def start_aiohttp(tmp: Path, backend: int, python: str = sys.executable) -> Server:
    port = free_port()
    argv = [python, "-m", "loadtest.naive_aiohttp_proxy", "--port", str(port),
            "--backend", f"http://127.0.0.1:{backend}"]
    return Server("aiohttp", argv, port, PROXY_CPU)


def run_wrk(port: int, seconds: float, connections: int) -> dict[str, float]:
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
            f"http://127.0.0.1:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
            "errors": float(non2xx.group(1)) if non2xx else 0.0}


def measure(server: Server, seconds: float, connections: int) -> dict[str, float]:
    run_wrk(server.port, 1.0, connections)  # warm up: pools, caches
    pids = server.pids()
    before = cpu_seconds(pids)
    result = run_wrk(server.port, seconds, connections)
    result["cpu_s"] = cpu_seconds(pids) - before
    result["rps_per_cpu_s"] = result["rps"] * seconds / result["cpu_s"] if result["cpu_s"] else float("nan")
    return result


def fastingress_python(python: str) -> str:
    """Version and build flags of the interpreter running fastingress (PGO/LTO builds are much faster)."""
    code = "import sys, sysconfig; print(sys.version.split()[0], sysconfig.get_config_var('CONFIG_ARGS'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=30).stdout.strip()


def missing_tools() -> list[str]:
    return [tool for tool in ("nginx", "haproxy", "wrk", "taskset") if shutil.which(tool) is None]


def bench(scenario: str, rounds: int, seconds: float, connections: int, python: str = sys.executable) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {"fastingress": [], "nginx": [], "haproxy": [], "aiohttp": []}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        servers: list[Server] = []
        try:
            servers.append(start_backend(tmp, SCENARIOS[scenario]))
            backend = servers[0].port
            servers += [start_fastingress(tmp, backend, python), start_nginx(tmp, backend), start_haproxy(tmp, backend),
                        start_aiohttp(tmp, backend, python)]
            for _ in range(rounds):
                for server in servers[1:]:
                    results[server.name].append(measure(server, seconds, connections))
        finally:
            for server in servers:
                server.stop()
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
    return {"scenario": scenario, "rounds": results, "median": med,
            "ratio_rps_vs_nginx": med["fastingress"]["rps"] / med["nginx"]["rps"],
            "ratio_rps_vs_haproxy": med["fastingress"]["rps"] / med["haproxy"]["rps"],
            "ratio_p99_vs_nginx": med["fastingress"]["p99_ms"] / med["nginx"]["p99_ms"],
            "ratio_rps_vs_naive_aiohttp": med["fastingress"]["rps"] / med["aiohttp"]["rps"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", help="write every round to this file")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that runs fastingress and the aiohttp baseline (default: this one); "
                        "see docs/performance.md")
    args = parser.parse_args()
    missing = missing_tools()
    if missing:
        print(f"missing: {', '.join(missing)}; install with: apt-get install nginx-light haproxy wrk util-linux",
              file=sys.stderr)
        return 2
    out = []
    for scenario in (SCENARIOS if args.scenario == "all" else [args.scenario]):
        res = bench(scenario, args.rounds, args.seconds, args.connections, args.python)
        out.append(res)
        med = res["median"]
        print(f"## {scenario}: fastingress/nginx {res['ratio_rps_vs_nginx']:.2f}x, "
              f"fastingress/haproxy {res['ratio_rps_vs_haproxy']:.2f}x, p99 vs nginx {res['ratio_p99_vs_nginx']:.2f}x, "
              f"fastingress/naive aiohttp {res['ratio_rps_vs_naive_aiohttp']:.2f}x")
        for name, m in med.items():
            print(f"  {name:<12} {m['rps']:>9.0f} req/s  p99 {m['p99_ms']:6.2f} ms  "
                  f"{m['rps_per_cpu_s']:>9.0f} req/CPU-s  errors {m['errors']:.0f}")
    if args.json:
        uname = dict(zip(("sysname", "nodename", "release", "version", "machine"), os.uname(), strict=True))
        Path(args.json).write_text(json.dumps({
            "machine": uname, "cpus": os.cpu_count(), "python": sys.version,
            "fastingress_python": fastingress_python(args.python), "results": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
