"""loadtest/configs.py: manifests compile to the expected routes; nginx and haproxy route them as fastingress does.

The routing checks are pure: small evaluators of the generated nginx locations and haproxy rules
(written from each proxy's documented matching order) are compared, request by request, with
fastingress's own table lookup for the same manifests. When the nginx / haproxy binaries are present
the generated files are also checked by the binaries themselves (`nginx -t`, `haproxy -c`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from fastingress.settings import Settings
from fastingress.supervisor.offline import build_from_manifests
from fastingress.table.lookup import NO_ROUTE
from loadtest import configs, harness
from loadtest.configs import Route

PORT = 18080
ENDPOINT = (("127.0.0.1", PORT),)


def _write(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "manifests"
    directory.mkdir(exist_ok=True)
    (directory / "bench.yaml").write_text(text)
    return directory


def _service(name: str, port: int) -> str:
    return ("apiVersion: v1\nkind: Service\n"
            f"metadata: {{name: {name}, annotations: {{fastingress.io/endpoints: '127.0.0.1'}}}}\n"
            f"spec: {{ports: [{{port: 80, targetPort: {port}}}]}}\n---\n")


def _backend(name: str) -> str:
    return f"{{service: {{name: {name}, port: {{number: 80}}}}}}"


# every kind of rule the renderers handle: exact, wildcard and catch-all hosts; Exact and Prefix on the
# same path; an Exact with a trailing "/"; the root as Exact and as Prefix; a global default backend
TRICKY = "".join(_service(f"s{i}", 18100 + i) for i in range(4)) + f"""\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: tricky}}
spec:
  ingressClassName: fastingress
  rules:
  - host: a.example
    http:
      paths:
      - {{path: /p1, pathType: Prefix, backend: {_backend("s0")}}}
      - {{path: /p1/x, pathType: Prefix, backend: {_backend("s1")}}}
      - {{path: /p1/x, pathType: Exact, backend: {_backend("s2")}}}
      - {{path: /p10, pathType: Exact, backend: {_backend("s3")}}}
      - {{path: /q/, pathType: Exact, backend: {_backend("s1")}}}
      - {{path: /, pathType: Exact, backend: {_backend("s2")}}}
  - host: "*.w.example"
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {_backend("s1")}}}
      - {{path: /z, pathType: Prefix, backend: {_backend("s3")}}}
  - host: b.w.example
    http:
      paths:
      - {{path: /z, pathType: Prefix, backend: {_backend("s0")}}}
  - http:
      paths:
      - {{path: /c, pathType: Prefix, backend: {_backend("s2")}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: fallback}}
