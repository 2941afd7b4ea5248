"""The `fastingress` command as users script it: check, routes and explain, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MANIFESTS = """\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: fastingress}
spec: {controller: fastingress.io/ingress-controller}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations: {fastingress.io/endpoints: "127.0.0.1, 127.0.0.2"}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default}
spec:
  ingressClassName: fastingress
  defaultBackend: {service: {name: web, port: {number: 80}}}
  rules:
  - host: foo.example.com
    http:
      paths:
      - {path: /app, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
      - {path: /gone, pathType: Exact, backend: {service: {name: missing, port: {number: 80}}}}
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastingress", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    (tmp_path / "site.yaml").write_text(MANIFESTS)
    return tmp_path


def test_check_valid_directory_exits_0_and_reports_warnings(manifests: Path) -> None:
    result = run("check", str(manifests))
    assert result.returncode == 0, result.stderr
    assert "default/web: Service default/missing not found" in result.stdout
    assert "site.yaml:" in result.stdout  # problems point at the file and line


def test_check_rejected_object_exits_1_with_namespace_name_reason(manifests: Path) -> None:
    bad = MANIFESTS.split("---")[2].replace("/app", "app").replace("name: web,", "name: bad,")
    (manifests / "bad.yaml").write_text(bad)
    (manifests / "broken.yml").write_text("kind: Service\nmetadata: {name: x\n")
    result = run("check", str(manifests))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("default/bad: ") and "spec.rules[0].http.paths[0].path" in line for line in lines)
    assert any(line.startswith("broken.yml: ") and "broken.yml:" in line for line in lines)


def test_check_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = run("check", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert "nope" in result.stderr


def test_explain_json_one_line_per_url_in_order(manifests: Path) -> None:
    urls = ["http://FOO.example.com:8080/app/../app/x?q=1", "http://foo.example.com/gone", "http://other.example/",
            "http://foo.example.com/%2e%2e/etc", "https://foo.example.com/app"]
    result = run("explain", "--manifests", str(manifests), "--json", *urls)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["url"] for a in answers] == urls
    first, gone, other, bad, tls = answers
    assert first["status"] == 200 and first["backend"] == "default/web:80"
    assert first["ingress"] == "default/web"
    assert first["rule"] == {"host": "foo.example.com", "path": "/app", "pathType": "Prefix"}
    assert first["endpoints"] == ["127.0.0.1:8080", "127.0.0.2:8080"]
    assert first["path"] == "/app/x?q=1" and first["redirect"] is None and first["tls_secret"] is None
    assert first["reason"]
    assert gone["status"] == 503 and gone["backend"] == "default/missing:80"
    # design.md: a defaultBackend serves the hosts its Ingress defines; other hosts need a rule-less Ingress
    assert other["status"] == 404 and other["rule"] is None
    assert bad["status"] == 400 and bad["backend"] is None
    assert tls["status"] == 200 and tls["tls_secret"] is None  # no spec.tls: the default certificate


def test_explain_text_and_routes(manifests: Path) -> None:
    text = run("explain", "--manifests", str(manifests), "http://foo.example.com/app")
    assert "status      200" in text.stdout and "default/web:80" in text.stdout
    routes = run("routes", "--manifests", str(manifests))
    assert "foo.example.com" in routes.stdout and "/app [prefix]" in routes.stdout
    described = json.loads(run("routes", "--manifests", str(manifests), "--json").stdout)
    hosts = {h["host"]: h for h in described["hosts"]}
    assert [r["path"] for r in hosts["foo.example.com"]["routes"]] == ["/gone", "/app"]  # longest first
    assert hosts["foo.example.com"]["default"]["backend"] == "default/web:80"
