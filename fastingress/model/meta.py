"""Typed reads of raw API dicts, the issue collector, and `metadata` parsing shared by every kind.

Raw objects come from YAML or JSON and may be any shape. The readers here never raise on a wrong
type: they record an issue (as the API server's JSON decoder or ObjectMeta validation would refuse the
object) and return a neutral value so parsing continues and every issue is reported at once. A JSON
`null` is treated as an absent field, as Go's decoder does. This module knows no kind-specific rule.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from fastingress.model import validate
from fastingress.model.objects import Kind, ObjectKey
from fastingress.model.problems import Problem

# ObjectMeta validation: TotalAnnotationSizeLimitB in apimachinery (keys plus values).
ANNOTATIONS_MAX_BYTES = 256 * 1024

# RFC 3339 as metav1.Time decodes it: date, "T", time, optional fraction, then "Z" or an offset.
_RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


class Issue(msgspec.Struct, frozen=True):
    """One finding while parsing an object; `rejects` refuses the whole object."""

    field: str  # JSON path of the offending field, "" for the object itself
    reason: str  # stable CamelCase code
    message: str  # one human sentence
    rejects: bool = True


class Findings:
    """Collects issues while one object is parsed; turned into `Problem`s at the end."""

    __slots__ = ("issues",)

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def reject(self, field: str, reason: str, message: str) -> None:
        """Record an issue the API server would refuse the object for."""
        self.issues.append(Issue(field, reason, message))

    def note(self, field: str, reason: str, message: str) -> None:
        """Record an issue that does not make the object invalid."""
        self.issues.append(Issue(field, reason, message, rejects=False))

    @property
    def rejected(self) -> bool:
        """Whether any recorded issue refuses the object."""
        return any(issue.rejects for issue in self.issues)

    def build_problems(self, kind: Kind, key: ObjectKey, origin: str) -> tuple[Problem, ...]:
        """The issues as `Problem`s about `kind`/`key`."""
        return tuple(
            Problem(kind, key, i.field, i.reason, i.message, rejected=i.rejects, origin=origin) for i in self.issues
        )


class Options(msgspec.Struct, frozen=True):
    """What the caller of `convert_object` passes down to the per-kind parsers."""

    seq: int = 0  # order of appearance in the source, copied onto Ingress.seq
    allow_loopback: bool = False  # accept loopback EndpointSlice addresses (manifests mode)


class Meta(msgspec.Struct, frozen=True):
    """The `metadata` fields fastingress uses."""

    namespace: str  # "" for cluster-scoped kinds
    name: str
    created: str = ""  # creationTimestamp as "YYYY-MM-DDTHH:MM:SSZ", "" when absent
    resource_version: str = ""
    generation: int = 0
    uid: str = ""
    annotations: dict[str, str] = {}
    labels: dict[str, str] = {}


def join(path: str, name: str) -> str:
    """The JSON path of field `name` under `path`."""
    return f"{path}.{name}" if path else name


def describe(value: object) -> str:
    """A short, type-revealing rendering of a bad value for a message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def get_map(raw: Mapping[str, Any], name: str, path: str, found: Findings) -> Mapping[str, Any]:
    """Field `name` as a mapping; {} when absent or wrong (wrong is recorded)."""
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        found.reject(join(path, name), "InvalidType", f"must be an object, not {describe(value)}")
        return {}
    return value


def get_list(raw: Mapping[str, Any], name: str, path: str, found: Findings) -> list[Any]:
    """Field `name` as a list; [] when absent or wrong (wrong is recorded)."""
    value = raw.get(name)
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        found.reject(join(path, name), "InvalidType", f"must be a list, not {describe(value)}")
        return []
    return list(value)


def get_str(raw: Mapping[str, Any], name: str, path: str, found: Findings) -> str | None:
    """Field `name` as a string; None when absent or wrong (wrong is recorded)."""
    value = raw.get(name)
    if value is None or isinstance(value, str):
        return value
    found.reject(join(path, name), "InvalidType", f"must be a string, not {describe(value)}")
    return None


def get_int(raw: Mapping[str, Any], name: str, path: str, found: Findings) -> int | None:
    """Field `name` as an integer (a bool is not one); None when absent or wrong (wrong is recorded)."""
    value = raw.get(name)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    found.reject(join(path, name), "InvalidType", f"must be an integer, not {describe(value)}")
    return None


def get_bool(raw: Mapping[str, Any], name: str, path: str, found: Findings) -> bool | None:
    """Field `name` as a boolean; None when absent or wrong (wrong is recorded)."""
    value = raw.get(name)
    if value is None or isinstance(value, bool):
        return value
    found.reject(join(path, name), "InvalidType", f"must be a boolean, not {describe(value)}")
    return None


def as_map(value: object, path: str, found: Findings) -> Mapping[str, Any] | None:
    """A list element as a mapping; None when it is not one (recorded)."""
    if isinstance(value, Mapping):
        return value
    found.reject(path, "InvalidType", f"must be an object, not {describe(value)}")
    return None


