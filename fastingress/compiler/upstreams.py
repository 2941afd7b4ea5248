"""Ingress backends -> Upstreams, and Upstreams + EndpointSlices -> endpoints (design.md section 3).

Two passes with separate lifetimes (types.py): `resolve_backend` depends on Services only, while
`compile_endpoints` also reads EndpointSlices, so the supervisor can recompute endpoints alone when
only slices change. A backend that cannot be resolved still yields an Upstream, carrying an `error`
reason code, so its routes exist and answer 503 instead of vanishing (and falling through to a
shorter prefix that was never meant to serve them).

Must not: read Secrets or Ingress rules, or depend on dict order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fastingress.compiler.types import Endpoint, Upstream, UpstreamEndpoints
from fastingress.model.objects import Backend, EndpointSlice, Ingress, Kind, ObjectKey, Service, Snapshot
from fastingress.model.problems import Problem


def resolve_backend(
    services: Mapping[ObjectKey, Service], ingress: Ingress, backend: Backend, field: str
) -> tuple[Upstream | None, Problem | None]:
    """One backend of `ingress` (at JSON path `field`) -> its Upstream (None for resource backends).

    The Problem, when not None, explains why the Upstream carries an error or why there is none.
    """
    if not backend.service:
        return None, _problem(ingress, f"{field}.resource", "UnsupportedBackend",
                              f"resource backend {backend.resource!r} is not supported: answers 503")
    key = ObjectKey(ingress.key.namespace, backend.service)
    wanted = backend.port_name or str(backend.port_number)
    service = services.get(key)
    if service is None:
        upstream = Upstream(name=f"{key}:{wanted}", service=key, port=backend.port_number,
                            port_name=backend.port_name, error="ServiceNotFound")
        return upstream, _problem(ingress, f"{field}.service.name", "ServiceNotFound",
                                  f"Service {key} not found: answers 503")
    external = service.external_name if service.type == "ExternalName" else ""
    for port in service.ports:
        if (port.name == backend.port_name) if backend.port_name else (port.port == backend.port_number):
            return Upstream(name=f"{key}:{port.port}", service=key, port=port.port, port_name=port.name,
                            external_name=external), None
    if external and not backend.port_name:
        # ExternalName Services often list no ports: the number is then the port on the external host
        return Upstream(name=f"{key}:{wanted}", service=key, port=backend.port_number,
                        external_name=external), None
    upstream = Upstream(name=f"{key}:{wanted}", service=key, port=backend.port_number,
                        port_name=backend.port_name, error="PortNotFound")
    which = "name" if backend.port_name else "number"
    return upstream, _problem(ingress, f"{field}.service.port.{which}", "PortNotFound",
                              f"Service {key} has no port {wanted}: answers 503")


def _problem(ingress: Ingress, field: str, reason: str, message: str) -> Problem:
    return Problem(kind=Kind.INGRESS, key=ingress.key, field=field, reason=reason, message=message)


def compile_endpoints(snapshot: Snapshot, upstreams: Sequence[Upstream]) -> tuple[UpstreamEndpoints, ...]:
    """Endpoints for each Upstream, aligned by index; reads only Services' slices, never Ingresses."""
    by_service: dict[ObjectKey, list[EndpointSlice]] = {}
    for endpoint_slice in snapshot.slices.values():
        owner = ObjectKey(endpoint_slice.key.namespace, endpoint_slice.service)
        by_service.setdefault(owner, []).append(endpoint_slice)
    return tuple(compile_upstream_endpoints(up, by_service.get(up.service, ())) for up in upstreams)


def compile_upstream_endpoints(upstream: Upstream, slices: Sequence[EndpointSlice]) -> UpstreamEndpoints:
    """Ready endpoints of one Upstream, else its serving-but-terminating ones as a last resort.

    Missing slices are normal during a rollout: the result is then empty (a 503), not a problem.
    """
    if upstream.error or upstream.external_name:
        return UpstreamEndpoints()  # errors answer 503; ExternalName resolves by DNS in the workers
    ready: set[Endpoint] = set()
    last_resort: set[Endpoint] = set()
    for endpoint_slice in slices:
        # the slice port is named like the Service port ("" on both sides for a single unnamed port)
        port = next((p.port for p in endpoint_slice.ports if p.name == upstream.port_name), None)
        if port is None:
            continue
        for entry in endpoint_slice.endpoints:
            if entry.ready:
                target = ready
            elif entry.serving and entry.terminating:
                target = last_resort
            else:
                continue
            # addresses are fungible (discovery.k8s.io/v1); FQDN slices hold names, kept as they are
            target.update(Endpoint(address, port) for address in entry.addresses)
    if ready:
        return UpstreamEndpoints(endpoints=tuple(sorted(ready)))
    if last_resort:
        return UpstreamEndpoints(endpoints=tuple(sorted(last_resort)), last_resort=True)
    return UpstreamEndpoints()
