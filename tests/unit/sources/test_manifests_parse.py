"""One scan of a manifests directory (`load_manifests`): what is read, in which order, from which line."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from fastingress.errors import SourceError
from fastingress.model.objects import EndpointSlice, Ingress, Kind, ObjectKey, Service
from fastingress.model.problems import Problem
from fastingress.sources.manifests import ManifestSet, load_manifests
from tests.support.manifests import INGRESS_TEMPLATE

INGRESS = INGRESS_TEMPLATE

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  ports:
  - port: {port}
    targetPort: 8080
"""


def ingress(name: str = "web", host: str = "a.example.com", namespace: str = "default") -> str:
    return INGRESS.format(name=name, host=host, namespace=namespace)


def service(name: str = "web", port: int = 80) -> str:
    return SERVICE.format(name=name, port=port)


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def ing_id(name: str, namespace: str = "default") -> tuple[Kind, ObjectKey]:
    return (Kind.INGRESS, ObjectKey(namespace, name))


def svc_id(name: str, namespace: str = "default") -> tuple[Kind, ObjectKey]:
    return (Kind.SERVICE, ObjectKey(namespace, name))


def file_problems(result: ManifestSet) -> list[Problem]:
    return [p for p in result.problems if p.kind is Kind.FILE]


def test_multi_document_yaml_gives_every_object_with_the_line_it_starts_on(tmp_path: Path) -> None:
    # line 1: comment; the Service starts on line 3; the Ingress after the second "---"
    text = "# two objects\n---\n" + service() + "---\n" + ingress() + "---\n"
    write(tmp_path, "app.yaml", text)
    result = load_manifests(tmp_path)
    assert set(result.objects) == {svc_id("web"), ing_id("web")}
    assert result.problems == []
    ingress_line = 3 + service().count("\n") + 1
    assert result.origins == {svc_id("web"): "app.yaml:3", ing_id("web"): f"app.yaml:{ingress_line}"}
    assert isinstance(result.objects[ing_id("web")], Ingress)


