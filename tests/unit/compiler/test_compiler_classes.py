"""Class selection: which Ingresses the compiler treats as ours (design.md section 3, IngressClass)."""

from __future__ import annotations

from fastingress.compiler import CompileOptions, compile_config
from fastingress.model.objects import Ingress, IngressClass
from tests.unit.compiler.builders import ingress, ingress_class, path, rule, service, snapshot

OTHER = "example.com/other-controller"
DEFAULT = CompileOptions()
Obj = Ingress | IngressClass


def _ours(*objects: Ingress | IngressClass, options: CompileOptions = DEFAULT) -> set[str]:
    """Names of the Ingresses that produced routes."""
    config, _ = compile_config(snapshot(service(), *objects), options)
    return {r.ingress.name for vh in config.vhosts for r in vh.routes}


def _ing(name: str, class_name: str | None, class_annotation: str | None = None) -> Ingress:
    return ingress(name, rule(f"{name}.example.com", path("/")), class_name=class_name,
                   class_annotation=class_annotation)


def test_class_name_names_a_class_with_our_controller() -> None:
    objs: list[Obj] = [ingress_class("mine"), ingress_class("theirs", OTHER),
            _ing("a", class_name="mine"), _ing("b", class_name="theirs")]
    assert _ours(*objs) == {"a"}


def test_legacy_annotation_is_used_only_without_class_name() -> None:
    objs: list[Obj] = [ingress_class("mine"), ingress_class("theirs", OTHER),
            _ing("a", class_name=None, class_annotation="mine"),
            _ing("b", class_name="theirs", class_annotation="mine"),  # spec field wins
            _ing("c", class_name=None, class_annotation="theirs")]
    assert _ours(*objs) == {"a"}


def test_configured_class_name_is_ours_when_no_such_ingressclass_exists() -> None:
    assert _ours(_ing("a", class_name="fastingress"), _ing("b", class_name="nginx")) == {"a"}
    assert _ours(_ing("a", class_name="custom"), options=CompileOptions(ingress_class="custom")) == {"a"}


def test_existing_ingressclass_of_configured_name_with_other_controller_wins() -> None:
    assert _ours(ingress_class("fastingress", OTHER), _ing("a", class_name="fastingress")) == set()


def test_configured_controller_name_selects_classes() -> None:
    objs: list[Obj] = [ingress_class("x", "acme.io/ctl"), _ing("a", class_name="x")]
    assert _ours(*objs) == set()
    assert _ours(*objs, options=CompileOptions(controller_name="acme.io/ctl")) == {"a"}


def test_classless_ingress_is_ours_when_our_class_is_the_single_default() -> None:
    assert _ours(ingress_class("mine", default=True), _ing("a", class_name=None)) == {"a"}


def test_classless_ingress_is_not_ours_without_a_default_or_with_a_foreign_default() -> None:
    assert _ours(ingress_class("mine"), _ing("a", class_name=None)) == set()
    assert _ours(ingress_class("theirs", OTHER, default=True), _ing("a", class_name=None)) == set()


def test_several_default_classes_make_no_default() -> None:
    assert _ours(ingress_class("mine", default=True), ingress_class("theirs", OTHER, default=True),
                 _ing("a", class_name=None), _ing("b", class_name="mine")) == {"b"}
    assert _ours(ingress_class("mine", default=True), ingress_class("mine2", default=True),
                 _ing("a", class_name=None)) == set()


def test_ingresses_not_ours_are_ignored_silently() -> None:
    config, problems = compile_config(snapshot(
        ingress_class("theirs", OTHER),
        ingress("x", rule("a.example.com", path("/", service="missing")), class_name="theirs"),
    ))
    assert config.vhosts == () and config.upstreams == ()
    assert problems == []
