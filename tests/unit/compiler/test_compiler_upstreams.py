"""Backends -> Upstreams and EndpointSlices -> endpoints (design.md section 3, Backends)."""

from __future__ import annotations

from fastingress.compiler import compile_config, compile_endpoints
from fastingress.compiler.types import CompiledConfig, Endpoint, Upstream, UpstreamEndpoints
from fastingress.model.objects import (
    Backend,
    EndpointPort,
    EndpointSlice,
    Ingress,
    IngressPath,
    ObjectKey,
    Service,
    ServicePort,
)
from fastingress.model.problems import Problem
from tests.unit.compiler.builders import endpoint_slice, endpoints, ingress, path, rule, service, snapshot

WEB = service("web", ServicePort(port=80, name="http", target_port=8080),
              ServicePort(port=9090, name="metrics", target_port="metrics"))


def _compile(*objs: Ingress | Service | EndpointSlice) -> tuple[CompiledConfig, list[Problem]]:
    return compile_config(snapshot(*objs))


def _one(*paths: IngressPath, objs: tuple[Service | EndpointSlice, ...] = (WEB,)
         ) -> tuple[CompiledConfig, list[Problem]]:
    return _compile(ingress("i", rule("a.com", *paths)), *objs)


def test_port_by_number_and_by_name_give_the_same_upstream() -> None:
    config, problems = _one(path("/a", port=80), path("/b", port="http"), path("/c", port="metrics"))
    assert problems == []
    assert config.upstreams == (
        Upstream(name="default/web:80", service=ObjectKey("default", "web"), port=80, port_name="http"),
        Upstream(name="default/web:9090", service=ObjectKey("default", "web"), port=9090, port_name="metrics"),
    )
    assert {r.path: r.upstream for r in config.vhosts[0].routes} == {
        "/a": "default/web:80", "/b": "default/web:80", "/c": "default/web:9090"}


def test_missing_service_gives_an_error_upstream_and_a_problem() -> None:
    config, problems = _one(path("/a", service="gone", port=80), path("/b", service="gone", port="http"))
    assert [(u.name, u.error) for u in config.upstreams] == [
        ("default/gone:80", "ServiceNotFound"), ("default/gone:http", "ServiceNotFound")]
    assert len(config.vhosts[0].routes) == 2  # the routes stay (503), nothing falls through
    assert [(p.reason, p.field) for p in problems] == [
        ("ServiceNotFound", "spec.rules[0].http.paths[0].backend.service.name"),
        ("ServiceNotFound", "spec.rules[0].http.paths[1].backend.service.name")]
    assert config.endpoints == (UpstreamEndpoints(), UpstreamEndpoints())


def test_missing_port_by_number_or_name_gives_port_not_found() -> None:
    config, problems = _one(path("/a", port=81), path("/b", port="grpc"))
    assert [(u.name, u.error) for u in config.upstreams] == [
        ("default/web:81", "PortNotFound"), ("default/web:grpc", "PortNotFound")]
    assert [(p.reason, p.field) for p in problems] == [
        ("PortNotFound", "spec.rules[0].http.paths[0].backend.service.port.number"),
        ("PortNotFound", "spec.rules[0].http.paths[1].backend.service.port.name")]


def test_resource_backend_routes_nowhere_with_a_problem() -> None:
    res = ingress("i", rule("a.com", IngressPath(
        path="/", path_type="Prefix", backend=Backend(resource="example.com/Bucket/static"))))
    config, problems = _compile(res)
    assert config.vhosts[0].routes[0].upstream == "" and config.upstreams == ()
    assert [p.reason for p in problems] == ["UnsupportedBackend"]


def test_only_referenced_upstreams_sorted_and_unique() -> None:
    config, _ = _compile(WEB, service("api"), service("unused"),
                         ingress("b", rule("b.com", path("/", service="web"))),
                         ingress("a", rule("a.com", path("/", service="api"), path("/x", service="web"))))
    assert [u.name for u in config.upstreams] == ["default/api:80", "default/web:80"]