def test_list_kinds_expand_their_items_each_with_its_own_line(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Service
          metadata: {name: one, namespace: default}
          spec: {ports: [{port: 80}]}
        - apiVersion: v1
          kind: Service
          metadata: {name: two, namespace: default}
          spec: {ports: [{port: 81}]}
        ---
        apiVersion: v1
        kind: ServiceList
        items:
        - metadata: {name: three, namespace: default}
          spec: {ports: [{port: 82}]}
        """
    )
    write(tmp_path, "list.yaml", text)
    result = load_manifests(tmp_path)
    assert result.problems == []
    assert result.origins == {
        svc_id("one"): "list.yaml:4",
        svc_id("two"): "list.yaml:8",
        svc_id("three"): "list.yaml:16",  # a typed list's items may leave kind out
    }


def test_json_files_hold_one_object_or_a_list(tmp_path: Path) -> None:
    single = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "one"}, "spec": {"ports": [{"port": 80}]}}
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "two"}, "spec": {"ports": [{"port": 81}]}}
        ],
    }
    write(tmp_path, "one.json", json.dumps(single))
    write(tmp_path, "two.json", json.dumps(listed, indent=2))
    result = load_manifests(tmp_path)
    assert result.problems == []
    assert set(result.objects) == {svc_id("one"), svc_id("two")}
    assert result.origins[svc_id("one")] == "one.json:1"
    assert result.origins[svc_id("two")] == "two.json:5"  # the line of the item's "{"


def test_yaml_syntax_error_names_path_and_line_and_the_rest_of_the_directory_works(tmp_path: Path) -> None:
    write(tmp_path, "a-good.yaml", ingress("first"))
    write(tmp_path, "b-broken.yaml", service("svc") + "---\nkind: Ingress\nmetadata: {name: [oops\n")
    write(tmp_path, "c-good.yaml", ingress("second", host="b.example.com"))
    result = load_manifests(tmp_path)
    assert set(result.objects) == {ing_id("first"), ing_id("second")}  # a broken file yields nothing
    [problem] = result.problems
    assert problem.kind is Kind.FILE
    assert problem.key == ObjectKey("", "b-broken.yaml")
    assert problem.reason == "InvalidYAML"
    assert problem.rejected
    line = service().count("\n") + 4  # the end of the unterminated flow sequence
    assert problem.field == f"line {line}"
    assert problem.origin == f"b-broken.yaml:{line}"
    assert f"line {line}" in problem.message
    assert "b-broken.yaml" in str(problem)


def test_json_syntax_error_names_the_line(tmp_path: Path) -> None:
    write(tmp_path, "bad.json", '{\n  "kind": "Service",\n  "metadata": {"name": "x",}\n}\n')
    [problem] = load_manifests(tmp_path).problems
    assert (problem.reason, problem.field, problem.origin) == ("InvalidJSON", "line 3", "bad.json:3")
    assert problem.message.startswith("invalid JSON at line 3: ")


def test_a_document_that_is_not_a_mapping_is_reported_and_the_others_in_the_file_load(tmp_path: Path) -> None:
    write(tmp_path, "mixed.yaml", "- just\n- a list\n---\n" + service() + "---\nplain words\n")
    result = load_manifests(tmp_path)
    assert set(result.objects) == {svc_id("web")}
    reasons = [(p.reason, p.origin) for p in result.problems]
    last_line = 4 + service().count("\n") + 1
    assert reasons == [("InvalidObject", "mixed.yaml:1"), ("InvalidObject", f"mixed.yaml:{last_line}")]


def test_duplicate_objects_keep_the_first_by_path_order_and_name_both_origins(tmp_path: Path) -> None:
    write(tmp_path, "z.yaml", service(port=90))
    write(tmp_path, "a/svc.yaml", service(port=80))
    result = load_manifests(tmp_path)
    svc = result.objects[svc_id("web")]
    assert isinstance(svc, Service)
    assert svc.ports[0].port == 80  # "a/svc.yaml" sorts before "z.yaml"
    [problem] = result.problems
    assert problem.reason == "DuplicateObject"
    assert (problem.kind, problem.key) == svc_id("web")
    assert problem.origin == "z.yaml:1"
    assert "z.yaml:1" in problem.message and "a/svc.yaml:1" in problem.message


def test_kinds_the_controller_does_not_read_add_no_objects(tmp_path: Path) -> None:
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n"
    write(tmp_path, "app.yaml", deployment + "---\n" + service())
    result = load_manifests(tmp_path)
    assert set(result.objects) == {svc_id("web")}
    assert result.problems  # noted (convert's UnsupportedKind), never as a rejection
    assert not [p for p in result.problems if p.rejected]


def test_hidden_files_and_directories_are_skipped_like_a_configmap_mount(tmp_path: Path) -> None:
    # the kubelet's layout: app.yaml -> ..data/app.yaml, ..data -> ..2024_01_01_00_00_00.1, all swapped atomically
    write(tmp_path, "..2024_01_01_00_00_00.1/app.yaml", ingress())
    os.symlink("..2024_01_01_00_00_00.1", tmp_path / "..data")
    os.symlink("..data/app.yaml", tmp_path / "app.yaml")
    write(tmp_path, ".hidden.yaml", ingress("hidden"))
    write(tmp_path, ".git/config.yaml", ingress("git"))
    write(tmp_path, "README.md", "# not a manifest\n")
    write(tmp_path, "notes.txt", "kind: Ingress\n")
    result = load_manifests(tmp_path)
    assert set(result.objects) == {ing_id("web")}
    assert result.origins[ing_id("web")] == "app.yaml:1"
    assert result.problems == []


def test_order_of_appearance_across_the_directory_is_the_seq(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", ingress("b1") + "---\n" + ingress("b2"))
    write(tmp_path, "a.yml", ingress("a1"))
    write(tmp_path, "a/z.yaml", ingress("az"))
    result = load_manifests(tmp_path)
    ordered = sorted(result.objects.values(), key=lambda obj: obj.seq if isinstance(obj, Ingress) else -1)
    names = [obj.key.name for obj in ordered if isinstance(obj, Ingress)]
    # paths compare part by part: ("a", "z.yaml") < ("a.yml",) < ("b.yaml",)
    assert names == ["az", "a1", "b1", "b2"]
    assert load_manifests(tmp_path) == result  # deterministic


def test_creation_timestamp_is_kept_when_given(tmp_path: Path) -> None:
    stamped = ingress("old").replace(
        "  namespace: default\n", "  namespace: default\n  creationTimestamp: 2020-01-02T03:04:05Z\n"
    )
    write(tmp_path, "a.yaml", ingress("new") + "---\n" + stamped)
    result = load_manifests(tmp_path)
    old, new = result.objects[ing_id("old")], result.objects[ing_id("new")]
    assert isinstance(old, Ingress) and isinstance(new, Ingress)
    assert old.created == "2020-01-02T03:04:05Z"
    assert new.created == ""
    assert (new.seq, old.seq) == (0, 1)


def test_loopback_endpoints_are_valid_in_manifests(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: web-1
          namespace: default
          labels: {kubernetes.io/service-name: web}
        addressType: IPv4
        ports: [{port: 8080}]
        endpoints:
        - addresses: [127.0.0.2]
        """
    )
    write(tmp_path, "eps.yaml", text)
    result = load_manifests(tmp_path)
    assert result.problems == []
    eps = result.objects[(Kind.ENDPOINT_SLICE, ObjectKey("default", "web-1"))]
    assert isinstance(eps, EndpointSlice)
    assert eps.endpoints[0].addresses == ("127.0.0.2",)


