"""The TLS scenarios' pieces: the run's certificate and Secret, the HTTPS nginx and haproxy configurations.

Pure checks of the generated text (HTTPS listeners, one certificate, TLS 1.2 and 1.3, HSTS where
fastingress sends it, the routing left exactly as over plain HTTP), the manifests compiled by
fastingress's own compiler, and, when the binaries exist, `nginx -t` / `haproxy -c` on the generated
files and a build of wrk's no-resumption shim with the C compiler.
"""

from __future__ import annotations

import base64
import ctypes
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fastingress.settings import Settings
from fastingress.supervisor.offline import build_from_manifests
from loadtest import configs, harness, tls
from loadtest.configs import Route
from loadtest.scenarios import SCENARIOS

PORT = 18080
ENDPOINT = (("127.0.0.1", PORT),)
HOST = configs.TLS_HOST
HSTS = f"max-age={Settings().hsts_max_age_s}"


@pytest.fixture
def files(tmp_path: Path) -> tls.TLSFiles:
    return tls.write_certificate(tmp_path, HOST)


def _manifests(tmp_path: Path, files: tls.TLSFiles) -> Path:
    directory = tmp_path / "manifests"
    directory.mkdir()
    (directory / "bench.yaml").write_text(configs.tls_manifests(PORT))
    (directory / "tls-secret.yaml").write_text(tls.secret_manifest(configs.TLS_SECRET, files))
    return directory


# routes of two hosts, one of them covered by the certificate, plus a catch-all
ROUTES = [Route("", "/", False, ENDPOINT), Route("other.example", "/", False, ENDPOINT),
          Route(HOST, "/a", True, ENDPOINT), Route(HOST, "/", False, ENDPOINT)]


# --- the certificate and the manifests ---------------------------------------------------------------

def test_the_certificate_is_ecdsa_p256_for_the_host_and_every_file_holds_it(files: tls.TLSFiles) -> None:
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [HOST]
    assert files.bundle.read_bytes() == files.cert.read_bytes() + files.key.read_bytes()
    assert files.hosts == (HOST,)
    for path in (files.cert, files.key, files.bundle):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_secret_carries_the_same_certificate_and_key(files: tls.TLSFiles) -> None:
    secret = yaml.safe_load(tls.secret_manifest("s", files))
    assert secret["kind"] == "Secret" and secret["type"] == "kubernetes.io/tls" and secret["metadata"]["name"] == "s"
    assert base64.b64decode(secret["data"]["tls.crt"]) == files.cert.read_bytes()
    assert base64.b64decode(secret["data"]["tls.key"]) == files.key.read_bytes()


def test_tls_manifests_compile_to_the_host_route_served_with_the_run_certificate(
        tmp_path: Path, files: tls.TLSFiles) -> None:
    manifests = _manifests(tmp_path, files)
    assert configs.compiled_routes(manifests) == [Route(HOST, "/", False, ENDPOINT)]
    config = build_from_manifests(manifests, Settings()).config
    assert [entry.name for entry in config.sni] == [HOST]
    assert len(config.certs) == 1
    hsts = [r.hsts for vh in config.vhosts if vh.host == HOST for r in vh.routes]
    assert hsts == [True]  # fastingress's HSTS for the host, which nginx and haproxy copy


def test_only_the_tls_scenarios_are_tls_and_the_others_manifests_have_no_tls() -> None:
    tls_names = {name for name, s in SCENARIOS.items() if s.tls}
    assert tls_names == {"tls-keepalive", "tls-handshake"}
    for name, scenario in SCENARIOS.items():
        text = scenario.manifests(PORT)
        assert ("tls:" in text) == (name in tls_names), name
        assert ("secretName" in text) == (name in tls_names), name
        assert "kind: Secret" not in text, name  # the harness writes the Secret, from the run's certificate
    assert SCENARIOS["tls-handshake"].tools == ("cc",) and SCENARIOS["tls-keepalive"].tools == ()
    assert not SCENARIOS["tls-handshake"].load.resume_tls and SCENARIOS["tls-keepalive"].load.resume_tls
    assert SCENARIOS["tls-handshake"].load.headers == ("Connection: close",)
    assert {SCENARIOS[n].load.https_host for n in tls_names} == {HOST}
    assert list(SCENARIOS).index("tls-keepalive") == list(SCENARIOS).index("close") + 1


# --- nginx -------------------------------------------------------------------------------------------

def test_nginx_https_listens_with_ssl_only_and_one_certificate(files: tls.TLSFiles) -> None:
    block = configs.nginx_http_block(ROUTES, 8000, files)
    assert f"  ssl_certificate {files.cert};\n  ssl_certificate_key {files.key};\n" in block
    assert "  ssl_protocols TLSv1.2 TLSv1.3;\n" in block
    listens = re.findall(r"listen ([^;]+);", block)
    assert listens and all(listen.startswith("127.0.0.1:8000 ssl") for listen in listens)
    assert "ssl_session" not in block and "http2" not in block  # defaults; HTTP/1.1


