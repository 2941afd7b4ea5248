"""Parsers for IngressClass, Service, EndpointSlice and TLS Secret, plus static Service endpoints.

Each `parse_*` reads one kind's fields from a raw dict whose `metadata` is already parsed, records
what the API server would refuse in `Findings` (core and discovery validation), and returns the model
object; `convert.convert_object` drops it when anything was rejected. `static_endpoint_slice` turns
the `fastingress.io/endpoints` annotation of a Service into an EndpointSlice, so that the manifests
source can route to local processes without a cluster. No cross-object checks, no PEM parsing, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from fastingress.model import validate
from fastingress.model.meta import (
    Findings,
    Meta,
    Options,
    as_map,
    describe,
    get_bool,
    get_int,
    get_list,
    get_map,
    get_str,
    get_str_map,
    join,
)
from fastingress.model.objects import (
    Endpoint,
    EndpointPort,
    EndpointSlice,
    IngressClass,
    Kind,
    ObjectKey,
    Service,
    ServicePort,
    TLSSecret,
)
from fastingress.model.problems import Problem

IS_DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
STATIC_ENDPOINTS_ANNOTATION = "fastingress.io/endpoints"
TLS_SECRET_TYPE = "kubernetes.io/tls"
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
PROTOCOLS = ("TCP", "UDP", "SCTP")
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
# discovery/validation: maxEndpoints, maxAddresses (per endpoint); core/validation: MaxSecretSize.
SLICE_ENDPOINTS_MAX = 1000
ENDPOINT_ADDRESSES_MAX = 100
SECRET_DATA_MAX_BYTES = 1024 * 1024

_STATIC_SEPARATORS_RE = re.compile(r"[\s,]+")


def parse_ingress_class(raw: Mapping[str, Any], meta: Meta, found: Findings, options: Options) -> IngressClass:
    """A cluster-scoped IngressClass: a domain-prefixed `spec.controller` and the default flag."""
    spec = get_map(raw, "spec", "", found)
    controller = get_str(spec, "controller", "spec", found) or ""
    if not controller:
        found.reject("spec.controller", "InvalidController", "controller is required")
    elif len(controller) > validate.INGRESS_CLASS_CONTROLLER_MAX:
        found.reject("spec.controller", "InvalidController", "must be at most 250 characters")
    elif not validate.is_domain_prefixed_path(controller):
        found.reject(
            "spec.controller",
            "InvalidController",
            f"{describe(controller)} must be a domain-prefixed path such as 'example.com/controller'",
        )
    return IngressClass(
        name=meta.name,
        controller=controller,
        is_default=meta.annotations.get(IS_DEFAULT_CLASS_ANNOTATION) == "true",
        resource_version=meta.resource_version,
    )


def parse_service(raw: Mapping[str, Any], meta: Meta, found: Findings, options: Options) -> Service:
    """A core/v1 Service: type, externalName and ports."""
    spec = get_map(raw, "spec", "", found)
    service_type = get_str(spec, "type", "spec", found) or "ClusterIP"
    if service_type not in SERVICE_TYPES:
        found.reject(
            "spec.type", "InvalidServiceType", f"{describe(service_type)} is not one of {', '.join(SERVICE_TYPES)}"
        )
    external_name = ""
    if service_type == "ExternalName":
        external_name = get_str(spec, "externalName", "spec", found) or ""
        if not external_name:
            found.reject("spec.externalName", "InvalidExternalName", "externalName is required")
        elif not validate.is_dns1123_subdomain(external_name.removesuffix(".")):
            found.reject(
                "spec.externalName", "InvalidExternalName", f"{describe(external_name)} must be a DNS subdomain"
            )
    headless = get_str(spec, "clusterIP", "spec", found) == "None"
    return Service(
        key=ObjectKey(meta.namespace, meta.name),
        type=service_type,
        external_name=external_name,
        ports=parse_service_ports(spec, found, required=service_type != "ExternalName" and not headless),
        annotations=meta.annotations,
        resource_version=meta.resource_version,
    )


def parse_service_ports(spec: Mapping[str, Any], found: Findings, *, required: bool) -> tuple[ServicePort, ...]:
    """`spec.ports`: unique names (required when several), unique (port, protocol) pairs."""
    items = get_list(spec, "ports", "spec", found)
    if not items and required and isinstance(spec.get("ports"), list | tuple | None):
        found.reject("spec.ports", "InvalidPort", "at least one port is required")
    ports: list[ServicePort] = []
    for index, item in enumerate(items):
        where = f"spec.ports[{index}]"
        entry = as_map(item, where, found)
        if entry is None:
            continue
        name = get_str(entry, "name", where, found) or ""
        if not name and len(items) > 1:
            found.reject(join(where, "name"), "InvalidPort", "name is required when a Service has several ports")
        elif name and not validate.is_port_name(name):
            found.reject(join(where, "name"), "InvalidPort", f"{describe(name)} is not a valid IANA_SVC_NAME")
        port = parse_port_number(entry, where, found)
        protocol = parse_protocol(entry, where, found)
        port_entry = ServicePort(port, name, parse_target_port(entry, where, found), protocol)
        if name and any(p.name == name for p in ports):
            found.reject(join(where, "name"), "InvalidPort", f"duplicate port name {describe(name)}")
        if any(p.port == port and p.protocol == protocol for p in ports):
            found.reject(join(where, "port"), "InvalidPort", f"duplicate port {port}/{protocol}")
        ports.append(port_entry)
    return tuple(ports)


def parse_port_number(entry: Mapping[str, Any], where: str, found: Findings) -> int:
    """A required `port`, 1-65535; 0 when missing or invalid (recorded)."""
    if entry.get("port") is None:
        found.reject(join(where, "port"), "InvalidPort", "port is required")
        return 0
    port = get_int(entry, "port", where, found)
    if port is not None and not validate.is_port_number(port):
        found.reject(join(where, "port"), "InvalidPort", f"{port} must be between 1 and 65535")
    return port or 0


def parse_protocol(entry: Mapping[str, Any], where: str, found: Findings) -> str:
    """`protocol`, defaulted to TCP as the API server does."""
    protocol = get_str(entry, "protocol", where, found) or "TCP"
    if protocol not in PROTOCOLS:
        found.reject(
            join(where, "protocol"), "InvalidProtocol", f"{describe(protocol)} is not one of {', '.join(PROTOCOLS)}"
        )
    return protocol


def parse_target_port(entry: Mapping[str, Any], where: str, found: Findings) -> int | str:
    """`targetPort` (IntOrString): a number, a named container port, or 0 when unset (= port)."""
    value = entry.get("targetPort")
    path = join(where, "targetPort")
    if value is None or value == "":  # the API server defaults both to `port`
        return 0
    if isinstance(value, bool) or not isinstance(value, int | str):
        found.reject(path, "InvalidType", f"must be an integer or a string, not {describe(value)}")
        return 0
    if isinstance(value, int):
        if value != 0 and not validate.is_port_number(value):
            found.reject(path, "InvalidPort", f"{value} must be between 1 and 65535")
        return value
    if not validate.is_port_name(value):
        found.reject(path, "InvalidPort", f"{describe(value)} is not a valid IANA_SVC_NAME")
    return value


def parse_endpoint_slice(raw: Mapping[str, Any], meta: Meta, found: Findings, options: Options) -> EndpointSlice | None:
    """A discovery.k8s.io/v1 EndpointSlice; None (with a note) when it names no Service."""
    address_type = get_str(raw, "addressType", "", found)
    if address_type is None:
        found.reject("addressType", "InvalidAddressType", "addressType is required")
    elif address_type not in ADDRESS_TYPES:
        found.reject(
            "addressType", "InvalidAddressType", f"{describe(address_type)} is not one of {', '.join(ADDRESS_TYPES)}"
        )
    ports = parse_slice_ports(raw, found)
    endpoints = parse_endpoints(raw, address_type or "", found, allow_loopback=options.allow_loopback)
    service = meta.labels.get(SERVICE_NAME_LABEL, "")
    if not service:
        found.note(
            f"metadata.labels[{SERVICE_NAME_LABEL}]",
            "NoServiceLabel",
            f"has no {SERVICE_NAME_LABEL} label, so it belongs to no Service; ignored",
        )
        return None
    return EndpointSlice(
        key=ObjectKey(meta.namespace, meta.name),
        service=service,
        address_type=address_type or "",
        ports=ports,
        endpoints=endpoints,
        resource_version=meta.resource_version,
    )


def parse_slice_ports(raw: Mapping[str, Any], found: Findings) -> tuple[EndpointPort, ...]:
    """`ports`: unique DNS-1123-label names, port 0-65535 (null means all ports: stored as 0)."""
    ports: list[EndpointPort] = []
    for index, item in enumerate(get_list(raw, "ports", "", found)):
        where = f"ports[{index}]"
        entry = as_map(item, where, found)
        if entry is None:
            continue
        name = get_str(entry, "name", where, found) or ""
        if name and not validate.is_dns1123_label(name):
            found.reject(join(where, "name"), "InvalidPort", f"{describe(name)} must be a DNS-1123 label")
        elif any(p.name == name for p in ports):
            found.reject(join(where, "name"), "InvalidPort", f"duplicate port name {describe(name)}")
        port = get_int(entry, "port", where, found) or 0
        if not 0 <= port <= 65535:
            found.reject(join(where, "port"), "InvalidPort", f"{port} must be between 0 and 65535")
        ports.append(EndpointPort(port, name, parse_protocol(entry, where, found)))
    return tuple(ports)


def parse_endpoints(
    raw: Mapping[str, Any], address_type: str, found: Findings, *, allow_loopback: bool
) -> tuple[Endpoint, ...]:
    """`endpoints`: 1-100 addresses of the slice's type each, conditions defaulted."""
    items = get_list(raw, "endpoints", "", found)
    if len(items) > SLICE_ENDPOINTS_MAX:
        found.reject("endpoints", "InvalidEndpoints", f"must have at most {SLICE_ENDPOINTS_MAX} items")
    endpoints: list[Endpoint] = []
    for index, item in enumerate(items):
        where = f"endpoints[{index}]"
        entry = as_map(item, where, found)
        if entry is None:
            continue
        addresses = parse_addresses(entry, where, address_type, found, allow_loopback=allow_loopback)
        conditions = get_map(entry, "conditions", where, found)
        cond_path = join(where, "conditions")
        ready = get_bool(conditions, "ready", cond_path, found)
        ready = True if ready is None else ready  # nil means unknown: consumers must treat it as ready
        serving = get_bool(conditions, "serving", cond_path, found)
        terminating = get_bool(conditions, "terminating", cond_path, found)
        endpoints.append(Endpoint(addresses, ready, ready if serving is None else serving, bool(terminating)))
    return tuple(endpoints)