def test_static_endpoints_annotation_adds_an_endpoint_slice(tmp_path: Path) -> None:
    annotated = service().replace(
        "  namespace: default\n", f'  namespace: default\n  annotations:\n    fastingress.io/endpoints: "{STATIC}"\n'
    )
    write(tmp_path, "svc.yaml", annotated)
    result = load_manifests(tmp_path)
    assert result.problems == []
    slices = [obj for obj in result.objects.values() if isinstance(obj, EndpointSlice)]
    [eps] = slices
    assert eps.service == "web"
    assert [address for endpoint in eps.endpoints for address in endpoint.addresses] == ["127.0.0.1", "127.0.0.2"]
    assert [port.port for port in eps.ports] == [8080]  # the Service's targetPort
    assert result.origins[(Kind.ENDPOINT_SLICE, eps.key)] == "svc.yaml:1"


STATIC = "127.0.0.1, 127.0.0.2"


def test_an_unreadable_file_is_reported_and_skipped(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", service())
    os.symlink("nowhere.yaml", tmp_path / "dangling.yaml")
    result = load_manifests(tmp_path)
    assert set(result.objects) == {svc_id("web")}
    [problem] = result.problems
    assert (problem.reason, problem.key, problem.origin) == (
        "UnreadableFile",
        ObjectKey("", "dangling.yaml"),
        "dangling.yaml",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_file_without_read_permission_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "secret.yaml", service()).chmod(0)
    [problem] = load_manifests(tmp_path).problems
    assert problem.reason == "UnreadableFile"


def test_directory_symlink_loops_end(tmp_path: Path) -> None:
    write(tmp_path, "sub/app.yaml", service())
    os.symlink("..", tmp_path / "sub" / "up")
    result = load_manifests(tmp_path)
    assert set(result.objects) == {svc_id("web")}
    assert result.problems == []


def test_a_missing_directory_raises_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        load_manifests(tmp_path / "missing")
    write(tmp_path, "file.yaml", service())
    with pytest.raises(SourceError):
        load_manifests(tmp_path / "file.yaml")
