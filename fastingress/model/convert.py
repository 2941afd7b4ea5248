"""Raw API dicts (YAML or API-server JSON, camelCase keys) to model objects, validated at the boundary.

`convert_object` dispatches on apiVersion + kind, parses `metadata` and the kind's fields, and
validates them as the Kubernetes API server would (pkg/apis/networking/validation and core
validation). Anything the API server would refuse, including structural garbage such as a list where
an object belongs, becomes a rejected `Problem` and no object: this module never raises on input.
Ingress parsing lives here; the other kinds are in `convert_core`, the syntax predicates in
`validate`. It must not look across objects (whether a Service exists is the compiler's question),
parse PEM, resolve names, or do any I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from fastingress.model import convert_core, validate
from fastingress.model.convert_core import static_endpoint_slice
from fastingress.model.meta import (
    Findings,
    Meta,
    Options,
    as_map,
    describe,
    get_int,
    get_list,
    get_map,
    get_str,
    join,
    parse_meta,
    peek_key,
)
from fastingress.model.objects import (
    Backend,
    Ingress,
    IngressPath,
    IngressRule,
    IngressTLS,
    Kind,
    ObjectKey,
)
from fastingress.model.problems import Problem

__all__ = ["Converted", "convert_object", "static_endpoint_slice"]

INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")

Parser = Callable[[Mapping[str, Any], Meta, Findings, Options], object]


class Converted(msgspec.Struct, frozen=True):
    """The outcome of converting one raw object."""

    kind: Kind | None  # None when the kind is unknown or unsupported
    key: ObjectKey | None  # None when metadata.name is missing
    obj: object | None  # the model object; None when rejected or ignored
    problems: tuple[Problem, ...] = ()


class _KindSpec(msgspec.Struct, frozen=True):
    """How to read one supported apiVersion + kind."""

    kind: Kind
    parse: Parser
    is_valid_name: Callable[[str], bool]
    name_rule: str  # the name syntax, worded for messages
    cluster_scoped: bool = False


def convert_object(
    raw: Mapping[str, Any],
    *,
    origin: str = "",
    seq: int = 0,
    default_namespace: str = "default",
    allow_loopback: bool = False,
) -> Converted:
    """Convert and validate one raw object; never raises on malformed input.

    `origin` names where the object came from in Problems, `seq` is its order of appearance
    (copied onto Ingress.seq), `allow_loopback` accepts loopback EndpointSlice addresses.
    """
    if not isinstance(raw, Mapping):
        problem = Problem(
            Kind.FILE,
            ObjectKey("", ""),
            "",
            "InvalidObject",
            f"an object must be a mapping, not {describe(raw)}",
            rejected=True,
            origin=origin,
        )
        return Converted(None, None, None, (problem,))
    spec = _lookup_kind(raw)
    if spec is None:
        return _convert_unsupported(raw, origin, default_namespace)
    key = peek_key(raw, cluster_scoped=spec.cluster_scoped, default_namespace=default_namespace)
    if spec.kind is Kind.SECRET and not convert_core.is_tls_secret(raw):
        return Converted(Kind.SECRET, key, None)  # not a certificate: irrelevant, silently ignored
    found = Findings()
    meta = parse_meta(
        raw,
        found,
        is_valid_name=spec.is_valid_name,
        name_rule=spec.name_rule,
        cluster_scoped=spec.cluster_scoped,
        default_namespace=default_namespace,
    )
    obj = spec.parse(raw, meta, found, Options(seq=seq, allow_loopback=allow_loopback))
    problem_key = key or ObjectKey(meta.namespace, "")
    problems = found.build_problems(spec.kind, problem_key, origin)
    return Converted(spec.kind, key, None if found.rejected else obj, problems)


def _lookup_kind(raw: Mapping[str, Any]) -> _KindSpec | None:
    """The spec for the object's apiVersion + kind, None when we do not read it."""
    api_version, kind = raw.get("apiVersion"), raw.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return None
    return _KINDS.get((api_version, kind))


def _convert_unsupported(raw: Mapping[str, Any], origin: str, default_namespace: str) -> Converted:
    """An object of a kind (or apiVersion) we do not read: ignored, with a non-rejecting note."""
    key = peek_key(raw, cluster_scoped=False, default_namespace=default_namespace)
    api_version, kind = raw.get("apiVersion"), raw.get("kind")
    what = f"{describe(kind)} of apiVersion {describe(api_version)}"
    supported = [f"{v} {k}" for v, k in _KINDS if k == kind]
    hint = f" (supported: {', '.join(supported)})" if supported else ""
    problem = Problem(
        Kind.FILE,
        key or ObjectKey(default_namespace, ""),
        "kind",
        "UnsupportedKind",
        f"{what} is not a kind fastingress reads{hint}; it is ignored",
        origin=origin,
    )
    return Converted(None, key, None, (problem,))


