"""Wire-level pieces of the test API server: `Status` bodies and `ApiError`, label and field selectors,
merge and JSON patches, the apiserver's boolean query parameters.

Pure functions, no I/O. Messages and reasons copy the real kube-apiserver's (apimachinery
`pkg/api/errors`), because clients and people read them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from tests.support.apiserver.resources import ResourceType

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests",
           500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


def status_body(code: int, message: str, reason: str | None = None,
                details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure `Status` exactly as the real server shapes it."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason or REASONS.get(code, ""), "code": code}
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    """An error answer: `status` is the `Status` body, `code` its HTTP status."""

    def __init__(self, code: int, message: str, reason: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status_body(code, message, reason, details)


def _details(rt: ResourceType, name: str) -> dict[str, Any]:
    return {"name": name, "group": rt.group, "kind": rt.plural}


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rt.qualified} "{name}" not found', details=_details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, f'{rt.qualified} "{name}" already exists', "AlreadyExists", _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str = "the object has been modified; please apply your changes "
             "to the latest version and try again") -> ApiError:
    return ApiError(409, f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}', "Conflict",
                    _details(rt, name))


def invalid(rt: ResourceType, name: str, field: str, detail: str) -> ApiError:
    details = _details(rt, name) | {"causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}]}
    return ApiError(422, f'{rt.kind} "{name}" is invalid: {field}: {detail}', "Invalid", details)


def too_old(rv: int, oldest: int) -> dict[str, Any]:
    """The `Status` of a watch ERROR event for an expired resourceVersion (cacher `errWatchCacheTooOld`)."""
    return status_body(410, f"too old resource version: {rv} ({oldest})", "Expired")


def truthy(value: str | None) -> bool:
    """apiserver bool parameters (`Convert_Slice_string_To_bool`): absent, "", "false", "0" are false."""
    return value is not None and value.lower() not in ("", "false", "0")


# --- selectors ------------------------------------------------------------------------------------------
Predicate = Callable[[dict[str, Any]], bool]

_SET_REQ = re.compile(r"^\s*([^\s!=,()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_REQ = re.compile(r"^\s*([^\s!=,()]+)\s*(==|=|!=)\s*([^\s!=,()]*)\s*$")
_EXISTS_REQ = re.compile(r"^\s*(!?)\s*([^\s!=,()]+)\s*$")


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for ch in selector:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def _requirement(key: str, op: str, values: frozenset[str]) -> Callable[[dict[str, str]], bool]:
    if op == "in":
        return lambda labels: labels.get(key) in values
    if op == "notin":
        return lambda labels: labels.get(key) not in values
    if op == "exists":
        return lambda labels: key in labels
    if op == "!exists":
        return lambda labels: key not in labels
    value = next(iter(values))
    if op == "!=":
        return lambda labels: labels.get(key) != value
    return lambda labels: labels.get(key) == value


def label_selector(selector: str | None) -> Predicate:
    """`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-joined (ANDed)."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for req in _split(selector or ""):
        if m := _SET_REQ.match(req):
            checks.append(_requirement(m[1], m[2], frozenset(v.strip() for v in m[3].split(",") if v.strip())))
        elif m := _EQ_REQ.match(req):
            checks.append(_requirement(m[1], m[2], frozenset([m[3]])))
        elif m := _EXISTS_REQ.match(req):
            checks.append(_requirement(m[2], "!exists" if m[1] else "exists", frozenset()))
        else:
            raise ApiError(400, f"unable to parse requirement: {req!r}")

    def match(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(check(labels) for check in checks)
    return match


def _field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def field_selector(selector: str | None, rt: ResourceType) -> Predicate:
    """`f=v`, `f==v`, `f!=v`, comma-joined; fields other than the kind's field labels are a 400."""
    allowed = rt.field_labels | {"metadata.name", "metadata.namespace"}
    checks: list[Predicate] = []
    for req in _split(selector or ""):
        m = _EQ_REQ.match(req)
        if not m:
            raise ApiError(400, f"invalid selector: {req!r}; can't understand {req!r}")
        field, op, value = m[1], m[2], m[3]
        if field not in allowed:
            raise ApiError(400, f'field label not supported: {field}')
        checks.append(_field_requirement(field, op == "!=", value))
    return lambda obj: all(check(obj) for check in checks)


def _field_requirement(field: str, negate: bool, value: str) -> Predicate:
    return lambda obj: (_field_value(obj, field) == value) != negate


# --- patches --------------------------------------------------------------------------------------------
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
PATCH_TYPES = (MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch. Also used for strategic merge patch: lists are replaced, never merged
    by key, and `$patch` directives are not understood (a documented simplification)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> tuple[Any, str]:
    node = doc
    for part in parts[:-1]:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, f"the path {'/'.join(parts)!r} does not exist") from exc
    return node, parts[-1]


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch: `add`, `remove`, `replace`, `test` (enough for what clients send)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        if not parts:
            raise ApiError(422, "JSON patch on the whole document is not supported")
        parent, key = _parent(doc, parts)
        try:
            if kind == "test":
                current = parent[int(key)] if isinstance(parent, list) else parent[key]
                if current != op.get("value"):
                    raise ApiError(422, f"testing value {op.get('path')} failed")
            elif kind == "remove":
                del parent[int(key) if isinstance(parent, list) else key]
            elif kind == "replace":
                if isinstance(parent, list):
                    parent[int(key)] = op["value"]
                else:
                    if key not in parent:
                        raise ApiError(422, f"replace operation does not apply: doc is missing path: {op['path']}")
                    parent[key] = op["value"]
            elif kind == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if key == "-" else int(key), op["value"])
                else:
                    parent[key] = op["value"]
            else:
                raise ApiError(422, f"JSON patch operation {kind!r} is not supported by the test API server")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, f"JSON patch {kind} {op.get('path')!r} does not apply") from exc
    return doc
