"""`convert_object`: raw dicts to model objects, validated like the API server; one test per rule."""

from __future__ import annotations

import base64
import copy
import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastingress.model.convert import Converted, convert_object, static_endpoint_slice
from fastingress.model.objects import (
    Backend,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Ingress,
    IngressClass,
    IngressPath,
    IngressRule,
    IngressTLS,
    Kind,
    ObjectKey,
    Service,
    ServicePort,
    TLSSecret,
)

Raw = dict[str, Any]

SERVICE_BACKEND: Raw = {"service": {"name": "web", "port": {"number": 80}}}


def make_ingress(spec: Raw | None = None, **metadata: Any) -> Raw:
    if spec is None:
        spec = {"rules": [{"host": "a.example.com", "http": {"paths": [make_path()]}}]}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "web", "namespace": "apps", **metadata},
        "spec": spec,
    }


def make_path(path: Any = "/", path_type: Any = "Prefix", backend: Any = None) -> Raw:
    return {"path": path, "pathType": path_type, "backend": backend or copy.deepcopy(SERVICE_BACKEND)}


def with_path(**kwargs: Any) -> Raw:
    return make_ingress({"rules": [{"host": "a.example.com", "http": {"paths": [make_path(**kwargs)]}}]})


def with_backend(backend: Any) -> Raw:
    return make_ingress({"defaultBackend": backend})


def with_host(host: Any) -> Raw:
    return make_ingress({"rules": [{"host": host, "http": {"paths": [make_path()]}}]})


def make_service(spec: Raw | None = None, name: str = "web", **metadata: Any) -> Raw:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "apps", **metadata},
        "spec": {"ports": [{"port": 80}]} if spec is None else spec,
    }


def make_slice(endpoints: Any = None, address_type: Any = "IPv4", ports: Any = None, **metadata: Any) -> Raw:
    raw: Raw = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc12",
            "namespace": "apps",
            "labels": {"kubernetes.io/service-name": "web"},
            **metadata,
        },
        "addressType": address_type,
        "endpoints": [{"addresses": ["10.0.0.1"]}] if endpoints is None else endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports,
    }
    return raw


def with_address(address: str, address_type: str = "IPv4", **kwargs: Any) -> Converted:
    return convert_object(make_slice([{"addresses": [address]}], address_type), **kwargs)


def make_class(spec: Any = None, **metadata: Any) -> Raw:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": "fast", **metadata},
        "spec": {"controller": "fastingress.io/ingress-controller"} if spec is None else spec,
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def make_secret(data: Any = None, secret_type: Any = "kubernetes.io/tls", **extra: Any) -> Raw:
    raw: Raw = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "cert", "namespace": "apps"},
        "type": secret_type,
        "data": {"tls.crt": b64(b"CERT"), "tls.key": b64(b"KEY")} if data is None else data,
    }
    raw.update(extra)
    return raw


def assert_accepted(result: Converted) -> Any:
    assert not [p for p in result.problems if p.rejected], result.problems
    assert result.obj is not None
    return result.obj


def assert_rejected(result: Converted, field: str, reason: str | None = None) -> None:
    assert result.obj is None
    fields = [(p.field, p.reason) for p in result.problems if p.rejected]
    assert any(f == field and (reason is None or r == reason) for f, r in fields), fields


# --- dispatch -------------------------------------------------------------------------------------


def test_a_valid_ingress_converts_completely() -> None:
    raw = make_ingress(
        {
            "ingressClassName": "fast",
            "defaultBackend": {"service": {"name": "fallback", "port": {"name": "http"}}},
            "rules": [{"host": "a.example.com", "http": {"paths": [make_path("/api", "Exact")]}}],
            "tls": [{"hosts": ["a.example.com"], "secretName": "cert"}],
        },
        resourceVersion="42",
        generation=3,
        uid="u-1",
        creationTimestamp="2024-05-06T07:08:09Z",
        annotations={"kubernetes.io/ingress.class": "legacy", "example.com/x": "y"},
    )
    result = convert_object(raw, seq=7)
    assert result.kind is Kind.INGRESS
    assert result.key == ObjectKey("apps", "web")
    assert result.problems == ()
    assert result.obj == Ingress(
        key=ObjectKey("apps", "web"),
        created="2024-05-06T07:08:09Z",
        seq=7,
        resource_version="42",
        generation=3,
        uid="u-1",
        class_name="fast",
        class_annotation="legacy",
        annotations={"kubernetes.io/ingress.class": "legacy", "example.com/x": "y"},
        default_backend=Backend(service="fallback", port_name="http"),
        rules=(IngressRule("a.example.com", (IngressPath("/api", "Exact", Backend("web", 80)),)),),
        tls=(IngressTLS(("a.example.com",), "cert"),),
    )


@pytest.mark.parametrize("raw", [[1, 2], "text", 3, None])
def test_a_document_that_is_not_a_mapping_is_rejected(raw: Any) -> None:
    result = convert_object(raw, origin="m.yaml:3")
    assert (result.kind, result.key, result.obj) == (None, None, None)
    (problem,) = result.problems
    assert (problem.kind, problem.reason, problem.rejected, problem.origin) == (
        Kind.FILE,
        "InvalidObject",
        True,
        "m.yaml:3",
    )


def test_an_unknown_kind_is_ignored_with_a_note() -> None:
    raw = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "apps"}}
    result = convert_object(raw)
    assert (result.kind, result.obj) == (None, None)
    (problem,) = result.problems
    assert (problem.kind, problem.key, problem.reason, problem.rejected) == (
        Kind.FILE,
        ObjectKey("apps", "cfg"),
        "UnsupportedKind",
        False,
    )
    assert "ignored" in problem.message


