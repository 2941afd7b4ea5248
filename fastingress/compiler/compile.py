"""`compile_config(snapshot, options)`: the ordered passes from a Store snapshot to a CompiledConfig.

Passes, each in its own module: class selection (classes) -> path drafts (routes) -> conflicts
(conflicts) -> TLS (certs: SNI entries, then the default certificate of `options.default_tls_secret`)
-> backends and vhosts (upstreams, here; each route's HTTPS-redirect and HSTS flags) -> endpoints
(upstreams). Broken parts are pruned and reported as Problems; the rest always compiles.

Pure and deterministic: no I/O, no clocks (time comes in `options.now`), no threads, and no
dependence on dict order. The same snapshot, with its objects in any order, gives an equal
CompiledConfig and an equal (sorted) problem list. Must not: log, or mutate the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastingress.compiler.certs import compile_default_cert, compile_tls, is_host_covered, merge_certs
from fastingress.compiler.classes import select_ingresses
from fastingress.compiler.conflicts import PathDraft, resolve_path_conflicts
from fastingress.compiler.options import CompileOptions
from fastingress.compiler.routes import compile_default_choices, compile_path_drafts, route_order
from fastingress.compiler.types import CompiledConfig, Route, Upstream, VirtualHost
from fastingress.compiler.upstreams import compile_endpoints, resolve_backend
from fastingress.model.objects import Backend, Ingress, Snapshot
from fastingress.model.problems import Problem

# annotation value "false" turns the HTTPS redirect off for an Ingress (ours, and ingress-nginx's)
SSL_REDIRECT_ANNOTATIONS = ("fastingress.io/ssl-redirect", "nginx.ingress.kubernetes.io/ssl-redirect")
# annotation value "true" redirects even when the host has no certificate of its own
FORCE_SSL_REDIRECT_ANNOTATIONS = (
    "fastingress.io/force-ssl-redirect",
    "nginx.ingress.kubernetes.io/force-ssl-redirect",
)
# frozen, so one shared instance is a safe default argument
DEFAULT_OPTIONS = CompileOptions()


def compile_config(
    snapshot: Snapshot, options: CompileOptions = DEFAULT_OPTIONS
) -> tuple[CompiledConfig, list[Problem]]:
    """Compile our Ingresses in `snapshot` into routes, upstreams, endpoints and certificates."""
    ingresses = select_ingresses(snapshot, options)
    drafts, problems = compile_path_drafts(ingresses)
    winners, lost = resolve_path_conflicts(drafts)
    certs, sni, tls_problems = compile_tls(ingresses, snapshot.secrets, options.now)
    default_cert, default_problems = compile_default_cert(snapshot.secrets, options.default_tls_secret, options.now)
    sni_names = frozenset(entry.name for entry in sni)
    linker = _BackendLinker(snapshot)
    by_host: dict[str, list[PathDraft]] = {}
    for draft in winners:
        by_host.setdefault(draft.host, []).append(draft)
    vhosts = tuple(
        _build_vhost(host, by_host.get(host, []), default, sni_names, linker)
        for host, default in compile_default_choices(ingresses).items()  # sorted: "" first
    )
    upstreams = tuple(linker.upstreams[name] for name in sorted(linker.upstreams))
    config = CompiledConfig(
        vhosts=vhosts,
        upstreams=upstreams,
        endpoints=compile_endpoints(snapshot, upstreams),
        certs=merge_certs(certs, default_cert),
        sni=sni,
        default_cert=default_cert.fingerprint if default_cert is not None else "",
        owned=tuple(sorted(ingress.key for ingress in ingresses)),
    )
    return config, _sorted_problems([*problems, *lost, *tls_problems, *default_problems, *linker.problems])


compile = compile_config  # the name design.md uses; shadows the builtin only inside this package


class _BackendLinker:
    """Resolves backends while collecting the Upstreams the routes reference and their problems."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._services = snapshot.services
        self.upstreams: dict[str, Upstream] = {}
        self.problems: list[Problem] = []

    def link(self, ingress: Ingress, backend: Backend, field: str) -> str:
        """Upstream name for a backend ("" when it cannot be routed at all)."""
        upstream, problem = resolve_backend(self._services, ingress, backend, field)
        if problem is not None:
            self.problems.append(problem)
        if upstream is None:
            return ""
        self.upstreams[upstream.name] = upstream  # equal names always resolve to equal Upstreams
        return upstream.name


def _build_vhost(
    host: str, drafts: list[PathDraft], default: Ingress | None, sni_names: frozenset[str],
    linker: _BackendLinker,
) -> VirtualHost:
    hsts = has_own_cert(host, sni_names)
    routes = tuple(
        Route(
            path=d.path,
            match=d.match,
            upstream=linker.link(d.ingress, d.backend, f"{d.field}.backend"),
            ingress=d.ingress.key,
            rule_host=d.host,
            rule_path=d.rule_path,
            path_type=d.path_type,
            redirect_https=is_redirect_https(hsts, d.ingress),
            hsts=hsts,
        )
        for d in sorted(drafts, key=route_order)
    )
    default_route = None
    if default is not None and default.default_backend is not None:
        default_route = Route(
            path="", match=-1,
            upstream=linker.link(default, default.default_backend, "spec.defaultBackend"),
            ingress=default.key, rule_host="", rule_path="", path_type="",
            redirect_https=is_redirect_https(hsts, default),
            hsts=hsts,
        )
    return VirtualHost(host=host, routes=routes, default=default_route)


def is_redirect_https(own_cert: bool, ingress: Ingress) -> bool:
    """Plain HTTP gets a 308 when the vhost host has its own certificate (`has_own_cert`: the same hosts
    that get HSTS, so a client is never told to use HTTPS where it would get the default certificate,
    nor left on HTTP where HTTPS works), unless the Ingress opts out. The catch-all vhost "" never has
    one. The force annotation redirects regardless (ingress-nginx's force-ssl-redirect), and beats the opt-out.
    """
    annotations = ingress.annotations
    if any(annotations.get(name, "").lower() == "true" for name in FORCE_SSL_REDIRECT_ANNOTATIONS):
        return True
    if not own_cert:
        return False
    return not any(annotations.get(name, "").lower() == "false" for name in SSL_REDIRECT_ANNOTATIONS)


def has_own_cert(host: str, sni_names: frozenset[str]) -> bool:
    """Whether a vhost's host is served a certificate of its own: an SNI entry for it, or the `*.parent`
    entry covering it. Such hosts get HSTS on HTTPS, whatever their redirect annotations say; the
    catch-all vhost "" and hosts left to the default certificate never do.
    """
    return bool(host) and is_host_covered(sni_names, host)


def _sorted_problems(problems: Iterable[Problem]) -> list[Problem]:
    """Sorted and without repeats (one default backend can be linked from several vhosts)."""
    return sorted(set(problems))
