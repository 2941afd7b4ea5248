"""IngressClass selection: which Ingresses are ours (design.md section 3).

An Ingress is ours when spec.ingressClassName names a class we own; else, when it has no
ingressClassName, when the legacy annotation `kubernetes.io/ingress.class` names one; else, when it
names no class at all, when the cluster's single default IngressClass is ours. With several default
classes the API server's admission refuses to pick one, so neither do we.

Ingresses that are not ours are dropped silently: they belong to another controller, so they are not
problems. Must not: log, or look at anything but classes and the class fields of Ingresses.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastingress.compiler.conflicts import precedence_key
from fastingress.compiler.options import CompileOptions
from fastingress.model.objects import Ingress, IngressClass, Snapshot


def compile_owned_classes(classes: Mapping[str, IngressClass], options: CompileOptions) -> frozenset[str]:
    """Names of the classes we own: those with our controller, plus the configured name if absent."""
    owned = {name for name, cls in classes.items() if cls.controller == options.controller_name}
    if options.ingress_class not in classes:
        owned.add(options.ingress_class)
    return frozenset(owned)


def is_default_class_ours(classes: Mapping[str, IngressClass], owned: frozenset[str]) -> bool:
    """True when exactly one IngressClass in the cluster is the default and it is ours."""
    defaults = [name for name, cls in classes.items() if cls.is_default]
    return len(defaults) == 1 and defaults[0] in owned


def is_ours(ingress: Ingress, owned: frozenset[str], default_is_ours: bool) -> bool:
    """Class rule for one Ingress; the spec field beats the legacy annotation, as in Kubernetes."""
    if ingress.class_name is not None:
        return ingress.class_name in owned
    if ingress.class_annotation is not None:
        return ingress.class_annotation in owned
    return default_is_ours


def select_ingresses(snapshot: Snapshot, options: CompileOptions) -> list[Ingress]:
    """Our Ingresses, oldest first (precedence order)."""
    owned = compile_owned_classes(snapshot.classes, options)
    default_is_ours = is_default_class_ours(snapshot.classes, owned)
    ours = [ing for ing in snapshot.ingresses.values() if is_ours(ing, owned, default_is_ours)]
    return sorted(ours, key=precedence_key)