def test_an_unsupported_api_version_of_a_known_kind_names_the_supported_one() -> None:
    raw = make_ingress()
    raw["apiVersion"] = "extensions/v1beta1"
    result = convert_object(raw)
    assert result.kind is None
    assert "networking.k8s.io/v1 Ingress" in result.problems[0].message


def test_a_secret_that_is_not_tls_is_silently_ignored() -> None:
    result = convert_object(make_secret(data={"password": "!!not base64"}, secret_type="Opaque"))
    assert result == Converted(Kind.SECRET, ObjectKey("apps", "cert"), None, ())
    assert convert_object({**make_secret(), "type": None}).obj is None


def test_origin_is_carried_onto_problems() -> None:
    result = convert_object(with_host("A.example.com"), origin="site/app.yaml:12")
    assert result.problems[0].origin == "site/app.yaml:12"


def test_every_problem_of_an_object_is_reported_at_once() -> None:
    raw = make_ingress({"rules": [{"host": "UPPER", "http": {"paths": [make_path("nope", "Exact")]}}]})
    raw["metadata"]["annotations"] = {"a": 1}
    fields = {p.field for p in convert_object(raw).problems}
    assert fields == {"spec.rules[0].host", "spec.rules[0].http.paths[0].path", "metadata.annotations[a]"}


# --- metadata ---------------------------------------------------------------------------------------


def test_a_missing_name_is_rejected_and_has_no_key() -> None:
    raw = make_ingress()
    del raw["metadata"]["name"]
    result = convert_object(raw)
    assert result.key is None
    assert_rejected(result, "metadata.name", "InvalidName")
    assert result.problems[0].key == ObjectKey("apps", "")


@pytest.mark.parametrize("name", ["Web", "web_1", "-web", "a" * 254, "web."])
def test_an_invalid_name_is_rejected_but_keeps_its_key(name: str) -> None:
    raw = make_ingress()
    raw["metadata"]["name"] = name
    result = convert_object(raw)
    assert result.key == ObjectKey("apps", name)
    assert_rejected(result, "metadata.name", "InvalidName")


def test_the_namespace_defaults_to_the_given_default() -> None:
    raw = make_ingress()
    del raw["metadata"]["namespace"]
    assert convert_object(raw).key == ObjectKey("default", "web")
    assert convert_object(raw, default_namespace="site").key == ObjectKey("site", "web")


def test_an_invalid_namespace_is_rejected() -> None:
    assert_rejected(convert_object(make_ingress(namespace="Apps")), "metadata.namespace", "InvalidName")


def test_service_names_must_be_dns1035_labels() -> None:
    assert_rejected(convert_object(make_service(name="1web")), "metadata.name", "InvalidName")
    assert_rejected(convert_object(make_service(name="web.site")), "metadata.name", "InvalidName")
    assert_accepted(convert_object(make_service(name="web-1")))
    raw = make_ingress()
    raw["metadata"]["name"] = "1web.site"  # a DNS-1123 subdomain is fine for other kinds
    assert_accepted(convert_object(raw))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
        ("2024-01-02T03:04:05.999999999Z", "2024-01-02T03:04:05Z"),
        ("2024-01-02T05:04:05+02:00", "2024-01-02T03:04:05Z"),
        ("2024-01-01T23:30:00-01:00", "2024-01-02T00:30:00Z"),
        (dt.datetime(2024, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2024-01-02T03:04:05Z"),
        (dt.datetime(2024, 1, 2, 3, 4, 5), "2024-01-02T03:04:05Z"),  # YAML: a naive timestamp is UTC
    ],
)
def test_creation_timestamps_are_normalised_to_utc_seconds(value: Any, expected: str) -> None:
    ingress = assert_accepted(convert_object(make_ingress(creationTimestamp=value)))
    assert ingress.created == expected


@pytest.mark.parametrize(
    "value",
    ["2024-01-02", "2024-01-02 03:04:05Z", "yesterday", "2024-13-02T03:04:05Z", 1700000000, dt.date(2024, 1, 2)],
)
def test_an_invalid_creation_timestamp_is_rejected(value: Any) -> None:
    result = convert_object(make_ingress(creationTimestamp=value))
    assert_rejected(result, "metadata.creationTimestamp", "InvalidTimestamp")


def test_a_missing_creation_timestamp_is_empty() -> None:
    assert assert_accepted(convert_object(make_ingress())).created == ""


@pytest.mark.parametrize("value", [1, True, None, ["x"]])
def test_annotation_values_must_be_strings(value: Any) -> None:
    result = convert_object(make_ingress(annotations={"example.com/a": value}))
    assert_rejected(result, "metadata.annotations[example.com/a]", "InvalidType")


@pytest.mark.parametrize("key", ["bad key", "example.com/", "/name", "Example_Com/x", "a" * 64])
def test_annotation_keys_must_be_qualified_names(key: str) -> None:
    assert_rejected(convert_object(make_ingress(annotations={key: "v"})), f"metadata.annotations[{key}]")


def test_annotation_keys_are_checked_lower_cased_like_the_api_server() -> None:
    assert_accepted(convert_object(make_ingress(annotations={"Example.COM/Name": "v"})))


def test_annotations_are_limited_to_256_kib() -> None:
    result = convert_object(make_ingress(annotations={"example.com/big": "x" * (256 * 1024)}))
    assert_rejected(result, "metadata.annotations", "InvalidAnnotation")