spec: {{ingressClassName: fastingress, defaultBackend: {_backend("s3")}}}
"""
PROBE_HOSTS = ["a.example", "x.w.example", "b.w.example", "a.b.w.example", "w.example", "other.example", ""]
PROBE_PATHS = ["/", "/p1", "/p1/", "/p1/x", "/p1/x/", "/p1/xy", "/p10", "/p10/", "/p100", "/q", "/q/", "/q/r",
               "/z", "/z/1", "/zz", "/c", "/c/d", "/cd", "/nothing"]


def _fastingress(manifests: Path) -> dict[tuple[str, str], str]:
    """What fastingress answers for every probe: the backend port, "404" or "503"."""
    view = build_from_manifests(manifests, Settings()).view
    out = {}
    for host in PROBE_HOSTS:
        for path in PROBE_PATHS:
            index = view.routes.match(host.encode(), path.encode())
            endpoints = view.target(index).endpoints if index != NO_ROUTE else None
            out[host, path] = "404" if endpoints is None else str(endpoints[0][1]) if endpoints else "503"
    return out


# --- compiled routes -------------------------------------------------------------------------------

def test_many_routes_compile_to_one_route_per_host_and_path(tmp_path: Path) -> None:
    routes = configs.compiled_routes(_write(tmp_path, configs.many_routes_manifests(3, 2, PORT)))
    assert sorted((r.host, r.path) for r in routes) == [
        (f"h{i}.bench.example", f"/p{j}") for i in range(3) for j in range(2)]
    assert all(not r.exact and r.endpoints == ENDPOINT for r in routes)


def test_simple_manifests_are_one_catch_all_default_backend(tmp_path: Path) -> None:
    routes = configs.compiled_routes(_write(tmp_path, configs.simple_manifests(PORT)))
    assert routes == [Route("", "/", False, ENDPOINT)]


def test_routes_come_in_precedence_order_with_defaults_as_root_prefixes(tmp_path: Path) -> None:
    routes = configs.compiled_routes(_write(tmp_path, TRICKY))
    a = [(r.path, r.exact, r.endpoints[0][1]) for r in routes if r.host == "a.example"]
    assert a == [("/p1/x", True, 18102), ("/p1/x", False, 18101), ("/p10", True, 18103), ("/q/", True, 18101),
                 ("/p1", False, 18100), ("/", True, 18102), ("/", False, 18103)]  # the last: global default
    assert [(r.path, r.exact) for r in routes if r.host == ""] == [("/c", False), ("/", False)]


def test_a_manifest_problem_is_an_error(tmp_path: Path) -> None:
    broken = configs.many_routes_manifests(1, 1, PORT).replace("{name: be, annotations", "{name: other, annotations")
    with pytest.raises(ValueError, match="ServiceNotFound"):
        configs.compiled_routes(_write(tmp_path, broken))


# --- nginx -----------------------------------------------------------------------------------------

def test_nginx_prefix_is_an_exact_and_a_slash_location_with_keepalive_upstream() -> None:
    routes = [Route(f"h{i}.bench.example", f"/p{j}", False, ENDPOINT) for i in range(3) for j in range(2)]
    block = configs.nginx_http_block(routes, 8000)
    assert block.count("upstream u0 { server 127.0.0.1:18080; keepalive 64; }") == 1
    assert block.count("upstream ") == 1
    servers = block.split("  server {")[1:]
    assert "listen 127.0.0.1:8000 default_server; server_name _;" in servers[0]  # unknown hosts: 404
    assert "location / { return 404; }" in servers[0]
    proxy = ('proxy_pass http://u0; proxy_http_version 1.1; proxy_set_header Connection ""; '
             "proxy_set_header Host $host; proxy_request_buffering off; client_max_body_size 0;")
    for i, server in enumerate(servers[1:]):
        assert f"server_name h{i}.bench.example;" in server and "keepalive_requests 1000000;" in server
        for j in range(2):
            assert f"location = /p{j} {{ {proxy} }}" in server
            assert f"location /p{j}/ {{ {proxy} }}" in server
        assert f"location /p{j} " not in server  # a byte prefix would also take /p10
        assert "location / { return 404; }" in server


def _nginx_eval(block: str, host: str, path: str) -> str:
    """nginx's choice: server by exact name, then regex, then default_server; `=` location, then longest prefix."""
    upstreams = {m[1]: m[2] for m in re.finditer(r"upstream (\w+) \{ server [\d.]+:(\d+);", block)}
    servers: list[tuple[str, bool, dict[str, str], dict[str, str]]] = []
    for chunk in block.split("  server {")[1:]:
        head = re.match(r" listen \S+( default_server)?; server_name (\S+);", chunk)
        assert head is not None
        exact: dict[str, str] = {}
        prefix: dict[str, str] = {}
        for m in re.finditer(r"location (= )?(\S+) \{ ([^}]*) \}", chunk):
            (exact if m[1] else prefix)[m[2]] = m[3]
        servers.append((head[2].strip('"').replace("\\\\", "\\"), bool(head[1]), exact, prefix))
    server = (next((s for s in servers if s[0] == host), None)
              or next((s for s in servers if s[0].startswith("~") and re.search(s[0][1:], host)), None)
              or next(s for s in servers if s[1]))
    _, _, exact, prefix = server
    action = exact.get(path) or prefix[max((p for p in prefix if path.startswith(p)), key=len)]
    if action.startswith("return"):
        return action.split()[1].rstrip(";")
    return upstreams[re.match(r"proxy_pass http://(\w+);", action)[1]]  # type: ignore[index]


def test_nginx_routes_every_probe_like_fastingress(tmp_path: Path) -> None:
    manifests = _write(tmp_path, TRICKY)
    block = configs.nginx_http_block(configs.compiled_routes(manifests), 8000)
    expected = _fastingress(manifests)
    assert {probe: _nginx_eval(block, *probe) for probe in expected} == expected
    # nginx would answer /q with a 301 to /q/ (an `= /q/` location proxies): /q gets its own route
    assert "location = /q { " in block


# --- haproxy ---------------------------------------------------------------------------------------

def _haproxy_eval(cfg: str, host: str, path: str) -> str:
    """haproxy's choice for the generated frontend: the key, its bucket, then `use_backend` rules in order."""
    acls: dict[str, tuple[str, set[str]]] = {}
    for m in re.finditer(r"^  acl (\S+) (.+?) -m (str|beg) (.+)$", cfg, re.M):
        patterns = {re.sub(r"\\(.)", r"\1", p) for p in re.split(r"(?<!\\) ", m[4])}
        acls.setdefault(m[1], (m[3], set()))[1].update(patterns)
    vh: str | None = host
    if "vh_named" in acls or "vh_wild" in acls:
        wildcard = re.sub(r"^[^.]+", "*", host) if host else ""
        vh = host if host in acls.get("vh_named", ("", set()))[1] else \
            wildcard if wildcard in acls.get("vh_wild", ("", set()))[1] else None
    key = (vh or "") + path + "/"
    buckets = re.search(r"crc32,mod\((\d+)\)", cfg)
    bucket = zlib.crc32(vh.encode()) % int(buckets[1]) if buckets and vh is not None else 0
    backend = re.search(r"default_backend (\S+)", cfg)[1]  # type: ignore[index]
    for m in re.finditer(r"^  use_backend (\S+) if (?:\{ var\(txn\.bucket\) -m int (\d+) \} )?(\S+)$", cfg, re.M):
        method, patterns = acls[m[3]]
        if (m[2] is None or int(m[2]) == bucket) and (
                key in patterns if method == "str" else any(key.startswith(p) for p in patterns)):
            backend = m[1]
            break
    if backend == "not_found":
        return "404"
    servers = re.search(rf"^backend {backend}\n(?:  server \S+ [\d.]+:(\d+))?", cfg, re.M)
    assert servers is not None
    return servers[1] or "503"


