"""Hosts, paths, route order, merging and conflicts (design.md section 3, Hosts/Paths/Merging)."""

from __future__ import annotations

import pytest

from fastingress.compiler import compile_config
from fastingress.compiler.routes import normalize_rule_path
from fastingress.compiler.types import MATCH_EXACT, MATCH_PREFIX, CompiledConfig, Route
from fastingress.model.objects import Ingress, Kind, ObjectKey
from fastingress.model.problems import Problem
from tests.unit.compiler.builders import ingress, path, rule, service, snapshot
from tests.unit.compiler.reference import path_matches, reference_match, select_vhost


def _compile(*ingresses: Ingress) -> tuple[CompiledConfig, list[Problem]]:
    return compile_config(snapshot(service("web"), service("api"), *ingresses))


def _hit(config: CompiledConfig, host: str, p: str) -> str | None:
    """Which rule_path (or "default") a request takes; None for a 404."""
    route = reference_match(config, host, p)
    if route is None:
        return None
    return "default" if route.match == -1 else f"{route.rule_host}{route.rule_path}"


def _first_in_order(config: CompiledConfig, host: str, p: str) -> Route | None:
    """What a lookup relying on the compiler's order takes: must agree with the reference."""
    vhost = select_vhost(config, host)
    if vhost is None:
        return None
    return next((r for r in vhost.routes if path_matches(r, p)), vhost.default)


def test_exact_host_beats_wildcard_and_wildcard_matches_one_label() -> None:
    config, _ = _compile(ingress("i", rule("*.foo.com", path("/")), rule("bar.foo.com", path("/")),
                                 rule("", path("/"))))
    assert _hit(config, "bar.foo.com", "/") == "bar.foo.com/"
    assert _hit(config, "baz.foo.com", "/") == "*.foo.com/"
    assert _hit(config, "foo.com", "/") == "/"  # not the wildcard: falls to the host-less rule
    assert _hit(config, "a.baz.foo.com", "/") == "/"  # two extra labels: not the wildcard
    assert [vh.host for vh in config.vhosts] == ["", "*.foo.com", "bar.foo.com"]


def test_no_fall_through_from_a_selected_host() -> None:
    config, _ = _compile(ingress("i", rule("a.com", path("/x")), rule("", path("/"))))
    assert _hit(config, "a.com", "/y") is None
    assert _hit(config, "b.com", "/y") == "/"


def test_prefix_matches_by_elements() -> None:
    config, _ = _compile(ingress("i", rule("a.com", path("/foo"))))
    for p in ("/foo", "/foo/", "/foo/bar"):
        assert _hit(config, "a.com", p) == "a.com/foo"
    assert _hit(config, "a.com", "/foobar") is None
    assert _hit(config, "a.com", "/") is None


def test_prefix_trailing_slash_is_ignored_and_root_is_empty() -> None:
    config, _ = _compile(ingress("i", rule("a.com", path("/foo/"), path("/"))))
    assert [(r.path, r.match, r.rule_path) for r in config.vhosts[0].routes] == [
        ("/foo", MATCH_PREFIX, "/foo/"), ("", MATCH_PREFIX, "/")]
    assert _hit(config, "a.com", "/foo") == "a.com/foo/"
    assert _hit(config, "a.com", "/anything") == "a.com/"


def test_exact_keeps_trailing_slash_and_matches_whole_path() -> None:
    config, _ = _compile(ingress("i", rule("a.com", path("/foo/", "Exact"), path("/bar", "Exact"))))
    assert {r.path for r in config.vhosts[0].routes} == {"/foo/", "/bar"}
    assert _hit(config, "a.com", "/foo/") == "a.com/foo/"
    assert _hit(config, "a.com", "/foo") is None
    assert _hit(config, "a.com", "/bar/") is None


def test_exact_beats_prefix_on_equal_length_and_longest_wins() -> None:
    config, _ = _compile(ingress("i", rule(
        "a.com", path("/", "Prefix", port=80), path("/foo", "Prefix"), path("/foo", "Exact", "api"),
        path("/foo/bar", "Prefix"))))
    routes = config.vhosts[0].routes
    assert [(r.path, r.match) for r in routes] == [
        ("/foo/bar", MATCH_PREFIX), ("/foo", MATCH_EXACT), ("/foo", MATCH_PREFIX), ("", MATCH_PREFIX)]
    assert reference_match(config, "a.com", "/foo") == routes[1]
    assert reference_match(config, "a.com", "/foo/") == routes[2]
    assert reference_match(config, "a.com", "/foo/bar/baz") == routes[0]
    assert reference_match(config, "a.com", "/other") == routes[3]
    for p in ("/foo", "/foo/", "/foo/bar", "/foo/bar/x", "/", "/f"):
        assert _first_in_order(config, "a.com", p) == reference_match(config, "a.com", p)