@pytest.mark.parametrize(("field", "value"), [("resourceVersion", 42), ("generation", "3"), ("uid", 7)])
def test_metadata_scalars_must_have_their_types(field: str, value: Any) -> None:
    assert_rejected(convert_object(make_ingress(**{field: value})), f"metadata.{field}", "InvalidType")


def test_invalid_labels_are_rejected() -> None:
    assert_rejected(convert_object(make_ingress(labels={"app": "bad value"})), "metadata.labels[app]")
    assert_rejected(convert_object(make_ingress(labels={"bad key": "v"})), "metadata.labels[bad key]")


# --- Ingress: spec ---------------------------------------------------------------------------------


def test_an_ingress_needs_rules_or_a_default_backend() -> None:
    assert_rejected(convert_object(make_ingress({})), "spec", "InvalidSpec")
    assert_rejected(convert_object(make_ingress({"rules": []})), "spec", "InvalidSpec")
    raw = make_ingress()
    del raw["spec"]
    assert_rejected(convert_object(raw), "spec", "InvalidSpec")


def test_a_default_backend_alone_is_enough() -> None:
    ingress = assert_accepted(convert_object(with_backend(SERVICE_BACKEND)))
    assert ingress.default_backend == Backend("web", 80)
    assert ingress.rules == ()


def test_a_rule_with_a_host_and_no_http_has_no_paths() -> None:
    ingress = assert_accepted(convert_object(make_ingress({"rules": [{"host": "a.example.com"}]})))
    assert ingress.rules == (IngressRule("a.example.com", ()),)


def test_a_rule_without_host_applies_to_every_host() -> None:
    ingress = assert_accepted(convert_object(make_ingress({"rules": [{"http": {"paths": [make_path()]}}]})))
    assert ingress.rules[0].host == ""


def test_http_needs_at_least_one_path() -> None:
    result = convert_object(make_ingress({"rules": [{"host": "a.example.com", "http": {"paths": []}}]}))
    assert_rejected(result, "spec.rules[0].http.paths", "InvalidPath")
    result = convert_object(make_ingress({"rules": [{"host": "a.example.com", "http": {}}]}))
    assert_rejected(result, "spec.rules[0].http.paths", "InvalidPath")


@pytest.mark.parametrize(
    "host", ["a.example.com", "example", "xn--bcher-kva.example", "1.example.com", "*.example.com"]
)
def test_valid_hosts_are_accepted(host: str) -> None:
    assert assert_accepted(convert_object(with_host(host))).rules[0].host == host


@pytest.mark.parametrize(
    "host",
    [
        "A.example.com",  # the API server refuses upper case
        "a_b.example.com",
        "-a.example.com",
        "a.example.com.",
        "a..example.com",
        "a.example.com:80",
        "a" * 254,
    ],
)
def test_hosts_must_be_lower_case_dns_subdomains(host: str) -> None:
    assert_rejected(convert_object(with_host(host)), "spec.rules[0].host", "InvalidHost")


@pytest.mark.parametrize("host", ["10.0.0.1", "010.0.0.1", "::1", "2001:db8::1"])
def test_hosts_must_not_be_ip_addresses(host: str) -> None:
    result = convert_object(with_host(host))
    assert_rejected(result, "spec.rules[0].host", "InvalidHost")
    assert "IP address" in result.problems[0].message or ":" in host


@pytest.mark.parametrize("host", ["*", "*.", "foo.*.com", "*foo.example.com", "*.*.example.com", "a.*"])
def test_wildcards_only_as_the_whole_first_label(host: str) -> None:
    assert_rejected(convert_object(with_host(host)), "spec.rules[0].host", "InvalidHost")


def test_a_host_must_be_a_string() -> None:
    assert_rejected(convert_object(with_host(80)), "spec.rules[0].host", "InvalidType")


# --- Ingress: paths -----------------------------------------------------------------------------------


def test_path_type_is_required() -> None:
    result = convert_object(with_path(path_type=None))
    assert_rejected(result, "spec.rules[0].http.paths[0].pathType", "InvalidPathType")


@pytest.mark.parametrize("path_type", ["prefix", "Regex", ""])
def test_path_type_must_be_one_of_the_three(path_type: str) -> None:
    result = convert_object(with_path(path_type=path_type))
    assert_rejected(result, "spec.rules[0].http.paths[0].pathType", "InvalidPathType")


@pytest.mark.parametrize("path_type", ["Exact", "Prefix"])
@pytest.mark.parametrize("path", ["/", "/a", "/a/b/", "/a.b", "/..a", "/a/...", "/%2e", "/a%20b"])
def test_valid_exact_and_prefix_paths(path_type: str, path: str) -> None:
    ingress = assert_accepted(convert_object(with_path(path=path, path_type=path_type)))
    assert ingress.rules[0].paths[0] == IngressPath(path, path_type, Backend("web", 80))


@pytest.mark.parametrize("path_type", ["Exact", "Prefix"])
@pytest.mark.parametrize(
    "path", ["", "a", "a/b", "/a//b", "//", "/a/./b", "/a/../b", "/a%2fb", "/a%2Fb", "/a/..", "/a/.", "/.", "/.."]
)
def test_invalid_exact_and_prefix_paths(path_type: str, path: str) -> None:
    result = convert_object(with_path(path=path, path_type=path_type))
    assert_rejected(result, "spec.rules[0].http.paths[0].path", "InvalidPath")


def test_an_implementation_specific_path_may_be_empty_and_is_then_slash() -> None:
    for raw_path in ("", None):
        ingress = assert_accepted(convert_object(with_path(path=raw_path, path_type="ImplementationSpecific")))
        assert ingress.rules[0].paths[0].path == "/"


