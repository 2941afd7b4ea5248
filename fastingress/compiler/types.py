"""The compiled configuration, in the proxy's vocabulary: what `compile()` returns and `emit` lays out.

Everything is frozen and sorted so that the same objects in any order give equal values (and, through
`emit`, byte-identical tables). Routes refer to upstreams by name and to Ingresses by key; `emit` turns
these into indexes.

Two parts with separate lifetimes (design.md section 2, requirement 4):
- the *routes part* (`vhosts`, `upstreams`, `certs`, `sni`, `ingresses`) depends on Ingresses,
  IngressClasses, Services and Secrets;
- the *endpoints part* (`endpoints`, aligned with `upstreams`) depends on EndpointSlices too.
An EndpointSlice change therefore changes only the endpoints part.
"""

from __future__ import annotations

import msgspec

from fastingress.model.objects import ObjectKey

MATCH_EXACT = 0  # the whole normalised path equals Route.path
MATCH_PREFIX = 1  # Route.path is a `/`-element prefix of the path ("" = the root, matches everything)


class Route(msgspec.Struct, frozen=True):
    """One path rule of a virtual host, or (with match=-1) its default backend."""

    path: str  # normalised; for prefixes without the trailing "/" ("" for the root prefix)
    match: int  # MATCH_EXACT | MATCH_PREFIX; -1 for a default backend
    upstream: str  # Upstream.name, or "" when the backend cannot be routed (a 503)
    ingress: ObjectKey  # the Ingress that defined it
    rule_host: str  # the host as written in the rule ("" for host-less rules and default backends)
    rule_path: str  # the path as written in the Ingress ("" for a default backend)
    path_type: str  # the pathType as written ("" for a default backend)
    redirect_https: bool = False  # plain HTTP gets a 308 to https://host/uri
    hsts: bool = False  # HTTPS responses carry Strict-Transport-Security (the host has its own certificate)
    options: bytes = b""  # per-route options, msgspec-encoded (reserved; empty until annotations add some)


class VirtualHost(msgspec.Struct, frozen=True):
    """All routes for one request host; the catch-all host-less vhost has host ""."""

    host: str  # lower-case exact name, "*.parent" for a wildcard, or "" for the catch-all
    routes: tuple[Route, ...]  # in precedence order: longest path first, Exact before Prefix on ties
    default: Route | None = None  # used when no route matches (match == -1); None: 404


class Upstream(msgspec.Struct, frozen=True):
    """A Service port traffic can be sent to; its endpoints live in the endpoints part."""

    name: str  # "namespace/service:port" with the Service port *number*
    service: ObjectKey
    port: int  # Service port number
    port_name: str = ""  # Service port name (selects the EndpointSlice port), "" if unnamed
    external_name: str = ""  # DNS name for ExternalName Services (resolved by the workers)
    error: str = ""  # "" when routable; else the reason code making it a 503 ("ServiceNotFound"...)


class Endpoint(msgspec.Struct, frozen=True, order=True):
    """One pod address and port serving an Upstream."""

    address: str
    port: int


class UpstreamEndpoints(msgspec.Struct, frozen=True):
    """The endpoints of one Upstream (aligned by index with CompiledConfig.upstreams)."""

    endpoints: tuple[Endpoint, ...] = ()  # sorted; ready ones, or the last-resort ones
    last_resort: bool = False  # True: no endpoint is ready, these are serving but terminating


class CertBundle(msgspec.Struct, frozen=True):
    """A usable certificate chain and key from a kubernetes.io/tls Secret."""

    secret: ObjectKey
    fingerprint: str  # sha256 hex over the chain and the key: names the PEM file the workers load
    names: tuple[str, ...]  # DNS SANs (lower-case)
    not_after: int  # expiry, seconds since the epoch
    cert_pem: bytes
    key_pem: bytes


class SniEntry(msgspec.Struct, frozen=True, order=True):
    """An SNI name (exact, or "*.parent") and the certificate served for it."""

    name: str
    cert: str  # CertBundle.fingerprint


class CompiledConfig(msgspec.Struct, frozen=True):
    """The whole compiled configuration; every tuple sorted, so equal inputs give equal values."""

    vhosts: tuple[VirtualHost, ...] = ()  # sorted by host; "" (catch-all) first when present
    upstreams: tuple[Upstream, ...] = ()  # sorted by name
    endpoints: tuple[UpstreamEndpoints, ...] = ()  # aligned with upstreams
    certs: tuple[CertBundle, ...] = ()  # sorted by fingerprint; SNI entries' and the default one
    sni: tuple[SniEntry, ...] = ()  # sorted by name
    default_cert: str = ""  # fingerprint (in `certs`) of FASTINGRESS_DEFAULT_TLS_SECRET; "": self-signed
    owned: tuple[ObjectKey, ...] = ()  # sorted keys of every Ingress of our classes (the status writer's set)
