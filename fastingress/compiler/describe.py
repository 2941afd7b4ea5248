"""A readable, redacted description of a CompiledConfig: `fastingress routes` and `/debug/routes`.

Certificates appear by Secret, fingerprint, names and expiry only: never a PEM body.
"""

from __future__ import annotations

import datetime
from typing import Any

from fastingress.compiler.types import MATCH_EXACT, CompiledConfig, Route, UpstreamEndpoints


def _route(route: Route) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": None if route.match < 0 else (route.path if route.match == MATCH_EXACT else route.path or "/"),
        "match": {-1: "default", MATCH_EXACT: "exact"}.get(route.match, "prefix"),
        "backend": route.upstream or None,
        "ingress": str(route.ingress),
    }
    if route.match >= 0:
        out["rule"] = {"host": route.rule_host, "path": route.rule_path, "pathType": route.path_type}
    if route.redirect_https:
        out["redirect_https"] = True
    if route.hsts:
        out["hsts"] = True
    return out


def format_endpoint(address: str, port: int) -> str:
    """"ip:port", with IPv6 addresses in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _endpoints(ue: UpstreamEndpoints) -> list[str]:
    return [format_endpoint(e.address, e.port) for e in ue.endpoints]


def describe_config(config: CompiledConfig) -> dict[str, Any]:
    """JSON-ready description: hosts with routes in precedence order, upstreams, certificates.

    `default_certificate` is the fingerprint of the configured default certificate (also listed, with
    `"default": true`, under `certificates`), or None when the workers serve their self-signed one.
    """
    sni: dict[str, list[str]] = {}
    for entry in config.sni:
        sni.setdefault(entry.cert, []).append(entry.name)
    return {
        "hosts": [
            {"host": vh.host or "*", "routes": [_route(r) for r in vh.routes],
             "default": _route(vh.default) if vh.default else None}
            for vh in config.vhosts
        ],
        "upstreams": [
            {"name": u.name, "error": u.error or None, "external_name": u.external_name or None,
             "endpoints": _endpoints(ue), "last_resort": ue.last_resort}
            for u, ue in zip(config.upstreams, config.endpoints, strict=True)
        ],
        "certificates": [
            {"secret": str(c.secret), "fingerprint": c.fingerprint, "names": list(c.names),
             "not_after": c.not_after, "sni": sni.get(c.fingerprint, []),
             "default": c.fingerprint == config.default_cert}
            for c in config.certs
        ],
        "default_certificate": config.default_cert or None,
    }


def render_routes_text(config: CompiledConfig) -> str:
    """The compiled table for people: one block per host, one line per route."""
    desc = describe_config(config)
    ups = {u["name"]: u for u in desc["upstreams"]}
    lines: list[str] = []
    for host in desc["hosts"]:
        lines.append(f"{host['host']}")
        for r in [*host["routes"], *([host["default"]] if host["default"] else [])]:
            path = "(default backend)" if r["match"] == "default" else f"{r['path']} [{r['match']}]"
            up = ups.get(r["backend"] or "")
            target = r["backend"] or "(no Service backend: 503)"
            if up is not None:
                state = up["error"] or (f"external {up['external_name']}" if up["external_name"]
                                        else ", ".join(up["endpoints"]) or "no ready endpoints")
                target += f" -> {state}"
            flags = "".join(f"  ({name})" for key, name in (("redirect_https", "http->https"), ("hsts", "hsts"))
                            if r.get(key))
            lines.append(f"  {path:<40} {target}  <{r['ingress']}>{flags}")
    default = "self-signed (generated at start; FASTINGRESS_DEFAULT_TLS_SECRET names a Secret instead)"
    for cert in desc["certificates"]:
        served = ", ".join([*cert["sni"], *(["any other name (default)"] if cert["default"] else [])])
        lines.append(f"certificate {cert['secret']} sha256:{cert['fingerprint'][:16]} for "
                     f"{served} (not after {_utc(cert['not_after'])})")
        if cert["default"]:
            default = f"{cert['secret']} sha256:{cert['fingerprint'][:16]}"
    lines.append(f"default certificate: {default}")
    return "\n".join(lines)


def _utc(epoch_s: int) -> str:
    """Seconds since the epoch as a UTC date and time, for people (the JSON keeps the number)."""
    return datetime.datetime.fromtimestamp(epoch_s, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