def test_an_implementation_specific_path_must_be_absolute_but_is_not_otherwise_checked() -> None:
    result = convert_object(with_path(path="api", path_type="ImplementationSpecific"))
    assert_rejected(result, "spec.rules[0].http.paths[0].path", "InvalidPath")
    assert_accepted(convert_object(with_path(path="/a//b/..", path_type="ImplementationSpecific")))


def test_a_path_must_be_a_string() -> None:
    assert_rejected(convert_object(with_path(path=5)), "spec.rules[0].http.paths[0].path", "InvalidType")


# --- Ingress: backends ---------------------------------------------------------------------------------


def test_a_backend_is_required() -> None:
    raw = with_path()
    del raw["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    assert_rejected(convert_object(raw), "spec.rules[0].http.paths[0].backend", "InvalidBackend")


def test_a_backend_is_a_service_or_a_resource_not_both() -> None:
    both = {**SERVICE_BACKEND, "resource": {"kind": "Bucket", "name": "b"}}
    assert_rejected(convert_object(with_backend(both)), "spec.defaultBackend", "InvalidBackend")
    assert_rejected(convert_object(with_backend({})), "spec.defaultBackend", "InvalidBackend")


@pytest.mark.parametrize("name", ["1web", "Web", "web.site", "web_1", "", "a" * 64])
def test_a_backend_service_name_must_be_a_dns1035_label(name: str) -> None:
    result = convert_object(with_backend({"service": {"name": name, "port": {"number": 80}}}))
    assert_rejected(result, "spec.defaultBackend.service.name", "InvalidBackend")


def test_a_backend_port_by_number_or_by_name() -> None:
    by_name = assert_accepted(convert_object(with_backend({"service": {"name": "web", "port": {"name": "http"}}})))
    assert by_name.default_backend == Backend(service="web", port_name="http")
    by_number = assert_accepted(convert_object(with_backend({"service": {"name": "web", "port": {"number": 8080}}})))
    assert by_number.default_backend == Backend(service="web", port_number=8080)


@pytest.mark.parametrize(
    ("port", "field"),
    [
        ({"number": 80, "name": "http"}, "spec.defaultBackend.service.port"),
        ({}, "spec.defaultBackend.service.port"),
        ({"number": 0}, "spec.defaultBackend.service.port"),  # 0 is Go's "unset"
        (None, "spec.defaultBackend.service.port"),
        ({"number": 65536}, "spec.defaultBackend.service.port.number"),
        ({"number": -1}, "spec.defaultBackend.service.port.number"),
    ],
)
def test_a_backend_port_needs_exactly_one_valid_of_number_and_name(port: Any, field: str) -> None:
    result = convert_object(with_backend({"service": {"name": "web", "port": port}}))
    assert_rejected(result, field, "InvalidPort")


@pytest.mark.parametrize("port", ["80", 80.0, True])
def test_a_backend_port_number_must_be_an_integer(port: Any) -> None:
    result = convert_object(with_backend({"service": {"name": "web", "port": {"number": port}}}))
    assert_rejected(result, "spec.defaultBackend.service.port.number", "InvalidType")


@pytest.mark.parametrize("name", ["http", "h2c", "web-1", "a" * 15, "1a"])
def test_valid_iana_service_port_names(name: str) -> None:
    assert_accepted(convert_object(with_backend({"service": {"name": "web", "port": {"name": name}}})))


@pytest.mark.parametrize("name", ["HTTP", "http-", "-http", "ht--tp", "1234", "a" * 16, "web_1", "web.1"])
def test_invalid_iana_service_port_names(name: str) -> None:
    result = convert_object(with_backend({"service": {"name": "web", "port": {"name": name}}}))
    assert_rejected(result, "spec.defaultBackend.service.port.name", "InvalidPort")


def test_a_resource_backend_is_kept_as_group_kind_name() -> None:
    backend = {"resource": {"apiGroup": "storage.example.com", "kind": "Bucket", "name": "assets"}}
    ingress = assert_accepted(convert_object(with_backend(backend)))
    assert ingress.default_backend == Backend(resource="storage.example.com/Bucket/assets")
    core = assert_accepted(convert_object(with_backend({"resource": {"kind": "Bucket", "name": "assets"}})))
    assert core.default_backend == Backend(resource="/Bucket/assets")


@pytest.mark.parametrize(
    ("resource", "field"),
    [
        ({"name": "assets"}, "spec.defaultBackend.resource.kind"),
        ({"kind": "Bucket"}, "spec.defaultBackend.resource.name"),
        ({"kind": "Bucket", "name": "a/b"}, "spec.defaultBackend.resource.name"),
        ({"kind": "Bucket", "name": "assets", "apiGroup": "Not A Group"}, "spec.defaultBackend.resource.apiGroup"),
    ],
)
def test_an_invalid_resource_backend_is_rejected(resource: Raw, field: str) -> None:
    assert_rejected(convert_object(with_backend({"resource": resource})), field, "InvalidBackend")


# --- Ingress: TLS and class ----------------------------------------------------------------------------


def test_tls_hosts_allow_wildcards_and_ips_and_an_empty_secret_name() -> None:
    spec = {"defaultBackend": SERVICE_BACKEND, "tls": [{"hosts": ["*.example.com", "10.0.0.1"]}]}
    ingress = assert_accepted(convert_object(make_ingress(spec)))
    assert ingress.tls == (IngressTLS(("*.example.com", "10.0.0.1"), ""),)


@pytest.mark.parametrize("host", ["A.example.com", "foo.*.com", "*", 7])
def test_invalid_tls_hosts_are_rejected(host: Any) -> None:
    spec = {"defaultBackend": SERVICE_BACKEND, "tls": [{"hosts": ["ok.example.com", host], "secretName": "c"}]}
    assert_rejected(convert_object(make_ingress(spec)), "spec.tls[0].hosts[1]")


def test_an_invalid_tls_secret_name_is_rejected() -> None:
    spec = {"defaultBackend": SERVICE_BACKEND, "tls": [{"secretName": "My_Cert"}]}
    assert_rejected(convert_object(make_ingress(spec)), "spec.tls[0].secretName", "InvalidTLS")


def test_the_ingress_class_name_is_a_dns_subdomain() -> None:
    spec = {"defaultBackend": SERVICE_BACKEND, "ingressClassName": "Fast"}
    assert_rejected(convert_object(make_ingress(spec)), "spec.ingressClassName", "InvalidIngressClass")
    spec = {"defaultBackend": SERVICE_BACKEND, "ingressClassName": ""}
    assert_rejected(convert_object(make_ingress(spec)), "spec.ingressClassName", "InvalidIngressClass")


def test_no_class_name_and_no_annotation_are_none() -> None:
    ingress = assert_accepted(convert_object(make_ingress()))
    assert (ingress.class_name, ingress.class_annotation) == (None, None)


# --- IngressClass -----------------------------------------------------------------------------------------


def test_an_ingress_class_is_cluster_scoped_and_may_be_the_default() -> None:
    raw = make_class(namespace="ignored", annotations={"ingressclass.kubernetes.io/is-default-class": "true"})
    raw["metadata"]["resourceVersion"] = "9"
    result = convert_object(raw)
    assert result.key == ObjectKey("", "fast")
    assert result.obj == IngressClass("fast", "fastingress.io/ingress-controller", True, "9")


@pytest.mark.parametrize("value", ["True", "yes", "1", "false"])
def test_only_the_exact_string_true_makes_a_default_class(value: str) -> None:
    raw = make_class(annotations={"ingressclass.kubernetes.io/is-default-class": value})
    assert assert_accepted(convert_object(raw)).is_default is False


@pytest.mark.parametrize(
    "controller",
    [None, "", "fastingress", "Fast.io/x", "fastingress.io/", "fastingress.io/a b", "a.io/" + "x" * 250],
)
def test_the_controller_must_be_a_domain_prefixed_path(controller: Any) -> None:
    result = convert_object(make_class({"controller": controller}))
    assert_rejected(result, "spec.controller", "InvalidController")


# --- Service --------------------------------------------------------------------------------------------


def test_a_service_defaults_type_protocol_and_target_port() -> None:
    result = convert_object(make_service(annotations={"fastingress.io/endpoints": "127.0.0.1"}, resourceVersion="5"))
    assert result.obj == Service(
        key=ObjectKey("apps", "web"),
        ports=(ServicePort(80),),
        annotations={"fastingress.io/endpoints": "127.0.0.1"},
        resource_version="5",
    )


def test_an_unknown_service_type_is_rejected() -> None:
    result = convert_object(make_service({"type": "Magic", "ports": [{"port": 80}]}))
    assert_rejected(result, "spec.type", "InvalidServiceType")


def test_an_external_name_service_needs_a_dns_name() -> None:
    good = assert_accepted(convert_object(make_service({"type": "ExternalName", "externalName": "db.example.com."})))
    assert (good.type, good.external_name, good.ports) == ("ExternalName", "db.example.com.", ())
    missing = convert_object(make_service({"type": "ExternalName"}))
    assert_rejected(missing, "spec.externalName", "InvalidExternalName")
    bad = convert_object(make_service({"type": "ExternalName", "externalName": "DB_host"}))
    assert_rejected(bad, "spec.externalName", "InvalidExternalName")


def test_a_service_needs_ports_unless_headless_or_external() -> None:
    assert_rejected(convert_object(make_service({})), "spec.ports", "InvalidPort")
    assert assert_accepted(convert_object(make_service({"clusterIP": "None"}))).ports == ()


@pytest.mark.parametrize(("port", "reason"), [(0, "InvalidPort"), (65536, "InvalidPort"), ("80", "InvalidType")])
def test_a_service_port_must_be_an_integer_from_1_to_65535(port: Any, reason: str) -> None:
    result = convert_object(make_service({"ports": [{"port": port}]}))
    assert_rejected(result, "spec.ports[0].port", reason)


def test_a_service_port_is_required() -> None:
    assert_rejected(convert_object(make_service({"ports": [{"name": "http"}]})), "spec.ports[0].port", "InvalidPort")


def test_service_port_names_are_required_and_unique_when_several() -> None:
    two_unnamed = make_service({"ports": [{"port": 80}, {"port": 443}]})
    assert_rejected(convert_object(two_unnamed), "spec.ports[0].name", "InvalidPort")
    duplicate = make_service({"ports": [{"port": 80, "name": "web"}, {"port": 443, "name": "web"}]})
    assert_rejected(convert_object(duplicate), "spec.ports[1].name", "InvalidPort")
    invalid = make_service({"ports": [{"port": 80, "name": "Web"}]})
    assert_rejected(convert_object(invalid), "spec.ports[0].name", "InvalidPort")


def test_service_ports_are_unique_per_protocol() -> None:
    same = make_service({"ports": [{"port": 53, "name": "a"}, {"port": 53, "name": "b"}]})
    assert_rejected(convert_object(same), "spec.ports[1].port", "InvalidPort")
    udp = make_service({"ports": [{"port": 53, "name": "a"}, {"port": 53, "name": "b", "protocol": "UDP"}]})
    assert [p.protocol for p in assert_accepted(convert_object(udp)).ports] == ["TCP", "UDP"]


def test_a_service_protocol_must_be_tcp_udp_or_sctp() -> None:
    result = convert_object(make_service({"ports": [{"port": 80, "protocol": "HTTP"}]}))
    assert_rejected(result, "spec.ports[0].protocol", "InvalidProtocol")


@pytest.mark.parametrize(("target", "expected"), [(8080, 8080), ("http", "http"), (0, 0), ("", 0), (None, 0)])
def test_target_ports_are_numbers_or_names(target: Any, expected: int | str) -> None:
    service = assert_accepted(convert_object(make_service({"ports": [{"port": 80, "targetPort": target}]})))
    assert service.ports[0].target_port == expected


@pytest.mark.parametrize(
    ("target", "reason"),
    [("8080", "InvalidPort"), (70000, "InvalidPort"), ("HTTP", "InvalidPort"), (1.5, "InvalidType")],
)
def test_invalid_target_ports_are_rejected(target: Any, reason: str) -> None:
    result = convert_object(make_service({"ports": [{"port": 80, "targetPort": target}]}))
    assert_rejected(result, "spec.ports[0].targetPort", reason)


# --- EndpointSlice ---------------------------------------------------------------------------------------


def test_an_endpoint_slice_converts_with_defaulted_conditions() -> None:
    endpoints = [
        {"addresses": ["10.0.0.1"]},
        {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
        {"addresses": ["10.0.0.3"], "conditions": {"ready": False, "serving": True, "terminating": True}},
    ]
    result = convert_object(make_slice(endpoints, resourceVersion="11"))
    assert result.obj == EndpointSlice(
        key=ObjectKey("apps", "web-abc12"),
        service="web",
        address_type="IPv4",
        ports=(EndpointPort(8080, "http", "TCP"),),
        endpoints=(
            Endpoint(("10.0.0.1",), ready=True, serving=True, terminating=False),
            Endpoint(("10.0.0.2",), ready=False, serving=False, terminating=False),
            Endpoint(("10.0.0.3",), ready=False, serving=True, terminating=True),
        ),
        resource_version="11",
    )


def test_a_slice_without_a_service_label_is_not_ours() -> None:
    raw = make_slice()
    del raw["metadata"]["labels"]
    result = convert_object(raw)
    assert (result.kind, result.key, result.obj) == (Kind.ENDPOINT_SLICE, ObjectKey("apps", "web-abc12"), None)
    (problem,) = result.problems
    assert (problem.reason, problem.rejected) == ("NoServiceLabel", False)


@pytest.mark.parametrize("address_type", [None, "IP", "ipv4"])
def test_the_address_type_is_required_and_known(address_type: Any) -> None:
    assert_rejected(convert_object(make_slice(address_type=address_type)), "addressType", "InvalidAddressType")


@pytest.mark.parametrize(
    ("address", "address_type"),
    [("10.1.2.3", "IPv4"), ("2001:db8::1", "IPv6"), ("fd00::5", "IPv6"), ("pod.example.com", "FQDN")],
)
def test_valid_endpoint_addresses(address: str, address_type: str) -> None:
    assert assert_accepted(with_address(address, address_type)).endpoints[0].addresses == (address,)


@pytest.mark.parametrize(
    ("address", "address_type"),
    [
        ("2001:db8::1", "IPv4"),
        ("10.0.0.1", "IPv6"),
        ("::ffff:10.0.0.1", "IPv6"),  # Go reads a mapped address as IPv4
        ("10.0.0.256", "IPv4"),
        ("pod", "FQDN"),
        ("Pod.example.com", "FQDN"),
        ("0.0.0.0", "IPv4"),
        ("::", "IPv6"),
        ("169.254.1.1", "IPv4"),
        ("fe80::1", "IPv6"),
        ("224.0.0.5", "IPv4"),
        ("ff02::1", "IPv6"),
    ],
)
def test_invalid_or_special_endpoint_addresses_are_rejected(address: str, address_type: str) -> None:
    result = with_address(address, address_type, allow_loopback=True)
    assert_rejected(result, "endpoints[0].addresses[0]", "InvalidAddress")


@pytest.mark.parametrize(("address", "address_type"), [("127.0.0.1", "IPv4"), ("127.9.9.9", "IPv4"), ("::1", "IPv6")])
def test_loopback_addresses_only_when_allowed(address: str, address_type: str) -> None:
    result = with_address(address, address_type)
    assert_rejected(result, "endpoints[0].addresses[0]", "InvalidAddress")
    assert "loopback" in result.problems[0].message
    assert_accepted(with_address(address, address_type, allow_loopback=True))


def test_an_endpoint_has_1_to_100_addresses() -> None:
    assert_rejected(convert_object(make_slice([{"addresses": []}])), "endpoints[0].addresses", "InvalidAddress")
    many = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(101)]
    assert_rejected(convert_object(make_slice([{"addresses": many}])), "endpoints[0].addresses", "InvalidAddress")
    assert_accepted(convert_object(make_slice([{"addresses": many[:100]}])))


def test_conditions_must_be_booleans() -> None:
    result = convert_object(make_slice([{"addresses": ["10.0.0.1"], "conditions": {"ready": "true"}}]))
    assert_rejected(result, "endpoints[0].conditions.ready", "InvalidType")


def test_slice_ports_may_be_null_meaning_all_ports() -> None:
    result = assert_accepted(convert_object(make_slice(ports=[{"name": "", "port": None}])))
    assert result.ports == (EndpointPort(0, "", "TCP"),)


@pytest.mark.parametrize(
    ("ports", "field"),
    [
        ([{"name": "http", "port": 65536}], "ports[0].port"),
        ([{"name": "http", "port": -1}], "ports[0].port"),
        ([{"name": "Http", "port": 80}], "ports[0].name"),
        ([{"name": "http", "port": 80}, {"name": "http", "port": 81}], "ports[1].name"),
        ([{"name": "http", "port": 80, "protocol": "QUIC"}], "ports[0].protocol"),
    ],
)
def test_invalid_slice_ports_are_rejected(ports: Any, field: str) -> None:
    assert_rejected(convert_object(make_slice(ports=ports)), field)


# --- Secret -------------------------------------------------------------------------------------------------


def test_a_tls_secret_decodes_its_data() -> None:
    result = convert_object(
        {**make_secret(), "metadata": {"name": "cert", "namespace": "apps", "resourceVersion": "3"}}
    )
    assert result.obj == TLSSecret(ObjectKey("apps", "cert"), b"CERT", b"KEY", "3")


def test_string_data_overrides_data_per_key() -> None:
    result = convert_object(make_secret(stringData={"tls.key": "PLAIN KEY"}))
    secret = assert_accepted(result)
    assert (secret.cert_pem, secret.key_pem) == (b"CERT", b"PLAIN KEY")
    only_string = assert_accepted(convert_object(make_secret(data={}, stringData={"tls.crt": "C", "tls.key": "K"})))
    assert (only_string.cert_pem, only_string.key_pem) == (b"C", b"K")


def test_base64_data_may_be_wrapped_over_lines() -> None:
    wrapped = b64(b"x" * 100)
    wrapped = wrapped[:40] + "\n" + wrapped[40:] + "\n"
    secret = assert_accepted(convert_object(make_secret(data={"tls.crt": wrapped, "tls.key": ""})))
    assert secret.cert_pem == b"x" * 100


@pytest.mark.parametrize("value", ["not base64!", "QUJDRA", "QUJ", "é", 12])
def test_bad_base64_is_rejected(value: Any) -> None:
    result = convert_object(make_secret(data={"tls.crt": value, "tls.key": b64(b"K")}))
    assert_rejected(result, "data[tls.crt]")


@pytest.mark.parametrize("missing", ["tls.crt", "tls.key"])
def test_a_tls_secret_needs_both_keys(missing: str) -> None:
    data = {"tls.crt": b64(b"C"), "tls.key": b64(b"K")}
    del data[missing]
    assert_rejected(convert_object(make_secret(data=data)), f"data[{missing}]", "InvalidSecretData")


def test_secret_data_keys_must_be_valid() -> None:
    data = {"tls.crt": b64(b"C"), "tls.key": b64(b"K"), "bad key": b64(b"x")}
    assert_rejected(convert_object(make_secret(data=data)), "data[bad key]", "InvalidSecretData")


def test_pem_content_is_not_validated_here() -> None:
    secret = assert_accepted(convert_object(make_secret(data={"tls.crt": "", "tls.key": ""})))
    assert (secret.cert_pem, secret.key_pem) == (b"", b"")


# --- structural garbage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({**make_ingress(), "spec": [1]}, "spec"),
        ({**make_ingress(), "metadata": ["web"]}, "metadata"),
        (make_ingress({"rules": "a.example.com"}), "spec.rules"),
        (make_ingress({"rules": ["a.example.com"]}), "spec.rules[0]"),
        (make_ingress({"rules": [{"http": []}]}), "spec.rules[0].http"),
        (make_ingress({"rules": [{"http": {"paths": {"/": "web"}}}]}), "spec.rules[0].http.paths"),
        (with_path(backend={"service": "web"}), "spec.rules[0].http.paths[0].backend.service"),
        (with_backend({"service": {"name": "web", "port": "80"}}), "spec.defaultBackend.service.port"),
        (with_backend("web"), "spec.defaultBackend"),
        (make_ingress({"defaultBackend": SERVICE_BACKEND, "tls": {"hosts": []}}), "spec.tls"),
        (make_ingress({"defaultBackend": SERVICE_BACKEND, "tls": [{"hosts": "a"}]}), "spec.tls[0].hosts"),
        (make_service({"ports": "80"}), "spec.ports"),
        (make_service({"ports": [80]}), "spec.ports[0]"),
        (make_slice(endpoints={"addresses": []}), "endpoints"),
        (make_slice(endpoints=[{"addresses": "10.0.0.1"}]), "endpoints[0].addresses"),
        (make_slice(endpoints=[{"addresses": [10]}]), "endpoints[0].addresses[0]"),
        (make_slice(endpoints=[{"addresses": ["10.0.0.1"], "conditions": True}]), "endpoints[0].conditions"),
        (make_slice(ports=[8080]), "ports[0]"),
        (make_secret(data=["tls.crt"]), "data"),
        (make_ingress(annotations=["a=b"]), "metadata.annotations"),
    ],
)
def test_structural_garbage_is_rejected_with_its_field(raw: Raw, field: str) -> None:
    assert_rejected(convert_object(raw), field)


