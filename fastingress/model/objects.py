"""Frozen, typed views of the Kubernetes objects fastingress reads: only the fields it uses.

Kubernetes nouns live here and in `sources`; from the compiler on, the vocabulary is the proxy's
(VirtualHost, Route, Upstream). Objects are built by `fastingress.model.convert` from raw API dicts
and never mutated; a change replaces the whole object in the `Store`.
"""

from __future__ import annotations

import enum

import msgspec


class Kind(enum.StrEnum):
    """The kinds a source can emit; values are the Kubernetes `kind` strings."""

    INGRESS = "Ingress"
    INGRESS_CLASS = "IngressClass"
    SERVICE = "Service"
    ENDPOINT_SLICE = "EndpointSlice"
    SECRET = "Secret"
    FILE = "File"  # a manifests file that could not be read or parsed (problems only)


class ObjectKey(msgspec.Struct, frozen=True, order=True):
    """The identity of an object: namespace ("" for cluster-scoped kinds) and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


class Backend(msgspec.Struct, frozen=True):
    """An Ingress backend: a Service port (by number xor by name) or a typed resource reference."""

    service: str = ""  # Service name in the Ingress' namespace; "" for a resource backend
    port_number: int = 0  # 0 when the port is given by name
    port_name: str = ""  # "" when the port is given by number
    resource: str = ""  # "apiGroup/Kind/name" of a resource backend (not routable by us); "" otherwise


class IngressPath(msgspec.Struct, frozen=True):
    """One `rules[].http.paths[]` entry."""

    path: str  # as written; ImplementationSpecific with no path is "/"
    path_type: str  # "Exact" | "Prefix" | "ImplementationSpecific"
    backend: Backend


class IngressRule(msgspec.Struct, frozen=True):
    """One `spec.rules[]` entry; `host` is "" for a rule that applies to every unmatched host."""

    host: str  # lower-case DNS name, "*.parent" wildcard, or ""
    paths: tuple[IngressPath, ...] = ()


class IngressTLS(msgspec.Struct, frozen=True):
    """One `spec.tls[]` entry."""

    hosts: tuple[str, ...] = ()
    secret_name: str = ""


class Ingress(msgspec.Struct, frozen=True):
    """A `networking.k8s.io/v1` Ingress, validated."""

    key: ObjectKey
    created: str = ""  # metadata.creationTimestamp normalised to "YYYY-MM-DDTHH:MM:SSZ"; "" if unknown
    seq: int = 0  # order of appearance in its source: the tie-break when `created` is unknown or equal
    resource_version: str = ""
    generation: int = 0
    uid: str = ""
    class_name: str | None = None  # spec.ingressClassName
    class_annotation: str | None = None  # legacy annotation kubernetes.io/ingress.class
    annotations: dict[str, str] = {}
    default_backend: Backend | None = None
    rules: tuple[IngressRule, ...] = ()
    tls: tuple[IngressTLS, ...] = ()


class IngressClass(msgspec.Struct, frozen=True):
    """A cluster-scoped `networking.k8s.io/v1` IngressClass."""

    name: str
    controller: str
    is_default: bool = False  # annotation ingressclass.kubernetes.io/is-default-class == "true"
    resource_version: str = ""


class ServicePort(msgspec.Struct, frozen=True):
    """One `spec.ports[]` entry of a Service."""

    port: int
    name: str = ""
    target_port: int | str = 0  # number, a named container port, or 0 when unset (= port)
    protocol: str = "TCP"


class Service(msgspec.Struct, frozen=True):
    """A core/v1 Service."""

    key: ObjectKey
    type: str = "ClusterIP"
    external_name: str = ""  # spec.externalName for type ExternalName
    ports: tuple[ServicePort, ...] = ()
    annotations: dict[str, str] = {}
    resource_version: str = ""


class EndpointPort(msgspec.Struct, frozen=True):
    """One `ports[]` entry of an EndpointSlice: the port on the pods, named like the Service port."""

    port: int
    name: str = ""
    protocol: str = "TCP"


class Endpoint(msgspec.Struct, frozen=True):
    """One `endpoints[]` entry; conditions already defaulted as the API documents (nil ready = ready)."""

    addresses: tuple[str, ...]
    ready: bool = True
    serving: bool = True
    terminating: bool = False


class EndpointSlice(msgspec.Struct, frozen=True):
    """A `discovery.k8s.io/v1` EndpointSlice."""

    key: ObjectKey
    service: str  # label kubernetes.io/service-name
    address_type: str = "IPv4"  # "IPv4" | "IPv6" | "FQDN"
    ports: tuple[EndpointPort, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    resource_version: str = ""


class TLSSecret(msgspec.Struct, frozen=True):
    """A core/v1 Secret of type kubernetes.io/tls; PEM bytes unparsed (the compiler checks them)."""

    key: ObjectKey
    cert_pem: bytes = b""
    key_pem: bytes = b""
    resource_version: str = ""


class Snapshot(msgspec.Struct, frozen=True):
    """Everything the compiler reads: the Store's current objects. Dict order carries no meaning."""

    ingresses: dict[ObjectKey, Ingress] = {}
    classes: dict[str, IngressClass] = {}
    services: dict[ObjectKey, Service] = {}
    slices: dict[ObjectKey, EndpointSlice] = {}
    secrets: dict[ObjectKey, TLSSecret] = {}
