"""Syntax predicates for Kubernetes names, hosts, ports, paths and addresses.

Each predicate mirrors one function of the Kubernetes API server (k8s.io/apimachinery
`util/validation`, `pkg/apis/core/validation`, `pkg/apis/networking/validation`), so that an object
we accept is one the API server would have accepted. Predicates only answer yes or no (or return the
message the API server would give); building `Problem`s is `convert`'s job. Pure and stdlib-only:
no I/O, no other fastingress module.
"""

from __future__ import annotations

import ipaddress
import re

# Limits and patterns are the API server's own (apimachinery util/validation/validation.go).
DNS1123_LABEL_MAX = 63  # RFC 1123 label length
DNS1123_SUBDOMAIN_MAX = 253  # RFC 1123 name length
PORT_NAME_MAX = 15  # IANA_SVC_NAME, RFC 6335 section 5.1
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63  # the part after the optional "prefix/"
INGRESS_CLASS_CONTROLLER_MAX = 250  # networking validation maxLenIngressClassController
CONFIG_KEY_MAX = 253  # Secret data keys (IsConfigMapKey)

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL)
_DNS1123_SUBDOMAIN_RE = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_WILDCARD_SUBDOMAIN_RE = re.compile(rf"\*\.{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_DNS1035_LABEL_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_PORT_NAME_CHARS_RE = re.compile(r"[-a-z0-9]+")
_QUALIFIED_NAME_RE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_PATH_SEGMENT_CHARS_RE = re.compile(r"[A-Za-z0-9/\-._~%!$&'()*+,;=:]+")
_CONFIG_KEY_RE = re.compile(r"[-._a-zA-Z0-9]+")
# Go's net.ParseIP (which the API server calls via ParseIPSloppy) accepts leading zeros in IPv4.
_SLOPPY_IPV4_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")

# networking/validation: sequences that make an Exact/Prefix path ambiguous after normalisation.
_INVALID_PATH_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_PATH_SUFFIXES = ("/..", "/.")


def is_dns1123_label(value: str) -> bool:
    """A lower-case RFC 1123 label (namespaces, EndpointSlice port names)."""
    return len(value) <= DNS1123_LABEL_MAX and _DNS1123_LABEL_RE.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    """A lower-case RFC 1123 subdomain (most object names, hosts); labels are not length-checked."""
    return len(value) <= DNS1123_SUBDOMAIN_MAX and _DNS1123_SUBDOMAIN_RE.fullmatch(value) is not None


def is_wildcard_dns1123_subdomain(value: str) -> bool:
    """A wildcard host: the first label exactly "*", the rest a subdomain."""
    return len(value) <= DNS1123_SUBDOMAIN_MAX and _WILDCARD_SUBDOMAIN_RE.fullmatch(value) is not None


def is_dns1035_label(value: str) -> bool:
    """An RFC 1035 label: starts with a letter (Service names, backend service names)."""
    return len(value) <= DNS1123_LABEL_MAX and _DNS1035_LABEL_RE.fullmatch(value) is not None


def is_port_name(value: str) -> bool:
    """An IANA_SVC_NAME (RFC 6335): 1-15 of [a-z0-9-], a letter, no edge or double hyphen."""
    return (
        0 < len(value) <= PORT_NAME_MAX
        and _PORT_NAME_CHARS_RE.fullmatch(value) is not None
        and any("a" <= c <= "z" for c in value)
        and not value.startswith("-")
        and not value.endswith("-")
        and "--" not in value
    )


def is_port_number(value: int) -> bool:
    """A TCP/UDP port a Service or backend may name."""
    return 1 <= value <= 65535


def is_ip_literal(value: str) -> bool:
    """Whether Go's ParseIPSloppy would read `value` as an address (hosts must not be one)."""
    if _SLOPPY_IPV4_RE.fullmatch(value):
        return all(int(part) <= 255 for part in value.split("."))
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return "%" not in value  # Go's ParseIP rejects zones


def is_host(value: str, *, allow_ip: bool = False) -> bool:
    """An Ingress host (rules or TLS): a subdomain or a "*.parent" wildcard, lower-case."""
    if not allow_ip and is_ip_literal(value):
        return False
    if "*" in value:
        return is_wildcard_dns1123_subdomain(value)
    return is_dns1123_subdomain(value)


def is_qualified_name(value: str) -> bool:
    """An annotation or label key: optional DNS-subdomain prefix, "/", then a 1-63 char name."""
    prefix, slash, name = value.rpartition("/")
    if slash and not is_dns1123_subdomain(prefix):
        return False
    return len(name) <= QUALIFIED_NAME_MAX and _QUALIFIED_NAME_RE.fullmatch(name) is not None


def is_label_value(value: str) -> bool:
    """A label value: empty, or up to 63 chars of the qualified-name alphabet."""
    return value == "" or (len(value) <= LABEL_VALUE_MAX and _QUALIFIED_NAME_RE.fullmatch(value) is not None)


def is_domain_prefixed_path(value: str) -> bool:
    """An IngressClass controller name, e.g. "fastingress.io/ingress-controller" (IsDomainPrefixedPath)."""
    host, slash, path = value.partition("/")
    return bool(slash) and is_dns1123_subdomain(host) and _PATH_SEGMENT_CHARS_RE.fullmatch(path) is not None


def is_path_segment_name(value: str) -> bool:
    """A name usable as one URL path segment (typed object reference kind and name)."""
    return value not in ("", ".", "..") and "/" not in value and "%" not in value


def is_config_key(value: str) -> bool:
    """A Secret data key (IsConfigMapKey)."""
    return (
        len(value) <= CONFIG_KEY_MAX
        and value not in (".", "..")
        and not value.startswith("..")
        and _CONFIG_KEY_RE.fullmatch(value) is not None
    )


def check_http_path(path: str, path_type: str) -> str | None:
    """Why an Ingress path is invalid for its type, or None when it is valid."""
    if path_type == "ImplementationSpecific":
        return None if path == "" or path.startswith("/") else "must be an absolute path"
    if not path.startswith("/"):
        return "must be an absolute path"
    for sequence in _INVALID_PATH_SEQUENCES:
        if sequence in path:
            return f"must not contain '{sequence}'"
    for suffix in _INVALID_PATH_SUFFIXES:
        if path.endswith(suffix):
            return f"must not end with '{suffix}'"
    return None


def check_endpoint_ip(value: str, family: str, *, allow_loopback: bool) -> str | None:
    """Why an EndpointSlice address is invalid for `family` ("IPv4"/"IPv6"), or None.

    Mirrors IsValidIPv4Address/IsValidIPv6Address followed by ValidateNonSpecialIP: pods never have
    unspecified, loopback or link-local addresses, so the API server refuses them. Loopback is allowed
    when `allow_loopback` is set (manifests mode, where backends run on this machine).
    """
    try:
        address = ipaddress.IPv4Address(value) if family == "IPv4" else ipaddress.IPv6Address(value)
    except ValueError:
        return f"must be a valid {family} address"
    # Go reads an IPv4-mapped IPv6 address as IPv4, and knows no IPv6 zones.
    if isinstance(address, ipaddress.IPv6Address) and (address.ipv4_mapped or address.scope_id):
        return f"must be a valid {family} address"
    if address.is_unspecified:
        return "may not be unspecified (0.0.0.0, ::)"
    if address.is_loopback and not allow_loopback:
        return "may not be in the loopback range (127.0.0.0/8, ::1/128)"
    if address.is_link_local:
        return "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
    if is_link_local_multicast(address):
        return "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"
    return None


def is_link_local_multicast(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Go's IP.IsLinkLocalMulticast: 224.0.0.0/24, or IPv6 multicast with link-local scope."""
    if isinstance(address, ipaddress.IPv4Address):
        return address in ipaddress.IPv4Network("224.0.0.0/24")
    packed = address.packed
    return packed[0] == 0xFF and packed[1] & 0x0F == 0x02


def is_fqdn(value: str) -> bool:
    """A fully qualified domain name (FQDN EndpointSlice addresses): two or more labels."""
    name = value.removesuffix(".")
    labels = name.split(".")
    return len(labels) >= 2 and is_dns1123_subdomain(name) and all(map(is_dns1123_label, labels))