_VOCABULARY = [
    "metadata", "name", "namespace", "spec", "rules", "host", "http", "paths", "path", "pathType", "backend",
    "service", "port", "number", "resource", "kind", "apiGroup", "tls", "hosts", "secretName", "defaultBackend",
    "ingressClassName", "annotations", "labels", "creationTimestamp", "ports", "targetPort", "protocol", "type",
    "externalName", "clusterIP", "controller", "addressType", "endpoints", "addresses", "conditions", "ready",
    "data", "stringData", "tls.crt", "tls.key", "kubernetes.io/service-name", "generation", "resourceVersion",
]  # fmt: skip

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["/", "Prefix", "Exact", "IPv4", "IPv6", "FQDN", "127.0.0.1", "::1", "a.b", "*.a.b", "QUJD"]),
    st.datetimes(),
    st.dates(),
)

_JUNK = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(_VOCABULARY), st.text(max_size=5), st.integers()), children, max_size=5
        ),
    ),
    max_leaves=30,
)

_KINDS = [
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "IngressClass"),
    ("v1", "Service"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    api=st.sampled_from(_KINDS),
    body=st.dictionaries(st.sampled_from(_VOCABULARY), _JUNK, max_size=6),
    secret_type=st.sampled_from(["kubernetes.io/tls", "Opaque", 3]),
    allow_loopback=st.booleans(),
)
def test_random_nested_junk_never_raises(
    api: tuple[str, str], body: Raw, secret_type: Any, allow_loopback: bool
) -> None:
    raw = {**body, "apiVersion": api[0], "kind": api[1], "type": secret_type}
    result = convert_object(raw, allow_loopback=allow_loopback)
    assert isinstance(result, Converted)
    if any(p.rejected for p in result.problems):
        assert result.obj is None