def get_str_map(raw: Mapping[str, Any], name: str, path: str, found: Findings) -> dict[str, str]:
    """Field `name` as a string-to-string map (annotations, labels, stringData); bad entries recorded."""
    result: dict[str, str] = {}
    for key, value in get_map(raw, name, path, found).items():
        where = f"{join(path, name)}[{key}]"
        if not isinstance(key, str):
            found.reject(where, "InvalidType", f"key must be a string, not {describe(key)}")
        elif not isinstance(value, str):
            found.reject(where, "InvalidType", f"value must be a string, not {describe(value)}")
        else:
            result[key] = value
    return result


def peek_key(raw: Mapping[str, Any], *, cluster_scoped: bool, default_namespace: str) -> ObjectKey | None:
    """The object's key read leniently (no validation); None when there is no string name."""
    metadata = raw.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return None
    namespace = metadata.get("namespace")
    if cluster_scoped:
        namespace = ""
    elif not isinstance(namespace, str) or not namespace:
        namespace = default_namespace
    return ObjectKey(namespace, name)


def parse_timestamp(value: object) -> str | None:
    """A creationTimestamp normalised to UTC "YYYY-MM-DDTHH:MM:SSZ"; None when it is not RFC 3339.

    Accepts RFC 3339 strings (fractions and offsets allowed) and the `datetime` YAML produces for an
    unquoted timestamp (a naive one is UTC, as YAML's spec says). Fractions are dropped: the API server
    stores whole seconds.
    """
    if isinstance(value, str):
        if _RFC3339_RE.fullmatch(value) is None:
            return None
        try:
            value = dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
        except ValueError:  # e.g. month 13: the shape matched but the date does not exist
            return None
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError:  # an offset that moves year 1 or 9999 out of range
        return None
    # Not strftime: its %Y does not zero-pad years below 1000 on glibc.
    return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"


def parse_meta(
    raw: Mapping[str, Any],
    found: Findings,
    *,
    is_valid_name: Callable[[str], bool],
    name_rule: str,
    cluster_scoped: bool,
    default_namespace: str,
) -> Meta:
    """`metadata` validated like ObjectMeta; `name_rule` words the name syntax for messages."""
    metadata = get_map(raw, "metadata", "", found)
    name = get_str(metadata, "name", "metadata", found) or ""
    if not name:
        found.reject("metadata.name", "InvalidName", "name is required")
    elif not is_valid_name(name):
        found.reject("metadata.name", "InvalidName", f"{describe(name)} must be {name_rule}")
    namespace = "" if cluster_scoped else parse_namespace(metadata, found, default_namespace)
    created_raw = metadata.get("creationTimestamp")
    created = "" if created_raw is None else parse_timestamp(created_raw)
    if created is None:
        found.reject(
            "metadata.creationTimestamp", "InvalidTimestamp", f"{describe(created_raw)} is not an RFC 3339 time"
        )
    return Meta(
        namespace=namespace,
        name=name,
        created=created or "",
        resource_version=get_str(metadata, "resourceVersion", "metadata", found) or "",
        generation=get_int(metadata, "generation", "metadata", found) or 0,
        uid=get_str(metadata, "uid", "metadata", found) or "",
        annotations=parse_annotations(metadata, found),
        labels=parse_labels(metadata, found),
    )


def parse_namespace(metadata: Mapping[str, Any], found: Findings, default_namespace: str) -> str:
    """`metadata.namespace`, `default_namespace` when absent; must be a DNS-1123 label."""
    namespace = get_str(metadata, "namespace", "metadata", found) or default_namespace
    if not validate.is_dns1123_label(namespace):
        found.reject("metadata.namespace", "InvalidName", f"{describe(namespace)} must be a DNS-1123 label")
    return namespace


def parse_annotations(metadata: Mapping[str, Any], found: Findings) -> dict[str, str]:
    """`metadata.annotations`: qualified-name keys (checked lower-cased, as the API server does)."""
    annotations = get_str_map(metadata, "annotations", "metadata", found)
    for key in annotations:
        if not validate.is_qualified_name(key.lower()):
            found.reject(f"metadata.annotations[{key}]", "InvalidAnnotation", "key must be a qualified name")
    size = sum(len((k + v).encode("utf-8", "replace")) for k, v in annotations.items())
    if size > ANNOTATIONS_MAX_BYTES:
        found.reject("metadata.annotations", "InvalidAnnotation", "may not exceed 256 KiB in total")
    return annotations


def parse_labels(metadata: Mapping[str, Any], found: Findings) -> dict[str, str]:
    """`metadata.labels`: qualified-name keys and label-syntax values."""
    labels = get_str_map(metadata, "labels", "metadata", found)
    for key, value in labels.items():
        if not validate.is_qualified_name(key):
            found.reject(f"metadata.labels[{key}]", "InvalidLabel", "key must be a qualified name")
        elif not validate.is_label_value(value):
            found.reject(f"metadata.labels[{key}]", "InvalidLabel", f"{describe(value)} is not a valid label value")
    return labels