def parse_addresses(
    entry: Mapping[str, Any], where: str, address_type: str, found: Findings, *, allow_loopback: bool
) -> tuple[str, ...]:
    """One endpoint's `addresses`, each valid for `address_type` ("" when that is already invalid)."""
    items = get_list(entry, "addresses", where, found)
    path = join(where, "addresses")
    if not items:
        found.reject(path, "InvalidAddress", "must contain at least 1 address")
    elif len(items) > ENDPOINT_ADDRESSES_MAX:
        found.reject(path, "InvalidAddress", f"must contain at most {ENDPOINT_ADDRESSES_MAX} addresses")
    addresses: list[str] = []
    for index, address in enumerate(items):
        here = f"{path}[{index}]"
        if not isinstance(address, str):
            found.reject(here, "InvalidType", f"must be a string, not {describe(address)}")
            continue
        if address_type == "FQDN":
            reason = None if validate.is_fqdn(address) else "must be a fully qualified domain name"
        elif address_type in ("IPv4", "IPv6"):
            reason = validate.check_endpoint_ip(address, address_type, allow_loopback=allow_loopback)
        else:
            reason = None  # the address type itself is invalid and already recorded
        if reason is not None:
            found.reject(here, "InvalidAddress", f"{describe(address)} {reason}")
        addresses.append(address)
    return tuple(addresses)