@settings(max_examples=100, deadline=None)
@given(raw=_JUNK)
def test_random_junk_documents_never_raise(raw: Any) -> None:
    assert isinstance(convert_object(raw), Converted)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.sampled_from(
        [
            ("spec",),
            ("spec", "rules", 0),
            ("spec", "rules", 0, "http", "paths", 0),
            ("spec", "rules", 0, "http", "paths", 0, "backend", "service"),
            ("spec", "rules", 0, "http", "paths", 0, "backend", "service", "port"),
            ("metadata",),
        ]
    ),
    key=st.sampled_from(_VOCABULARY),
    junk=_JUNK,
)
def test_junk_planted_in_a_valid_ingress_never_raises(where: tuple[str | int, ...], key: str, junk: Any) -> None:
    raw = make_ingress()
    node: Any = raw
    for step in where:
        node = node[step]
    node[key] = junk
    result = convert_object(raw)
    assert result.kind is Kind.INGRESS
    assert (result.obj is None) == any(p.rejected for p in result.problems)


# --- static endpoints (manifests mode) ------------------------------------------------------------------


def static_service(addresses: str | None, ports: tuple[ServicePort, ...] = (ServicePort(80, "http"),)) -> Service:
    annotations = {} if addresses is None else {"fastingress.io/endpoints": addresses}
    return Service(ObjectKey("apps", "web"), ports=ports, annotations=annotations)