@pytest.mark.parametrize("buckets", [None, 1, 3])
def test_haproxy_routes_every_probe_like_fastingress(tmp_path: Path, buckets: int | None) -> None:
    manifests = _write(tmp_path, TRICKY)
    cfg = configs.haproxy_config(configs.compiled_routes(manifests), 8000, buckets)
    expected = _fastingress(manifests)
    assert {probe: _haproxy_eval(cfg, *probe) for probe in expected} == expected


def test_haproxy_orders_exact_before_prefix_and_longer_before_shorter() -> None:
    e = [(("127.0.0.1", 9000 + i),) for i in range(4)]
    routes = [Route("h", "/a/b", True, e[0]), Route("h", "/a/b", False, e[1]), Route("h", "/a", False, e[2]),
              Route("h", "/", False, e[3])]
    cfg = configs.haproxy_config(routes, 8000)
    acl = dict(re.findall(r"^  acl (\S+) var\(txn\.key\) (-m \S+ \S+)$", cfg, re.M))
    rules = re.findall(r"^  use_backend (\S+) if (\S+)$", cfg, re.M)
    assert [(backend, acl[name]) for backend, name in rules] == [
        ("b0", "-m str h/a/b/"), ("b1", "-m beg h/a/b/"), ("b2", "-m beg h/a/"), ("b3", "-m beg h/")]
    assert "default_backend not_found" in cfg and "backend not_found\n  http-request return status 404" in cfg
    assert "http-reuse always" in cfg and "nbthread 1" in cfg and "maxconn 4096" in cfg


def test_haproxy_simple_is_a_default_backend_without_acls() -> None:
    cfg = configs.haproxy_config([Route("", "/", False, ENDPOINT)], 8000)
    assert " acl " not in cfg and "use_backend" not in cfg
    assert "default_backend b0" in cfg and "backend b0\n  server s0 127.0.0.1:18080" in cfg


# --- scale and the real binaries ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Route], float]:
    started = time.perf_counter()
    text = configs.many_routes_manifests(1000, 10, PORT)
    routes = configs.compiled_routes(_write(tmp_path_factory.mktemp("many"), text))
    configs.nginx_http_block(routes, 8000)
    configs.haproxy_config(routes, 8000)
    return routes, time.perf_counter() - started


def test_ten_thousand_routes_compile_and_render_quickly(many: tuple[list[Route], float]) -> None:
    routes, elapsed = many
    assert len(routes) == 10_000 and len({r.host for r in routes}) == 1000
    assert elapsed < 15, f"1,000 x 10 routes took {elapsed:.1f} s"
    cfg = configs.haproxy_config(routes, 8000)
    assert re.search(r"crc32,mod\((\d+)\)", cfg)[1] == "17"  # type: ignore[index]
    assert max(len(line.split()) for line in cfg.splitlines()) <= 64  # haproxy's words-per-line limit


def _nginx_main(tmp_path: Path, block: str) -> Path:
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
                    f"  proxy_temp_path {tmp_path}/proxy;\n{block}\n}}\n")
    return conf


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
@pytest.mark.parametrize("case", ["tricky", "many"])
def test_nginx_accepts_the_block(tmp_path: Path, case: str, many: tuple[list[Route], float]) -> None:
    routes = many[0] if case == "many" else configs.compiled_routes(_write(tmp_path, TRICKY))
    conf = _nginx_main(tmp_path, configs.nginx_http_block(routes, 8000))
    result = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize("case", ["tricky", "many"])
def test_haproxy_accepts_the_config(tmp_path: Path, case: str, many: tuple[list[Route], float]) -> None:
    routes = many[0] if case == "many" else configs.compiled_routes(_write(tmp_path, TRICKY))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(configs.haproxy_config(routes, 8000))
    result = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout + result.stderr


# --- the shared backend -----------------------------------------------------------------------------

@pytest.mark.parametrize("unique", [False, True])
def test_the_backend_stamps_a_unique_id_on_every_head_only_when_asked(tmp_path: Path, unique: bool) -> None:
    body = harness.backend_body(tmp_path, [8001, 8002], unique_heads=unique)
    assert ("add_header X-Response-Id $request_id;" in body) is unique  # small-unique: no head repeats
    assert "listen 127.0.0.1:8001; listen 127.0.0.1:8002;" in body
    if shutil.which("nginx") is not None:
        conf = _nginx_main(tmp_path, body)
        result = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c",
                                 str(conf)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
