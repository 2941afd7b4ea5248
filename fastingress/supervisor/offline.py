"""The control-plane pipeline run once, offline: manifests -> Store -> compile -> emit -> in-memory table.

`fastingress check`, `routes` and `explain` use this, so what they show is produced by the same
compiler and looked up by the same table code the workers run; only the shared memory is left out.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from fastingress.compiler import CompileOptions, compile_config
from fastingress.compiler.emit import emit_endpoints, emit_routes
from fastingress.compiler.types import CompiledConfig
from fastingress.model import Problem
from fastingress.model.objects import ObjectKey
from fastingress.model.store import Change, Store
from fastingress.settings import Settings
from fastingress.sources.manifests import load_manifests
from fastingress.table.lookup import EndpointTable, RouteTable, TableView


class OfflineBuild(msgspec.Struct, frozen=True, dict=False):
    """A compiled manifests directory: config, every problem (source and compiler), and its table."""

    config: CompiledConfig
    problems: list[Problem]
    view: TableView


def compile_options(settings: Settings, now: int | None = None) -> CompileOptions:
    return CompileOptions(controller_name=settings.controller_name, ingress_class=settings.ingress_class,
                          now=int(time.time()) if now is None else now,
                          default_tls_secret=default_tls_secret_key(settings))


def default_tls_secret_key(settings: Settings) -> ObjectKey | None:
    """FASTINGRESS_DEFAULT_TLS_SECRET ("namespace/name", checked by Settings.check) as an ObjectKey."""
    if not settings.default_tls_secret:
        return None
    namespace, _, name = settings.default_tls_secret.partition("/")
    return ObjectKey(namespace, name)


def build_from_manifests(directory: str | Path, settings: Settings, now: int | None = None) -> OfflineBuild:
    """Load, compile and emit a manifests directory (raises SourceError when it cannot be read)."""
    manifests = load_manifests(directory)
    store = Store()
    for (kind, key), obj in manifests.objects.items():
        store.apply(Change(kind=kind, key=key, obj=obj))
    config, compile_problems = compile_config(store.snapshot(), compile_options(settings, now))
    # compiler problems name objects, not files: point them at where the object was written
    located = [p if p.origin else msgspec.structs.replace(p, origin=manifests.origins.get((p.kind, p.key), ""))
               for p in compile_problems]
    problems = sorted([*manifests.problems, *located], key=problem_sort_key)
    view = TableView(RouteTable(emit_routes(config)), EndpointTable(emit_endpoints(config.endpoints)))
    return OfflineBuild(config=config, problems=problems, view=view)


def problem_sort_key(p: Problem) -> tuple[str, str, str, str, str]:
    return (p.origin, str(p.kind), str(p.key), p.field, p.reason)