def test_a_service_without_the_annotation_has_no_static_endpoints() -> None:
    assert static_endpoint_slice(static_service(None)) == (None, ())


def test_static_endpoints_become_a_ready_slice_named_after_the_service() -> None:
    ports = (ServicePort(80, "http", 8080), ServicePort(443, "https"), ServicePort(53, "dns", 0, "UDP"))
    endpoint_slice, problems = static_endpoint_slice(static_service("127.0.0.1, 127.0.0.2\n 10.0.0.3,", ports))
    assert problems == ()
    assert endpoint_slice == EndpointSlice(
        key=ObjectKey("apps", "web-fastingress-static"),
        service="web",
        address_type="IPv4",
        ports=(EndpointPort(8080, "http"), EndpointPort(443, "https"), EndpointPort(53, "dns", "UDP")),
        endpoints=(Endpoint(("127.0.0.1",)), Endpoint(("127.0.0.2",)), Endpoint(("10.0.0.3",))),
    )
    assert all(e.ready and e.serving and not e.terminating for e in endpoint_slice.endpoints)


def test_static_endpoints_may_be_ipv6() -> None:
    endpoint_slice, problems = static_endpoint_slice(static_service("::1 2001:db8::7"))
    assert problems == ()
    assert endpoint_slice is not None
    assert endpoint_slice.address_type == "IPv6"
    assert [e.addresses for e in endpoint_slice.endpoints] == [("::1",), ("2001:db8::7",)]


