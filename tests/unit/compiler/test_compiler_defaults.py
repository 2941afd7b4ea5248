"""Default backends: per host, global (rule-less Ingress), catch-all (design.md section 3)."""

from __future__ import annotations

from fastingress.compiler import compile_config
from fastingress.compiler.types import CompiledConfig, Route
from fastingress.model.objects import Ingress
from tests.unit.compiler.builders import backend, ingress, path, rule, service, snapshot
from tests.unit.compiler.reference import reference_match


def _compile(*ingresses: Ingress) -> CompiledConfig:
    config, _ = compile_config(snapshot(*(service(n) for n in ("web", "api", "glob", "catch")), *ingresses))
    return config


def _defaults(config: CompiledConfig) -> dict[str, str | None]:
    return {vh.host: vh.default.upstream if vh.default else None for vh in config.vhosts}


def test_host_default_is_the_oldest_ingress_with_that_host_and_a_default() -> None:
    config = _compile(
        ingress("new", rule("a.com", path("/x")), default=backend("web"), created="2024-02-01T00:00:00Z"),
        ingress("old", rule("a.com", path("/y")), default=backend("api"), created="2024-01-01T00:00:00Z"),
        ingress("older", rule("a.com", path("/z")), created="2023-01-01T00:00:00Z"),  # no default
    )
    assert _defaults(config) == {"a.com": "default/api:80"}
    default = config.vhosts[0].default
    assert default is not None
    assert default == Route(path="", match=-1, upstream="default/api:80", ingress=default.ingress,
                            rule_host="", rule_path="", path_type="")
    assert default.ingress.name == "old"
    assert reference_match(config, "a.com", "/nope") == default


def test_global_default_is_the_oldest_ruleless_ingress_and_fills_hosts_without_one() -> None:
    config = _compile(
        ingress("g2", default=backend("web"), seq=2),
        ingress("g1", default=backend("glob"), seq=1),
        ingress("h", rule("a.com", path("/x")), rule("b.com", path("/x")), default=backend("api"), seq=3),
        ingress("k", rule("c.com", path("/x")), seq=4),
    )
    # "h" has rules, so its default serves only its own hosts; "" exists because of the global default
    assert _defaults(config) == {"": "default/glob:80", "a.com": "default/api:80",
                                 "b.com": "default/api:80", "c.com": "default/glob:80"}
    assert reference_match(config, "unknown.org", "/") == config.vhosts[0].default


def test_catch_all_prefers_an_ingress_with_hostless_rules() -> None:
    config = _compile(
        ingress("g", default=backend("glob"), seq=1),
        ingress("c", rule("", path("/x")), default=backend("catch"), seq=2),
    )
    assert _defaults(config) == {"": "default/catch:80"}


def test_catch_all_without_its_own_default_uses_the_global_one() -> None:
    config = _compile(ingress("c", rule("", path("/x")), seq=2), ingress("g", default=backend("glob"), seq=1))
    assert _defaults(config) == {"": "default/glob:80"}


def test_no_default_anywhere_is_a_404() -> None:
    config = _compile(ingress("a", rule("a.com", path("/x"))))
    assert _defaults(config) == {"a.com": None}
    assert reference_match(config, "a.com", "/y") is None
    assert reference_match(config, "b.com", "/y") is None  # no catch-all vhost at all


def test_host_with_no_paths_still_uses_its_default() -> None:
    config = _compile(ingress("a", rule("a.com"), default=backend("api")))
    assert _defaults(config) == {"a.com": "default/api:80"}
    assert config.vhosts[0].routes == ()