def is_tls_secret(raw: Mapping[str, Any]) -> bool:
    """Whether a raw Secret is of type kubernetes.io/tls (other Secrets are none of our business)."""
    return raw.get("type") == TLS_SECRET_TYPE


def parse_tls_secret(raw: Mapping[str, Any], meta: Meta, found: Findings, options: Options) -> TLSSecret:
    """A kubernetes.io/tls Secret: base64 `data` merged with plain `stringData`; PEM left unparsed."""
    data = decode_secret_data(raw, found)
    for key, text in get_str_map(raw, "stringData", "", found).items():
        data[key] = text.encode("utf-8", "replace")  # the API server merges stringData over data
    for key in data:
        if not validate.is_config_key(key):
            found.reject(f"data[{key}]", "InvalidSecretData", "key must consist of alphanumerics, '-', '_' or '.'")
    if sum(len(value) for value in data.values()) > SECRET_DATA_MAX_BYTES:
        found.reject("data", "InvalidSecretData", "may not exceed 1 MiB in total")
    for required in ("tls.crt", "tls.key"):
        if required not in data:
            found.reject(f"data[{required}]", "InvalidSecretData", f"{required} is required in a TLS Secret")
    return TLSSecret(
        key=ObjectKey(meta.namespace, meta.name),
        cert_pem=data.get("tls.crt", b""),
        key_pem=data.get("tls.key", b""),
        resource_version=meta.resource_version,
    )


