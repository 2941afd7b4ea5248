"""The processes and measurements behind `python -m loadtest`: servers we start and stop by PID, wrk runs,
CPU time from /proc, and the interleaved comparison every throughput scenario uses.

One shared backend (nginx: a cached file for GET, `200 ok` for POST, its own worker), then fastingress
(`fastingress serve --manifests`), nginx (`proxy_http_version 1.1`, upstream keepalive) and haproxy
(`nbthread 1`, `http-reuse always`), all configured from the same manifests (loadtest/configs.py), and,
where a scenario asks, a naive aiohttp proxy (loadtest/naive_aiohttp_proxy.py). Each is driven by wrk in
turn, A B C A B C ... for `rounds` rounds. The proxy under test is pinned to CPU 0, wrk and the backend
to CPU 1 (`taskset`). Everything listens on 127.0.0.1.

Two estimates per server come out of the rounds: `medians` and `best`, the mean of its BEST_ROUNDS
fastest rounds. On a shared machine interference only ever slows a server down, so its fastest rounds
estimate its undisturbed speed (the reasoning behind `timeit` reporting a minimum), while a median moves
as soon as a slow spell covers half of one server's rounds. After the planned rounds, a server whose
fastest rounds still disagree (`is_settled`) gets extra rounds, at most as many again as were planned.

TLS scenarios: the three proxies terminate HTTPS with the run's certificate (loadtest/tls.py) and wrk
drives `https://<host>:<port>/`, so that it sends the route's host as SNI and Host; a Lua `wrk.resolve`
makes it connect to 127.0.0.1 all the same (no /etc/hosts entry). wrk resumes TLS sessions when it
reconnects (loadtest/wrk_noresume.c says how); a load with `resume_tls=False` preloads that file,
built with the C compiler, so that every connection is a full handshake.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest import configs
from loadtest.machine import DISTURBED_BELOW, MAX_ATTEMPTS, RETRY_PAUSE_S, SpeedProbe
from loadtest.tls import TLSFiles

PROXY_CPU, LOAD_CPU, ANY_CPU = "0", "1", "0,1"
TOOLS = ("nginx", "haproxy", "wrk", "taskset")
INSTALL = "apt-get install nginx-light haproxy wrk util-linux gcc"
NORESUME_C = Path(__file__).resolve().parent / "wrk_noresume.c"
# wrk resolves the URL's host before it connects: the TLS scenarios' host resolves to 127.0.0.1 instead
_RESOLVE_LOCAL = 'wrk.resolve = function(host, service) wrk.addrs = wrk.lookup("127.0.0.1", service) end\n'
METRICS = ("rps", "p50_ms", "p90_ms", "p99_ms", "errors", "cpu_s", "rps_per_cpu_s")
# 2: the fewest rounds that can confirm each other; with 15 planned rounds a slow spell must cover all
# but one of a server's rounds to move its best two
BEST_ROUNDS = 2
# a server's BEST_ROUNDS fastest rounds within 5% of each other: half the 10% two runs must agree within,
# and above calm rounds' own spread (about 2%): in full runs J-M, 100 of 108 proxy/scenario pairs were
# settled after their 15 rounds
SETTLED_WITHIN = 0.05
EXTRA_ROUND = "extra_round"  # marks a round measured after the planned ones: a flag, not a metric

Round = dict[str, float]
Rounds = dict[str, list[Round]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float = 30.0) -> None:
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
    """A process we started, stopped by PID: `port` accepts once it is up; HTTPS on `https_port` if not None."""

    def __init__(self, name: str, argv: list[str], port: int, cpu: str, env: dict[str, str] | None = None,
                 https_port: int | None = None, stderr: Path | None = None) -> None:
        self.name, self.port, self.https_port = name, port, https_port
        with open(stderr or os.devnull, "ab") as err:  # stderr: a file for the process's log (the child keeps it)
            self.proc = subprocess.Popen(["taskset", "-c", cpu, *argv], stdout=subprocess.DEVNULL,
                                         stderr=err, env=env)
        try:
            wait_port(port)
            if https_port is not None:
                wait_port(https_port)
        except RuntimeError:
            self.stop()
            raise

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


def backend_body(tmp: Path, listen: list[int], unique_heads: bool = False) -> str:
    """The backend's nginx `http` block body: GET serves the file `tmp`/body, POST answers `200 ok`.

    `unique_heads`: every response head carries its own `X-Response-Id` (nginx's `$request_id`), so no two
    heads are alike, as for backends whose heads never repeat (the worst case of the proxy's memo of heads).
    """
    listens = "".join(f" listen 127.0.0.1:{p};" for p in listen)
    # the backend must not be the bottleneck: the file is cached open and sent with sendfile
    return ("  open_file_cache max=16 inactive=1h;\n  open_file_cache_valid 1h;\n  sendfile on;\n"
            f"  server {{{listens} keepalive_requests 1000000; client_max_body_size 0;\n"
            f"    location / {{ if ($request_method = POST) {{ return 200 \"ok\\n\"; }}\n"
            f"      root {tmp}; try_files /body =404; default_type text/plain;"
            f"{' add_header X-Response-Id $request_id;' if unique_heads else ''} }} }}")


def start_backend(tmp: Path, size: int, ports: int = 1, unique_heads: bool = False) -> tuple[Server, list[int]]:
    """nginx answering GET with a cached `size`-byte file and POST (uploads) with `200 ok` (backend_body)."""
    listen = [free_port() for _ in range(ports)]
    (tmp / "body").write_bytes(b"x" * size)
    os.chmod(tmp, 0o755)  # nginx's workers run as an unprivileged user and must read the body file
    os.chmod(tmp / "body", 0o644)
    body = backend_body(tmp, listen, unique_heads)
    return Server("backend", ["nginx", "-c", str(nginx_conf(tmp, "backend", body))], listen[0], LOAD_CPU), listen


def start_nginx(tmp: Path, routes: list[configs.Route], tls: TLSFiles | None = None) -> Server:
    """nginx in front of the backend; with `tls` it listens for HTTPS only."""
    port = free_port()
    conf = nginx_conf(tmp, "proxy", configs.nginx_http_block(routes, port, tls))
    return Server("nginx", ["nginx", "-c", str(conf)], port, PROXY_CPU, https_port=port if tls else None)


def start_haproxy(tmp: Path, routes: list[configs.Route], tls: TLSFiles | None = None) -> Server:
    """haproxy in front of the backend; with `tls` it listens for HTTPS only."""
    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(configs.haproxy_config(routes, port, tls=tls))
    return Server("haproxy", ["haproxy", "-f", str(cfg)], port, PROXY_CPU, https_port=port if tls else None)


def start_fastingress(manifests: Path | None, python: str, workers: int = 1, name: str = "fastingress",
                      cpu: str = PROXY_CPU, https_host: str = "", env: dict[str, str] | None = None,
                      log: Path | None = None) -> Server:
    """`fastingress serve --manifests`; with `https_host`, HTTPS on a port of ours, checked with that SNI.

    `manifests` None: the Kubernetes source, on the cluster `env` points KUBECONFIG at (loadtest/kube.py).
    `env` is added to (and overrides) the harness's environment; `log`: a file for the JSON log (stderr).
    """
    port = free_port()
    https_port = free_port() if https_host else 0  # 0: a port of fastingress's choice, never measured
    full_env = {**os.environ, "FASTINGRESS_ACCESS_LOG": "false", "FASTINGRESS_LOG_LEVEL": "WARNING",
                "FASTINGRESS_LIMIT_REQUESTS_PER_CONNECTION": "1000000000", "FASTINGRESS_MANIFESTS_POLL_S": "0.05",
                "FASTINGRESS_BIND_ADDRESS": "127.0.0.1", "FASTINGRESS_ADMIN_ADDRESS": "127.0.0.1", **(env or {})}
    source = ["--manifests", str(manifests)] if manifests is not None else []
    argv = [python, "-m", "fastingress", "serve", *source, "--http-port", str(port),
            "--https-port", str(https_port), "--admin-port", "0", "--workers", str(workers)]
    server = Server(name, argv, port, cpu, full_env, https_port or None, stderr=log)
    try:
        wait_serving(port)
        if https_host:
            wait_serving(https_port, tls_host=https_host)
    except RuntimeError:
        server.stop()
        raise
    return server


def wait_serving(port: int, timeout_s: float = 30.0, tls_host: str = "") -> None:
    """The port accepts before the first table is published: wait for an answer other than 503."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if http_status(port, "/", tls_host, tls_host=tls_host) not in (0, 503):
            return
        time.sleep(0.05)
    raise RuntimeError(f"fastingress on {port} never served a table" + (" over HTTPS" if tls_host else ""))


def http_status(port: int, path: str, host: str, timeout_s: float = 2.0, tls_host: str = "") -> int:
    """One GET on a fresh connection (over TLS with SNI `tls_host` when given); its status, 0 when there is none."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host or 'localhost'}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as raw, \
                (_insecure_client().wrap_socket(raw, server_hostname=tls_host) if tls_host else raw) as s:
            s.sendall(request)
            head = s.recv(64)
    except OSError:
        return 0
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(match.group(1)) if match else 0


def _insecure_client() -> ssl.SSLContext:
    """A client context that takes any certificate: the run's own is self-signed, as wrk does not check either."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def start_aiohttp(backend: int, python: str) -> Server:
    port = free_port()
    argv = [python, "-m", "loadtest.naive_aiohttp_proxy", "--port", str(port), "--backend",
            f"http://127.0.0.1:{backend}"]
    return Server("aiohttp", argv, port, PROXY_CPU)


@dataclass
class Load:
    """What wrk sends: connections, extra headers, an optional Lua script (POST bodies, many hosts), and how."""

    connections: int = 64
    headers: tuple[str, ...] = ()
    script: str | None = None
    path: str = "/"
    https_host: str = ""  # "": plain HTTP; a name: HTTPS to the servers' https_port, this name as SNI and Host
    resume_tls: bool = True  # False: every TLS connection wrk opens is a full handshake (wrk_noresume.c)


def noresume_library(tmp: Path) -> Path:
    """loadtest/wrk_noresume.c built into `tmp` with the C compiler (once per directory)."""
    lib = tmp / "wrk_noresume.so"
    if not lib.exists():
        cc = shutil.which("cc") or "cc"
        done = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(NORESUME_C), "-ldl"],
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"cannot build {NORESUME_C.name}: {done.stderr[-500:]}")
    return lib


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(port: int, seconds: float, load: Load, tmp: Path) -> dict[str, float]:
    argv = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{load.connections}", f"-d{max(1, round(seconds))}s",
            "--latency"]
    for header in load.headers:
        argv += ["-H", header]
    text = (_RESOLVE_LOCAL if load.https_host else "") + (load.script or "")
    if text:
        script = tmp / "load.lua"
        script.write_text(text)
        argv += ["-s", str(script)]
    env = None
    if load.https_host:
        # wrk's Host header is then "<host>:<port>", as a browser's on a port other than 443
        argv.append(f"https://{load.https_host}:{port}{load.path}")
        if not load.resume_tls:
            env = {**os.environ, "LD_PRELOAD": str(noresume_library(tmp))}
    else:
        argv.append(f"http://127.0.0.1:{port}{load.path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, env=env).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise RuntimeError(f"wrk gave no result: {out[-500:]}")
    result = {"rps": float(rps.group(1))}
    for pct in ("50", "90", "99"):
        m = re.search(rf"\b{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        result[f"p{pct}_ms"] = float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["errors"] = float((int(non2xx.group(1)) if non2xx else 0)
                             + (sum(int(g) for g in sock.groups()[1:]) if sock else 0))
    return result


def measure(server: Server, seconds: float, load: Load, tmp: Path, warmup_s: float = 1.0) -> dict[str, float]:
    port = server.https_port if load.https_host else server.port
    if port is None:
        raise RuntimeError(f"{server.name} does not serve HTTPS")
    run_wrk(port, warmup_s, load, tmp)  # warm up: pools, caches
    pids = server.pids()
    before = cpu_seconds(pids)
    result = run_wrk(port, seconds, load, tmp)
    result["cpu_s"] = cpu_seconds(pids) - before
    result["rps_per_cpu_s"] = result["rps"] * seconds / result["cpu_s"] if result["cpu_s"] else float("nan")
    return result


@dataclass
class Options:
    rounds: int = 3
    seconds: float = 5.0
    warmup_s: float = 1.0
    python: str = sys.executable
    quick: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _metrics_of(runs: list[Round]) -> list[str]:
    """The keys every round has, in the first round's order: only extra rounds carry EXTRA_ROUND."""
    return [k for k in runs[0] if k != EXTRA_ROUND and all(k in r for r in runs)]


def medians(rounds: Rounds) -> dict[str, Round]:
    """Per server, the median of every metric over all its rounds (extra rounds included)."""
    return {name: {k: statistics.median(r[k] for r in runs) for k in _metrics_of(runs)}
            for name, runs in rounds.items() if runs}


def fastest(runs: list[Round], k: int = BEST_ROUNDS) -> list[Round]:
    """The `k` rounds with the highest req/s, fastest first (all of them when there are fewer)."""
    return sorted(runs, key=lambda r: r["rps"], reverse=True)[:k]


def best(rounds: Rounds, k: int = BEST_ROUNDS) -> dict[str, Round]:
    """Per server, every metric averaged over its `k` fastest rounds, so p99 and the rest come from the
    rounds that gave the req/s; the same shape as `medians`."""
    out: dict[str, Round] = {}
    for name, runs in rounds.items():
        if runs:
            top = fastest(runs, k)
            out[name] = {key: statistics.fmean(r[key] for r in top) for key in _metrics_of(runs)}
    return out


def is_settled(runs: list[Round], k: int = BEST_ROUNDS, within: float = SETTLED_WITHIN) -> bool:
    """The `k` fastest rounds agree: the k-th is within `within` of the fastest (fewer than k rounds: no)."""
    if len(runs) < k:
        return False
    top = fastest(runs, k)
    return top[-1]["rps"] >= (1.0 - within) * top[0]["rps"]


def ratios(med: dict[str, Round], subject: str = "fastingress") -> dict[str, float]:
    out: dict[str, float] = {}
    if subject not in med:
        return out
    for other in med:
        if other != subject and med[other]["rps"]:
            out[f"{subject}/{other}"] = med[subject]["rps"] / med[other]["rps"]
            if med[other]["p99_ms"]:
                out[f"p99 {subject}/{other}"] = med[subject]["p99_ms"] / med[other]["p99_ms"]
    return out


def interleave(servers: list[Server], load: Load, opts: Options, tmp: Path,
               probe: SpeedProbe | None = None) -> Rounds:
    """A B C A B C ...: each server measured `opts.rounds` times in turn, then extra rounds for the servers
    not yet settled (`run_rounds`); a round measured while the machine ran slow is measured again
    (loadtest/machine.py). Not with --quick: neither extra rounds nor repeats."""
    probe = probe or SpeedProbe(cpu=int(PROXY_CPU))
    probe.calibrate()
    by_name = {s.name: s for s in servers}
    return run_rounds(list(by_name), lambda name: measure_steady(by_name[name], load, opts, tmp, probe),
                      opts.rounds, 0 if opts.quick else opts.rounds)


def run_rounds(names: list[str], measure_one: Callable[[str], Round], planned: int, max_extra: int) -> Rounds:
    """`planned` interleaved rounds of every server, then, while some server is not settled, one more
    round of each unsettled one (interleaved among them), up to `max_extra` per server; those rounds
    carry EXTRA_ROUND."""
    rounds: Rounds = {name: [] for name in names}
    for _ in range(planned):
        for name in names:
            rounds[name].append(measure_one(name))
    for extra in range(1, max_extra + 1):
        unsettled = [name for name in names if not is_settled(rounds[name])]
        if not unsettled:
            break
        print(f"   extra round {extra}/{max_extra} for {', '.join(unsettled)}: fastest {BEST_ROUNDS} rounds "
              f"not yet within {SETTLED_WITHIN:.0%}", file=sys.stderr, flush=True)
        for name in unsettled:
            rounds[name].append({**measure_one(name), EXTRA_ROUND: True})
    return rounds


def measure_steady(server: Server, load: Load, opts: Options, tmp: Path, probe: SpeedProbe) -> Round:
    """One round, repeated while the machine speed around it is below DISTURBED_BELOW of the best."""
    attempt = 1
    while True:
        before = probe.sample()
        result = measure(server, opts.seconds, load, tmp, opts.warmup_s)
        speed = probe.relative(min(before, probe.sample()))
        result["machine_speed"], result["attempts"] = round(speed, 3), attempt
        if speed >= DISTURBED_BELOW or attempt == MAX_ATTEMPTS or opts.quick:
            return result
        print(f"   {server.name}: machine at {speed:.0%} of its best speed; measuring the round again",
              file=sys.stderr, flush=True)
        time.sleep(RETRY_PAUSE_S)
        attempt += 1


def missing_tools(extra: Iterable[str] = ()) -> list[str]:
    """The tools every run needs, and the `extra` ones of the scenarios chosen, that are not on PATH."""
    return [tool for tool in dict.fromkeys([*TOOLS, *extra]) if shutil.which(tool) is None]


def versions(python: str) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except OSError:
            return "-"
        return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else "-"

    code = "import sys; print(sys.version.split()[0], sys.executable)"
    return {"python": sys.version.split()[0], "fastingress_python": first_line([python, "-c", code]),
            "nginx": first_line(["nginx", "-v"]), "haproxy": first_line(["haproxy", "-v"]),
            "wrk": first_line(["wrk", "-v"])}