@pytest.mark.parametrize("addresses", ["127.0.0.1, ::1", "127.0.0.1, web.local", "", " , ", "0.0.0.0", "224.0.0.1"])
def test_invalid_static_endpoints_are_a_problem(addresses: str) -> None:
    endpoint_slice, problems = static_endpoint_slice(static_service(addresses), origin="site.yaml:4")
    assert endpoint_slice is None
    (problem,) = problems
    assert (problem.kind, problem.key, problem.reason, problem.rejected, problem.origin) == (
        Kind.SERVICE,
        ObjectKey("apps", "web"),
        "InvalidStaticEndpoints",
        False,
        "site.yaml:4",
    )
    assert problem.field == "metadata.annotations[fastingress.io/endpoints]"


def test_a_named_target_port_cannot_be_resolved_statically_and_is_skipped() -> None:
    ports = (ServicePort(80, "http", "web"), ServicePort(81, "admin", 9000))
    endpoint_slice, problems = static_endpoint_slice(static_service("127.0.0.1", ports))
    assert endpoint_slice is not None
    assert endpoint_slice.ports == (EndpointPort(9000, "admin"),)
    (problem,) = problems
    assert (problem.field, problem.reason) == ("spec.ports[0].targetPort", "InvalidStaticEndpoints")


def test_static_endpoints_from_a_converted_service() -> None:
    raw = make_service(
        {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        annotations={"fastingress.io/endpoints": "127.0.0.5"},
    )
    endpoint_slice, _ = static_endpoint_slice(assert_accepted(convert_object(raw)))
    assert endpoint_slice is not None
    assert endpoint_slice.ports == (EndpointPort(8080, "http"),)