def decode_secret_data(raw: Mapping[str, Any], found: Findings) -> dict[str, bytes]:
    """`data`: standard, padded base64 per key; Go's decoder ignores line breaks, and so do we."""
    decoded: dict[str, bytes] = {}
    for key, value in get_str_map(raw, "data", "", found).items():
        text = value.replace("\r", "").replace("\n", "")
        try:
            decoded[key] = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            found.reject(f"data[{key}]", "InvalidSecretData", "is not valid base64")
    return decoded


def static_endpoint_slice(service: Service, *, origin: str = "") -> tuple[EndpointSlice | None, tuple[Problem, ...]]:
    """The EndpointSlice named by a Service's `fastingress.io/endpoints` annotation, if any.

    The annotation is a comma- and/or whitespace-separated list of IPv4 or IPv6 addresses of one
    family (loopback allowed: this is for backends on this machine). Each Service port maps to an
    endpoint port named like it, on `targetPort` when that is a number, else on `port`; a named
    targetPort needs pods to resolve, so that port is skipped with a Problem.
    """
    text = service.annotations.get(STATIC_ENDPOINTS_ANNOTATION)
    if text is None:
        return None, ()
    field = f"metadata.annotations[{STATIC_ENDPOINTS_ANNOTATION}]"
    addresses = [a for a in _STATIC_SEPARATORS_RE.split(text) if a]
    family, reason = parse_static_family(addresses)
    if reason:
        problem = Problem(Kind.SERVICE, service.key, field, "InvalidStaticEndpoints", reason, origin=origin)
        return None, (problem,)
    ports: list[EndpointPort] = []
    problems: list[Problem] = []
    for index, port in enumerate(service.ports):
        if isinstance(port.target_port, str):
            problems.append(
                Problem(
                    Kind.SERVICE,
                    service.key,
                    f"spec.ports[{index}].targetPort",
                    "InvalidStaticEndpoints",
                    f"named targetPort {port.target_port!r} cannot be resolved without pods; port skipped",
                    origin=origin,
                )
            )
            continue
        ports.append(EndpointPort(port.target_port or port.port, port.name, port.protocol))
    endpoint_slice = EndpointSlice(
        key=ObjectKey(service.key.namespace, f"{service.key.name}-fastingress-static"),
        service=service.key.name,
        address_type=family,
        ports=tuple(ports),
        endpoints=tuple(Endpoint((address,)) for address in addresses),
    )
    return endpoint_slice, tuple(problems)


def parse_static_family(addresses: list[str]) -> tuple[str, str]:
    """("IPv4"|"IPv6", "") for valid addresses of one family, else ("", why not)."""
    families: set[str] = set()
    for address in addresses:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return "", f"{describe(address)} is not an IP address"
        if parsed.is_unspecified or parsed.is_multicast:
            return "", f"{describe(address)} is not a unicast address"
        families.add(f"IPv{parsed.version}")
    if not families:
        return "", "lists no address"
    if len(families) > 1:
        return "", "mixes IPv4 and IPv6 addresses; an EndpointSlice holds one address family"
    return families.pop(), ""