def parse_ingress(raw: Mapping[str, Any], meta: Meta, found: Findings, options: Options) -> Ingress:
    """A networking.k8s.io/v1 Ingress; invalid parts are recorded in `found`."""
    spec = get_map(raw, "spec", "", found)
    default_backend = None
    if spec.get("defaultBackend") is not None:
        backend = as_map(spec["defaultBackend"], "spec.defaultBackend", found)
        default_backend = parse_backend(backend or {}, "spec.defaultBackend", found)
    rules = parse_rules(spec, found)
    if not spec.get("rules") and spec.get("defaultBackend") is None:
        found.reject("spec", "InvalidSpec", "either `defaultBackend` or `rules` must be specified")
    return Ingress(
        key=ObjectKey(meta.namespace, meta.name),
        created=meta.created,
        seq=options.seq,
        resource_version=meta.resource_version,
        generation=meta.generation,
        uid=meta.uid,
        class_name=parse_class_name(spec, found),
        class_annotation=meta.annotations.get(INGRESS_CLASS_ANNOTATION),
        annotations=meta.annotations,
        default_backend=default_backend,
        rules=rules,
        tls=parse_tls(spec, found),
    )


def parse_class_name(spec: Mapping[str, Any], found: Findings) -> str | None:
    """`spec.ingressClassName`, a DNS-1123 subdomain when given."""
    name = get_str(spec, "ingressClassName", "spec", found)
    if name is not None and not validate.is_dns1123_subdomain(name):
        found.reject(
            "spec.ingressClassName",
            "InvalidIngressClass",
            f"{describe(name)} must be a lower-case RFC 1123 subdomain",
        )
    return name


def check_host(host: str, path: str, found: Findings, *, allow_ip: bool = False) -> None:
    """Record why `host` is not a valid Ingress host, if it is not."""
    if not allow_ip and validate.is_ip_literal(host):
        found.reject(path, "InvalidHost", f"{describe(host)} must be a DNS name, not an IP address")
    elif "*" in host and not validate.is_wildcard_dns1123_subdomain(host):
        found.reject(
            path,
            "InvalidHost",
            f"{describe(host)}: a wildcard host must be '*.' followed by a lower-case DNS subdomain",
        )
    elif "*" not in host and not validate.is_dns1123_subdomain(host):
        found.reject(
            path,
            "InvalidHost",
            f"{describe(host)} must be a lower-case RFC 1123 subdomain (e.g. 'example.com')",
        )


def parse_rules(spec: Mapping[str, Any], found: Findings) -> tuple[IngressRule, ...]:
    """`spec.rules`: host plus optional http paths; a rule with no http has no paths."""
    rules: list[IngressRule] = []
    for index, item in enumerate(get_list(spec, "rules", "spec", found)):
        path = f"spec.rules[{index}]"
        rule = as_map(item, path, found)
        if rule is None:
            continue
        host = get_str(rule, "host", path, found) or ""
        if host:
            check_host(host, join(path, "host"), found)
        paths: tuple[IngressPath, ...] = ()
        if rule.get("http") is not None:
            http = as_map(rule["http"], join(path, "http"), found)
            paths = parse_paths(http or {}, join(path, "http"), found)
        rules.append(IngressRule(host, paths))
    return tuple(rules)


def parse_paths(http: Mapping[str, Any], path: str, found: Findings) -> tuple[IngressPath, ...]:
    """`http.paths`: at least one; each with a pathType, a path valid for it and a backend."""
    items = get_list(http, "paths", path, found)
    if not items and isinstance(http.get("paths"), list | tuple | None):  # else: wrong type, recorded
        found.reject(join(path, "paths"), "InvalidPath", "at least one path is required")
    paths: list[IngressPath] = []
    for index, item in enumerate(items):
        where = f"{path}.paths[{index}]"
        entry = as_map(item, where, found)
        if entry is None:
            continue
        path_type = get_str(entry, "pathType", where, found)
        value = get_str(entry, "path", where, found) or ""
        if path_type is None:
            found.reject(join(where, "pathType"), "InvalidPathType", "pathType must be specified")
        elif path_type not in PATH_TYPES:
            found.reject(
                join(where, "pathType"),
                "InvalidPathType",
                f"{describe(path_type)} is not one of {', '.join(PATH_TYPES)}",
            )
        elif (reason := validate.check_http_path(value, path_type)) is not None:
            found.reject(join(where, "path"), "InvalidPath", f"{describe(value)} {reason}")
        backend = parse_backend(get_map(entry, "backend", where, found), join(where, "backend"), found)
        paths.append(IngressPath(value or "/", path_type or "", backend or Backend()))
    return tuple(paths)


def parse_backend(raw: Mapping[str, Any], path: str, found: Findings) -> Backend | None:
    """An IngressBackend: exactly one of `service` (name + port) or `resource`."""
    service, resource = raw.get("service"), raw.get("resource")
    if service is not None and resource is not None:
        found.reject(path, "InvalidBackend", "cannot set both `service` and `resource` backends")
        return None
    if service is not None:
        service_map = as_map(service, join(path, "service"), found)
        return None if service_map is None else parse_service_backend(service_map, join(path, "service"), found)
    if resource is not None:
        resource_map = as_map(resource, join(path, "resource"), found)
        return None if resource_map is None else parse_resource_backend(resource_map, join(path, "resource"), found)
    found.reject(path, "InvalidBackend", "one backend (`service` or `resource`) must be specified")
    return None