@pytest.mark.parametrize(("raw", "expected"), [
    ("/a//b/./c/../d/", ("/a/b/d", MATCH_PREFIX)),
    ("/./", ("", MATCH_PREFIX)),
    ("/a/..", ("", MATCH_PREFIX)),
    ("/%7Euser/%2f", ("/~user/%2F", MATCH_PREFIX)),
    ("/..", None),
    ("/a/../..", None),
    ("/%zz", None),
])
def test_implementation_specific_is_normalised_prefix(raw: str, expected: tuple[str, int] | None) -> None:
    assert normalize_rule_path(raw, "ImplementationSpecific") == expected


def test_implementation_specific_climbing_above_root_is_a_problem_and_skipped() -> None:
    config, problems = _compile(ingress("i", rule("a.com", path("/ok", "ImplementationSpecific"),
                                                  path("/../x", "ImplementationSpecific"))))
    assert [r.path for r in config.vhosts[0].routes] == ["/ok"]
    assert [(p.reason, p.field) for p in problems] == [("InvalidPath", "spec.rules[0].http.paths[1].path")]


def test_rules_for_one_host_merge_across_namespaces() -> None:
    config, problems = compile_config(snapshot(
        service("web", ns="n1"), service("web", ns="n2"),
        ingress("a", rule("a.com", path("/x")), ns="n1"),
        ingress("b", rule("a.com", path("/y")), ns="n2"),
    ))
    assert problems == []
    assert [(r.path, r.ingress, r.upstream) for r in config.vhosts[0].routes] == [
        ("/x", ObjectKey("n1", "a"), "n1/web:80"), ("/y", ObjectKey("n2", "b"), "n2/web:80")]


def test_conflict_oldest_wins_by_creation_time() -> None:
    old = ingress("zzz", rule("a.com", path("/foo/", service="api")), created="2024-01-01T00:00:00Z")
    new = ingress("aaa", rule("a.com", path("/foo")), created="2024-02-01T00:00:00Z")
    config, problems = _compile(new, old)
    (route,) = config.vhosts[0].routes
    assert route.ingress.name == "zzz" and route.upstream == "default/api:80"
    assert problems == [Problem(
        kind=Kind.INGRESS, key=ObjectKey("default", "aaa"), field="spec.rules[0].http.paths[0].path",
        reason="ConflictLost", message=problems[0].message)]
    assert "default/zzz" in problems[0].message


def test_conflict_without_times_goes_by_seq_then_namespace_then_name() -> None:
    config, problems = _compile(ingress("b", rule("a.com", path("/")), seq=1),
                                ingress("c", rule("a.com", path("/")), seq=2))
    assert config.vhosts[0].routes[0].ingress.name == "b"
    config, problems = _compile(ingress("b", rule("a.com", path("/"))), ingress("a", rule("a.com", path("/"))))
    assert config.vhosts[0].routes[0].ingress.name == "a"
    assert [p.key.name for p in problems] == ["b"]
    # a known creation time beats an unknown one
    config, _ = _compile(ingress("a", rule("a.com", path("/"))),
                         ingress("b", rule("a.com", path("/")), created="2030-01-01T00:00:00Z"))
    assert config.vhosts[0].routes[0].ingress.name == "b"


def test_exact_and_prefix_of_the_same_path_do_not_conflict() -> None:
    config, problems = _compile(ingress("a", rule("a.com", path("/foo", "Exact"))),
                                ingress("b", rule("a.com", path("/foo", "Prefix"))))
    assert problems == [] and len(config.vhosts[0].routes) == 2


def test_conflict_within_one_ingress_keeps_the_first_entry() -> None:
    config, problems = _compile(ingress("a", rule("a.com", path("/foo", service="api")),
                                        rule("a.com", path("/foo/"))))
    assert config.vhosts[0].routes[0].upstream == "default/api:80"
    assert [(p.field, p.reason) for p in problems] == [("spec.rules[1].http.paths[0].path", "ConflictLost")]


def test_routes_record_where_they_came_from() -> None:
    config, _ = _compile(ingress("a", rule("*.a.com", path("/x/", "ImplementationSpecific"))))
    (route,) = config.vhosts[0].routes
    assert (route.rule_host, route.rule_path, route.path_type, route.path) == (
        "*.a.com", "/x/", "ImplementationSpecific", "/x")