def test_ready_endpoints_from_every_slice_of_the_service_sorted_and_unique() -> None:
    config, _ = _one(path("/"), objs=(
        WEB,
        endpoint_slice("web-2", "web", endpoints("10.0.0.2"), endpoints("10.0.0.9", ready=False, serving=False)),
        endpoint_slice("web-1", "web", endpoints("10.0.0.1", "10.0.0.2")),
        endpoint_slice("other", "api", endpoints("10.9.9.9")),
        endpoint_slice("web-x", "web", endpoints("10.0.0.7"), ns="elsewhere"),
    ))
    assert config.endpoints == (UpstreamEndpoints(
        endpoints=(Endpoint("10.0.0.1", 8080), Endpoint("10.0.0.2", 8080))),)


def test_slice_port_is_chosen_by_the_service_port_name() -> None:
    metrics = EndpointSlice(key=ObjectKey("default", "w"), service="web", ports=(
        EndpointPort(port=8080, name="http"), EndpointPort(port=9100, name="metrics")),
        endpoints=(endpoints("10.0.0.1"),))
    config, _ = _one(path("/", port=9090), objs=(WEB, metrics))
    assert config.endpoints[0].endpoints == (Endpoint("10.0.0.1", 9100),)


def test_unnamed_single_port_matches_unnamed_slice_port() -> None:
    svc = service("api", ServicePort(port=80))
    config, _ = _one(path("/", service="api"),
                     objs=(svc, endpoint_slice("a", "api", endpoints("10.0.0.3"), port=3000, port_name="")))
    assert config.upstreams[0].port_name == ""
    assert config.endpoints[0].endpoints == (Endpoint("10.0.0.3", 3000),)


def test_terminating_serving_endpoints_are_a_last_resort_only() -> None:
    slices = (endpoint_slice("a", "web", endpoints("10.0.0.5", ready=False, terminating=True),
                             endpoints("10.0.0.6", ready=False, serving=False, terminating=True)),)
    config, problems = _one(path("/"), objs=(WEB, *slices))
    assert config.endpoints == (UpstreamEndpoints(endpoints=(Endpoint("10.0.0.5", 8080),), last_resort=True),)
    with_ready = (*slices, endpoint_slice("b", "web", endpoints("10.0.0.1")))
    config, _ = _one(path("/"), objs=(WEB, *with_ready))
    assert config.endpoints == (UpstreamEndpoints(endpoints=(Endpoint("10.0.0.1", 8080),)),)
    assert problems == []


def test_no_slices_is_empty_and_not_a_problem() -> None:
    config, problems = _one(path("/"))
    assert config.endpoints == (UpstreamEndpoints(),) and problems == []


def test_fqdn_addresses_are_kept() -> None:
    config, _ = _one(path("/"), objs=(WEB, endpoint_slice("f", "web", endpoints("db.example.org"),
                                                         address_type="FQDN")))
    assert config.endpoints[0].endpoints == (Endpoint("db.example.org", 8080),)


def test_external_name_service_needs_no_endpoints() -> None:
    ext = service("ext", ServicePort(port=443, name="https"), type="ExternalName", external_name="api.example.org")
    bare = service("bare", ServicePort(port=1), type="ExternalName", external_name="b.example.org")
    bare = Service(key=bare.key, type=bare.type, external_name=bare.external_name, ports=())
    config, problems = _one(path("/a", service="ext", port="https"), path("/b", service="bare", port=8443),
                            objs=(ext, bare))
    assert problems == []
    assert [(u.name, u.port, u.external_name, u.error) for u in config.upstreams] == [
        ("default/bare:8443", 8443, "b.example.org", ""), ("default/ext:443", 443, "api.example.org", "")]
    assert config.endpoints == (UpstreamEndpoints(), UpstreamEndpoints())


def test_compile_endpoints_alone_matches_the_full_compile() -> None:
    snap = snapshot(WEB, ingress("i", rule("a.com", path("/"))), endpoint_slice("s", "web", endpoints("10.0.0.1")))
    config, _ = compile_config(snap)
    assert compile_endpoints(snap, config.upstreams) == config.endpoints
