"""Ingress rules -> path drafts and default-backend choices (design.md section 3, Paths and Defaults).

Path semantics, decided here once:
- `Exact` matches the whole normalised path; its trailing "/" is significant ("/foo/" != "/foo").
- `Prefix` matches by "/"-separated elements; the rule's trailing "/" is ignored, so "/foo/" and
  "/foo" are the same route (a conflict when both are written), and "/" becomes "" (the root).
- `ImplementationSpecific` behaves as `Prefix`.
Rule paths are normalised like request paths (`fastingress.table.normalize`): percent-encoded
unreserved characters decoded (other escapes upper-cased), "//" merged, dot segments resolved. A rule
path that cannot be normalised (climbs above "/", bad escape) could never match: it is an
`InvalidPath` problem and is skipped.

Must not: resolve backends, look at Services or Secrets, or depend on dict order.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastingress.compiler.conflicts import PathDraft, precedence_key
from fastingress.compiler.types import MATCH_EXACT, MATCH_PREFIX
from fastingress.model.objects import Ingress, Kind
from fastingress.model.problems import Problem

# RFC 3986 section 2.3: the only characters whose escapes are decoded (as the request normaliser does)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")


def normalize_rule_path(path: str, path_type: str) -> tuple[str, int] | None:
    """Rule path and pathType -> (Route.path, match); None when the path cannot be normalised."""
    if not path.startswith("/"):
        return None
    canonical = _decode_unreserved(path) if "%" in path else path
    if canonical is None:
        return None
    resolved = _remove_dot_segments(canonical)
    if resolved is None:
        return None
    if path_type == "Exact":
        return resolved, MATCH_EXACT
    # Prefix and ImplementationSpecific: element semantics make a trailing "/" meaningless
    return (resolved[:-1] if resolved.endswith("/") else resolved), MATCH_PREFIX


def _decode_unreserved(path: str) -> str | None:
    """Decode %XX of unreserved characters, upper-case the other escapes; None on a bad escape or %00."""
    parts = path.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        hx = part[:2]
        if len(hx) < 2 or not set(hx) <= _HEX or int(hx, 16) == 0:
            return None
        char = chr(int(hx, 16))
        out.append(char if char in _UNRESERVED else "%" + hx.upper())
        out.append(part[2:])
    return "".join(out)


def _remove_dot_segments(path: str) -> str | None:
    """RFC 3986 section 5.2.4 with empty segments merged; None when ".." climbs above the root."""
    out: list[str] = []
    trailing = False  # the last segment was ".", ".." or empty: the result ends with "/"
    for seg in path.split("/")[1:]:
        if seg == "..":
            if not out:
                return None
            out.pop()
            trailing = True
        elif seg in (".", ""):
            trailing = True
        else:
            out.append(seg)
            trailing = False
    return "/" + "/".join(out) + ("/" if trailing and out else "")


def compile_path_drafts(ingresses: Sequence[Ingress]) -> tuple[list[PathDraft], list[Problem]]:
    """Every path of every rule, normalised; unnormalisable paths become `InvalidPath` problems."""
    drafts: list[PathDraft] = []
    problems: list[Problem] = []
    for ingress in ingresses:
        for i, rule in enumerate(ingress.rules):
            for j, entry in enumerate(rule.paths):
                normalised = normalize_rule_path(entry.path, entry.path_type)
                if normalised is None:
                    problems.append(Problem(
                        kind=Kind.INGRESS,
                        key=ingress.key,
                        field=f"spec.rules[{i}].http.paths[{j}].path",
                        reason="InvalidPath",
                        message=f"path {entry.path!r} cannot be normalised (it climbs above '/' "
                                "or has an invalid escape): skipped",
                    ))
                    continue
                drafts.append(PathDraft(
                    host=rule.host, path=normalised[0], match=normalised[1], ingress=ingress,
                    rule_index=i, path_index=j, rule_path=entry.path, path_type=entry.path_type,
                    backend=entry.backend,
                ))
    return drafts, problems


def route_order(draft: PathDraft) -> tuple[int, int, str, tuple[str, int, str, str]]:
    """Precedence inside a vhost: longest path first, Exact before Prefix, then path, then age."""
    return (-len(draft.path), draft.match, draft.path, precedence_key(draft.ingress))


def compile_default_choices(ingresses: Sequence[Ingress]) -> dict[str, Ingress | None]:
    """Every vhost host -> the Ingress whose defaultBackend it uses (None: a 404 from the proxy).

    `ingresses` must be in precedence order (oldest first). Named hosts use the oldest Ingress that
    has a rule for them and a defaultBackend, else the global default: the oldest Ingress with no
    rules at all and a defaultBackend. The catch-all host "" exists when some rule has no host or a
    global default exists; it picks among Ingresses with a host-less rule first, the same way.
    """
    global_default = next((ing for ing in ingresses if not ing.rules and ing.default_backend), None)
    own: dict[str, Ingress] = {}
    hosts: set[str] = set()
    for ingress in ingresses:
        for rule in ingress.rules:
            hosts.add(rule.host)
            if ingress.default_backend is not None and rule.host not in own:
                own[rule.host] = ingress
    if global_default is not None:
        hosts.add("")
    return {host: own.get(host, global_default) for host in sorted(hosts)}
