"""`fastingress explain`: what the proxy would do with a URL, and why, from one table generation.

The URL is taken verbatim: its authority is the Host header (case and port included), its path and
query are the raw request-target, and `https` means the request arrived over TLS with SNI = host
(no SNI for an IP literal). The host and path are normalised by the same functions the workers use
and looked up in the same table, so the answer is the proxy's, not a re-implementation.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import msgspec

from fastingress.compiler.describe import format_endpoint
from fastingress.table.lookup import NO_ROUTE, TableView
from fastingress.table.normalize import normalize_host, normalize_path


class Explanation(msgspec.Struct, frozen=True):
    """The answer for one URL (the `--json` line)."""

    url: str
    status: int  # 200 backend with endpoints, 308 redirect, 400 bad request, 404 no route, 503 unroutable
    backend: str | None  # "namespace/service:port" (Service port number) or None
    ingress: str | None  # "namespace/name" or None
    rule: dict[str, Any] | None  # {"host", "path", "pathType"} or {"host", "defaultBackend": True}
    redirect: str | None  # Location of a 308
    # "namespace/name" of the certificate served (https): the SNI match, else the configured default
    # certificate's Secret; None for http, or when the workers' self-signed certificate is served
    tls_secret: str | None
    endpoints: list[str]  # "ip:port" ([ip]:port for IPv6)
    reason: str  # one human sentence
    host: str | None = None  # normalised host used for routing
    path: str | None = None  # normalised request-target forwarded upstream (path + query)


def _split_url(url: str) -> tuple[str, str, str] | None:
    """(scheme, authority, request-target) without any normalisation; None when not a URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    rest = rest.split("#", 1)[0]  # clients never send the fragment
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:cut], rest[cut:]
    if not target.startswith("/"):
        target = "/" + target
    return scheme.lower(), authority, target


def _bad(url: str, reason: str, status: int = 400) -> Explanation:
    return Explanation(url=url, status=status, backend=None, ingress=None, rule=None, redirect=None,
                       tls_secret=None, endpoints=[], reason=reason)


def _sni_of(host: str) -> str | None:
    """The SNI a client sends for a host: none for IP literals (RFC 6066 section 3)."""
    bare = host[1:-1] if host.startswith("[") else host
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return host
    return None


def explain_url(view: TableView, url: str, https_port: int = 443) -> Explanation:
    """Route one URL through a table view exactly as a worker would."""
    parts = _split_url(url)
    if parts is None or parts[0] not in ("http", "https"):
        return _bad(url, "Only http:// and https:// URLs can be explained.")
    scheme, authority, target = parts
    if "@" in authority:
        return _bad(url, "The authority carries userinfo, which the proxy refuses (400).")
    host = normalize_host(authority.encode("latin-1"))
    if host is None:
        return _bad(url, f"The Host {authority!r} is not a valid host[:port] (400).")
    normal = normalize_path(target.encode("latin-1"))
    if normal is None:
        return _bad(url, f"The request-target {target!r} cannot be normalised safely (400).")
    path, query = normal
    host_s, forwarded = host.decode(), (path + query).decode("latin-1")
    tls_secret = None
    if scheme == "https":
        sni = _sni_of(host_s)
        cert = (view.routes.lookup_cert(sni.encode()) if sni else None) or view.routes.default_cert
        tls_secret = cert.secret if cert else None
    found = view.routes.match(host, path)
    if found == NO_ROUTE:
        return msgspec.structs.replace(
            _bad(url, f"No rule matches host {host_s!r} and path {path.decode('latin-1')!r}, and no "
                      "default backend applies.", 404), tls_secret=tls_secret, host=host_s, path=forwarded)
    return _explain_route(view, url, found, scheme, host_s, forwarded, tls_secret, https_port)


def _explain_route(view: TableView, url: str, index: int, scheme: str, host: str, forwarded: str,
                   tls_secret: str | None, https_port: int) -> Explanation:
    route = view.routes.route(index)
    if route.match < 0:
        rule: dict[str, Any] = {"host": route.host, "defaultBackend": True}
        how = f"the default backend of {route.ingress}"
    else:
        rule = {"host": route.rule_host, "path": route.rule_path, "pathType": route.path_type}
        how = f"rule host {route.rule_host or '*'!r} path {route.rule_path!r} ({route.path_type}) of {route.ingress}"
    common: dict[str, Any] = {"url": url, "ingress": route.ingress, "rule": rule, "tls_secret": tls_secret,
                              "host": host, "path": forwarded}
    if route.redirect_https and scheme == "http":
        port = "" if https_port == 443 else f":{https_port}"
        location = f"https://{host}{port}{forwarded}"
        return Explanation(status=308, backend=None, redirect=location, endpoints=[],
                           reason=f"Matched {how}; the host has a TLS certificate, so plain HTTP is "
                                  "redirected to HTTPS.", **common)
    if route.upstream < 0:
        return Explanation(status=503, backend=None, redirect=None, endpoints=[],
                           reason=f"Matched {how}, but its backend is not a Service (503).", **common)
    upstream = view.routes.upstream(route.upstream)
    endpoints = view.endpoints.endpoints(route.upstream)
    eps = [format_endpoint(a, p) for a, p in endpoints]
    base = {"backend": upstream.name, "redirect": None, "endpoints": eps, **common}
    if upstream.error:
        return Explanation(status=503, reason=f"Matched {how}, but {upstream.name} is unusable: "
                                              f"{upstream.error} (503).", **base)
    if upstream.external_name:
        return Explanation(status=200, reason=f"Matched {how}; {upstream.name} is ExternalName "
                                              f"{upstream.external_name}, resolved by DNS.", **base)
    if not eps:
        return Explanation(status=503, reason=f"Matched {how}, but {upstream.name} has no ready "
                                              "endpoint (503).", **base)
    extra = " (none ready: serving-but-terminating endpoints as a last resort)" \
        if view.endpoints.is_last_resort(route.upstream) else ""
    return Explanation(status=200, reason=f"Matched {how}; proxied to {upstream.name}{extra}.", **base)


def render_text(e: Explanation) -> str:
    """The same answer, for people."""
    lines = [e.url, f"  status      {e.status}"]
    if e.redirect:
        lines.append(f"  redirect    {e.redirect}")
    if e.backend:
        lines.append(f"  backend     {e.backend}")
    if e.endpoints:
        lines.append(f"  endpoints   {', '.join(e.endpoints)}")
    if e.ingress:
        lines.append(f"  ingress     {e.ingress}")
    if e.rule:
        lines.append("  rule        " + ", ".join(f"{k}={v}" for k, v in e.rule.items()))
    if e.tls_secret:
        lines.append(f"  tls secret  {e.tls_secret}")
    elif e.url.startswith("https://") and e.status != 400:
        lines.append("  tls secret  none: the self-signed default certificate")
    if e.path is not None:
        lines.append(f"  forwarded   {e.host}{e.path}")
    lines.append(f"  reason      {e.reason}")
    return "\n".join(lines)
