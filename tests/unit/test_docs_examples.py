"""The examples of the Kubernetes Ingress documentation, through the whole offline pipeline.

Each scenario of tests/data/ingress-docs-examples.yaml is written as a manifests directory (its
Services get one EndpointSlice each, its `@CERT:`/`@KEY:` placeholders become generated
certificates), compiled, and every request is answered by `explain_url` over the emitted table:
the same normalisation, lookup and table code the workers use.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastingress.settings import Settings
from fastingress.supervisor.explain import Explanation, explain_url
from fastingress.supervisor.offline import build_from_manifests
from tests.support.certs import make_cert

DATA = yaml.safe_load((Path(__file__).parent.parent / "data" / "ingress-docs-examples.yaml").read_text())
SCENARIOS = {s["name"]: s for s in DATA["scenarios"]}


def _endpoint_slices(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One EndpointSlice per Service (the data's harness convention), one endpoint per Service."""
    out = []
    for i, obj in enumerate(m for m in manifests if m["kind"] == "Service"):
        meta = obj["metadata"]
        out.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{meta['name']}-abc", "namespace": meta.get("namespace", "default"),
                         "labels": {"kubernetes.io/service-name": meta["name"]}},
            "addressType": "IPv4",
            "ports": [{"name": p.get("name", ""), "port": 8000 + p["port"] % 1000} for p in obj["spec"]["ports"]],
            "endpoints": [{"addresses": [f"10.1.{i // 250}.{i % 250 + 1}"], "conditions": {"ready": True}}],
        })
    return out


def _fill_certs(obj: dict[str, Any]) -> dict[str, Any]:
    """Replace @CERT:<hosts> / @KEY:<hosts> by a freshly generated certificate and key for those names."""
    data = obj.get("stringData") or {}
    crt = data.get("tls.crt", "")
    if crt.startswith("@CERT:"):
        cert_pem, key_pem = make_cert(crt.removeprefix("@CERT:").split(","))
        obj = copy.deepcopy(obj)
        obj["stringData"] = {"tls.crt": cert_pem.decode(), "tls.key": key_pem.decode()}
    return obj


def _write_scenario(scenario: dict[str, Any], directory: Path) -> None:
    manifests = [*DATA["base_manifests"], *scenario["manifests"]]
    # the scenario's own IngressClass replaces the base one of the same name
    names = [m["metadata"]["name"] for m in scenario["manifests"] if m["kind"] == "IngressClass"]
    manifests = [m for m in manifests if not (m in DATA["base_manifests"] and m["metadata"]["name"] in names)]
    docs = [_fill_certs(m) for m in manifests] + _endpoint_slices(manifests)
    (directory / "scenario.yaml").write_text(yaml.safe_dump_all(docs))


def _answer(view: Any, request: dict[str, Any]) -> Explanation:
    url = f"{request.get('scheme', 'http')}://{request['host']}{request['path']}"
    answer = explain_url(view, url)
    if request.get("follow_redirects") and answer.status == 308 and answer.redirect:
        answer = explain_url(view, answer.redirect)
    return answer


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_docs_scenario(name: str, tmp_path: Path) -> None:
    scenario = SCENARIOS[name]
    _write_scenario(scenario, tmp_path)
    build = build_from_manifests(tmp_path, Settings())
    assert not [p for p in build.problems if p.rejected], build.problems
    for request in scenario["requests"]:
        expect = request["expect"]
        answer = _answer(build.view, request)
        where = f"{request.get('scheme', 'http')}://{request['host']}{request['path']}: {answer.reason}"
        assert answer.status == expect["status"], where
        assert answer.backend == expect.get("backend"), where
        if "redirect" in expect:
            assert answer.redirect == expect["redirect"], where
        if "tls_secret" in expect:
            assert answer.tls_secret == expect["tls_secret"], where
        if "upstream_path" in expect:
            assert answer.path == expect["upstream_path"], where