def parse_service_backend(raw: Mapping[str, Any], path: str, found: Findings) -> Backend:
    """`backend.service`: a DNS-1035 Service name and a port by number xor by name."""
    name = get_str(raw, "name", path, found) or ""
    if not validate.is_dns1035_label(name):
        found.reject(
            join(path, "name"),
            "InvalidBackend",
            f"Service name {describe(name)} must be a DNS-1035 label (lower-case, starting with a letter)",
        )
    port = get_map(raw, "port", path, found)
    port_path = join(path, "port")
    number = get_int(port, "number", port_path, found) or 0  # Go's zero value: 0 means unset
    port_name = get_str(port, "name", port_path, found) or ""
    if number and port_name:
        found.reject(port_path, "InvalidPort", "cannot set both port name and port number")
    elif number and not validate.is_port_number(number):
        found.reject(join(port_path, "number"), "InvalidPort", f"{number} must be between 1 and 65535")
    elif port_name and not validate.is_port_name(port_name):
        found.reject(join(port_path, "name"), "InvalidPort", f"{describe(port_name)} {PORT_NAME_RULE}")
    elif not number and not port_name:
        found.reject(port_path, "InvalidPort", "port name or number is required")
    return Backend(service=name, port_number=number, port_name=port_name)


PORT_NAME_RULE = (
    "must be an IANA_SVC_NAME: at most 15 lower-case letters, digits and '-', with at least one letter "
    "and no leading, trailing or double '-'"
)


def parse_resource_backend(raw: Mapping[str, Any], path: str, found: Findings) -> Backend:
    """`backend.resource`: a typed local object reference, kept as "apiGroup/Kind/name"."""
    api_group = get_str(raw, "apiGroup", path, found) or ""
    if api_group and not validate.is_dns1123_subdomain(api_group):
        found.reject(join(path, "apiGroup"), "InvalidBackend", f"{describe(api_group)} must be a DNS subdomain")
    parts = [api_group]
    for field in ("kind", "name"):
        value = get_str(raw, field, path, found) or ""
        if not value:
            found.reject(join(path, field), "InvalidBackend", f"{field} is required")
        elif not validate.is_path_segment_name(value):
            found.reject(
                join(path, field),
                "InvalidBackend",
                f"{describe(value)} may not be '.' or '..' nor contain '/' or '%'",
            )
        parts.append(value)
    return Backend(resource="/".join(parts))


def parse_tls(spec: Mapping[str, Any], found: Findings) -> tuple[IngressTLS, ...]:
    """`spec.tls`: hosts (wildcards allowed) and a Secret name ("" allowed)."""
    entries: list[IngressTLS] = []
    for index, item in enumerate(get_list(spec, "tls", "spec", found)):
        path = f"spec.tls[{index}]"
        entry = as_map(item, path, found)
        if entry is None:
            continue
        hosts: list[str] = []
        for host_index, host in enumerate(get_list(entry, "hosts", path, found)):
            host_path = f"{path}.hosts[{host_index}]"
            if not isinstance(host, str):
                found.reject(host_path, "InvalidType", f"must be a string, not {describe(host)}")
                continue
            check_host(host, host_path, found, allow_ip=True)  # the API server allows IPs here
            hosts.append(host)
        secret_name = get_str(entry, "secretName", path, found) or ""
        if secret_name and not validate.is_dns1123_subdomain(secret_name):
            found.reject(join(path, "secretName"), "InvalidTLS", f"{describe(secret_name)} must be a DNS subdomain")
        entries.append(IngressTLS(tuple(hosts), secret_name))
    return tuple(entries)


_SUBDOMAIN_RULE = "a lower-case RFC 1123 subdomain"

_KINDS: dict[tuple[str, str], _KindSpec] = {
    ("networking.k8s.io/v1", "Ingress"): _KindSpec(
        Kind.INGRESS, parse_ingress, validate.is_dns1123_subdomain, _SUBDOMAIN_RULE
    ),
    ("networking.k8s.io/v1", "IngressClass"): _KindSpec(
        Kind.INGRESS_CLASS,
        convert_core.parse_ingress_class,
        validate.is_dns1123_subdomain,
        _SUBDOMAIN_RULE,
        cluster_scoped=True,
    ),
    ("v1", "Service"): _KindSpec(
        Kind.SERVICE,
        convert_core.parse_service,
        validate.is_dns1035_label,
        "a DNS-1035 label (lower-case, starting with a letter, at most 63 characters)",
    ),
    ("discovery.k8s.io/v1", "EndpointSlice"): _KindSpec(
        Kind.ENDPOINT_SLICE,
        convert_core.parse_endpoint_slice,
        validate.is_dns1123_subdomain,
        _SUBDOMAIN_RULE,
    ),
    ("v1", "Secret"): _KindSpec(
        Kind.SECRET, convert_core.parse_tls_secret, validate.is_dns1123_subdomain, _SUBDOMAIN_RULE
    ),
}