def test_nginx_hsts_only_on_the_hosts_the_certificate_covers(files: tls.TLSFiles) -> None:
    block = configs.nginx_http_block(ROUTES, 8000, files)
    servers = {re.search(r"server_name (\S+);", chunk)[1]: chunk  # type: ignore[index]
               for chunk in block.split("  server {")[1:]}
    header = f'add_header Strict-Transport-Security "{HSTS}" always;'
    assert header in servers[HOST]
    assert header not in servers["other.example"] and header not in servers["_"]
    assert block.count("Strict-Transport-Security") == 1


def test_nginx_routing_is_the_same_as_over_plain_http(files: tls.TLSFiles) -> None:
    block = configs.nginx_http_block(ROUTES, 8000, files)
    plain = block.replace(configs.nginx_tls(files), "").replace(" ssl", "")
    plain = re.sub(r"    add_header Strict-Transport-Security [^\n]*\n", "", plain)
    assert plain == configs.nginx_http_block(ROUTES, 8000)
    assert "ssl" not in configs.nginx_http_block(ROUTES, 8000)


# --- haproxy -----------------------------------------------------------------------------------------

def test_haproxy_https_binds_with_the_bundle_and_tls12_minimum(files: tls.TLSFiles) -> None:
    cfg = configs.haproxy_config(ROUTES, 8000, tls=files)
    bind = f"  bind 127.0.0.1:8000 ssl crt {files.bundle} ssl-min-ver TLSv1.2"
    assert re.findall(r"^  bind .*$", cfg, re.M) == [bind]
    assert "alpn" not in cfg and "tune.ssl" not in cfg  # HTTP/1.1; session cache and tickets at defaults


def test_haproxy_hsts_only_on_the_virtual_hosts_the_certificate_covers(files: tls.TLSFiles) -> None:
    cfg = configs.haproxy_config(ROUTES, 8000, tls=files)
    assert re.findall(r"^  acl hsts (.*)$", cfg, re.M) == [f"var(txn.vh) -m str {HOST}"]
    assert f"  http-response set-header Strict-Transport-Security {HSTS} if hsts" in cfg
    # the acl reads the virtual host the request rules set before it
    assert cfg.index("set-var(txn.vh)") < cfg.index("acl hsts") < cfg.index("http-response")


def test_haproxy_wildcard_host_covered_by_a_wildcard_certificate(tmp_path: Path) -> None:
    wild = tls.TLSFiles(tmp_path / "c", tmp_path / "k", tmp_path / "b", ("*.w.example",))
    routes = [Route("*.w.example", "/", False, ENDPOINT), Route("x.w.example", "/", False, ENDPOINT),
              Route("w.example", "/", False, ENDPOINT)]
    cfg = configs.haproxy_config(routes, 8000, tls=wild)
    assert re.findall(r"^  acl hsts var\(txn\.vh\) -m str (.*)$", cfg, re.M) == [r"*.w.example x.w.example"]
    block = configs.nginx_http_block(routes, 8000, wild)
    assert block.count("Strict-Transport-Security") == 2


def test_haproxy_routing_is_the_same_as_over_plain_http(files: tls.TLSFiles) -> None:
    cfg = configs.haproxy_config(ROUTES, 8000, tls=files)
    plain = cfg.replace(f" ssl crt {files.bundle} ssl-min-ver TLSv1.2", "")
    plain = re.sub(r"^  (acl hsts|http-response set-header Strict-Transport-Security) [^\n]*\n", "", plain, flags=re.M)
    assert plain == configs.haproxy_config(ROUTES, 8000)
    assert "ssl" not in configs.haproxy_config(ROUTES, 8000) and "hsts" not in configs.haproxy_config(ROUTES, 8000)


# --- the real binaries -------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_https_block(tmp_path: Path, files: tls.TLSFiles) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
                    f"  proxy_temp_path {tmp_path}/proxy;\n{configs.nginx_http_block(ROUTES, 8000, files)}\n}}\n")
    result = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr, result.stderr


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_https_config(tmp_path: Path, files: tls.TLSFiles) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(configs.haproxy_config(ROUTES, 8000, tls=files))
    result = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_the_no_resumption_shim_builds_and_wraps_ssl_clear(tmp_path: Path) -> None:
    lib = harness.noresume_library(tmp_path)
    assert lib == tmp_path / "wrk_noresume.so" and harness.noresume_library(tmp_path) == lib  # built once
    loaded = ctypes.CDLL(str(lib))  # RTLD_LOCAL: interposes on nothing in this process
    assert hasattr(loaded, "SSL_clear") and not hasattr(loaded, "SSL_set_session")
