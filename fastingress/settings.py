"""Static configuration: one frozen `Settings`, read from `FASTINGRESS_*` environment variables.

Each field is declared once, with its type, default, unit (in the name: `_S` seconds, `_BYTES`) and
a one-line description; the environment variable is `FASTINGRESS_` + the field name upper-cased.
`docs/configuration.md` is generated from these declarations (`python -m fastingress.settings`),
and a test fails when the committed file is stale.

This is the only module that reads `os.environ` (in `from_environ`); `from_env` is pure so tests
pass a dict. Command-line flags override the environment (cli.py applies them with `replace`).
Static settings need a restart; routing is dynamic and never overridden here.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import typing
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from fastingress.errors import ConfigError

ENV_PREFIX = "FASTINGRESS_"


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Every static setting of the supervisor and the workers."""

    controller_name: Annotated[str, _doc("IngressClass `spec.controller` value marking classes as ours.")] = (
        "fastingress.io/ingress-controller")
    ingress_class: Annotated[str, _doc(
        "IngressClass name treated as ours when no IngressClass object of that name exists "
        "(handy for manifests without an IngressClass).")] = "fastingress"
    workers: Annotated[int, _doc("Worker processes; 0 means one per CPU core.")] = 0
    bind_address: Annotated[str, _doc("Address the workers' HTTP and HTTPS listeners bind.")] = "0.0.0.0"
    http_port: Annotated[int, _doc("HTTP listener port of the workers; 0 picks a free port.")] = 8080
    https_port: Annotated[int, _doc("HTTPS listener port of the workers; 0 picks a free port.")] = 8443
    admin_port: Annotated[int, _doc(
        "Admin server port: /healthz, /readyz, /metrics, /debug/routes.")] = 10254
    admin_address: Annotated[str, _doc("Address the admin server binds.")] = "0.0.0.0"
    redirect_https_port: Annotated[int, _doc(
        "Port clients use for HTTPS, named in HTTP->HTTPS redirects unless it is 443.")] = 443
    drain_timeout_s: Annotated[float, _doc(
        "On SIGTERM, how long in-flight requests may take to finish before connections are closed.")] = 25.0
    worker_heartbeat_timeout_s: Annotated[float, _doc(
        "A worker whose event loop wrote no heartbeat for this long is terminated and replaced.")] = 10.0
    worker_module: Annotated[str, _doc(
        "Python module the supervisor runs as each worker process (`python -m`); tests substitute a fake.")] = (
        "workers.main")
    timeout_header_read_s: Annotated[float, _doc(
        "Absolute deadline for a request head, from accept or the end of the previous response (408).")] = 10.0
    timeout_body_idle_s: Annotated[float, _doc(
        "Longest pause between two reads of a request body (408).")] = 60.0
    timeout_keepalive_idle_s: Annotated[float, _doc(
        "Idle client keep-alive connections are closed after this long (nginx keepalive_timeout).")] = 75.0
    timeout_upstream_connect_s: Annotated[float, _doc("Connecting to an endpoint (then retry or 502).")] = 5.0
    timeout_upstream_response_s: Annotated[float, _doc(
        "From the request sent to the backend's response head (504), and longest pause in its body.")] = 60.0
    upstream_keepalive_max: Annotated[int, _doc(
        "Idle keep-alive connections kept per endpoint per worker (ingress-nginx: 320).")] = 320
    upstream_keepalive_idle_s: Annotated[float, _doc(
        "Idle upstream connections are closed after this long.")] = 60.0
    limit_body_bytes: Annotated[int, _doc("Largest request body accepted (413); 0 means no limit.")] = 0
    limit_requests_per_connection: Annotated[int, _doc(
        "Requests served on one client connection before it is closed (nginx keepalive_requests).")] = 1000
    limit_connections_per_worker: Annotated[int, _doc(
        "Client connections one worker holds at once; more are closed at accept "
        "(ingress-nginx max-worker-connections).")] = 16384
    limit_connections_per_ip: Annotated[int, _doc(
        "Client connections one address may hold on one worker (503, then closed); 0: no limit.")] = 0
    limit_body_min_rate_bytes_s: Annotated[int, _doc(
        "Slowest request body accepted, averaged after its first 10 s (408: slow-POST defence); 0: off.")] = 64
    timeout_connection_lifetime_s: Annotated[float, _doc(
        "A client connection is closed after its current response once this old (nginx keepalive_time).")] = 3600.0
    lb_algorithm: Annotated[str, _doc(
        "Endpoint choice: `round_robin` or `least_request` (power of two choices).")] = "round_robin"
    eject_consecutive_failures: Annotated[int, _doc(
        "Consecutive connect failures after which an endpoint is ejected for a while (passive health).")] = 3
    eject_duration_s: Annotated[float, _doc("How long an ejected endpoint is skipped.")] = 10.0
    trusted_proxies: Annotated[str, _doc(
        "Comma-separated CIDRs whose X-Forwarded-* fields are kept; from others they are overwritten.")] = ""
    access_log: Annotated[bool, _doc("Write one JSON access-log line per request to stdout.")] = True
    reconcile_holdoff_s: Annotated[float, _doc(
        "A new table is compiled this long after the last change (a burst of changes becomes one table).")] = 0.05
    reconcile_max_delay_s: Annotated[float, _doc(
        "...but never later than this after the first unpublished change.")] = 0.3
    manifests_dir: Annotated[str, _doc(
        "Manifests directory to serve from instead of the Kubernetes API (`--manifests`).")] = ""
    manifests_poll_s: Annotated[float, _doc(
        "How often the manifests directory is checked for changes, in seconds.")] = 0.25
    watch_namespace: Annotated[str, _doc(
        "Watch Ingresses, Services, EndpointSlices and Secrets in this namespace only; empty: all namespaces "
        "(IngressClasses are cluster-scoped and always watched).")] = ""
    kube_watch_timeout_s: Annotated[int, _doc(
        "`timeoutSeconds` of each Kubernetes watch request (a little jitter is added); the watch is then "
        "resumed from its last resourceVersion.")] = 300
    allow_loopback_endpoints: Annotated[bool, _doc(
        "Accept loopback addresses (127.0.0.0/8, ::1) in EndpointSlices from the API, which a real API server "
        "refuses: only for development and tests against a local API server.")] = False
    publish_service: Annotated[str, _doc(
        "`namespace/name` of the Service whose load-balancer addresses the leader writes into "
        "`status.loadBalancer` of every Ingress we own.")] = ""
    publish_address: Annotated[str, _doc(
        "Comma-separated IPs or host names written into Ingress status instead of a Service's addresses.")] = ""
    update_status: Annotated[bool, _doc(
        "Write Ingress status (leader-elected: one replica at a time) and Events about broken objects.")] = True
    pod_name: Annotated[str, _doc(
        "This replica's identity in the leader-election Lease and in Events (set from the downward API); "
        "empty: the host name.")] = ""
    pod_namespace: Annotated[str, _doc(
        "Namespace of the leader-election Lease (set from the downward API); empty: the service account's "
        "namespace in a cluster, else `default`.")] = ""
    election_id: Annotated[str, _doc("Name of the leader-election Lease.")] = "fastingress-leader"
    lease_duration_s: Annotated[float, _doc(
        "How long a Lease holds without renewal before another replica may take it over.")] = 15.0
    lease_renew_deadline_s: Annotated[float, _doc(
        "The leader steps down when it could not renew for this long (less than the lease duration).")] = 10.0
    lease_retry_period_s: Annotated[float, _doc(
        "How often the Lease is renewed by the leader and tried by the others.")] = 2.0
    default_tls_secret: Annotated[str, _doc(
        "`namespace/name` of a kubernetes.io/tls Secret served when no certificate matches the SNI name; "
        "empty: a self-signed certificate generated at start.")] = ""
    hsts: Annotated[bool, _doc(
        "Send Strict-Transport-Security on HTTPS responses of hosts that have a certificate of their own.")] = True
    hsts_max_age_s: Annotated[int, _doc(
        "HSTS `max-age`, in seconds (ingress-nginx: one year); 0 tells browsers to forget the host.")] = 31536000
    hsts_include_subdomains: Annotated[bool, _doc("Add `includeSubDomains` to the HSTS header.")] = False
    tls_handshake_timeout_s: Annotated[float, _doc(
        "A TLS handshake not complete after this long is aborted (uvloop's default is 60 s).")] = 10.0
    tls_keys_dir: Annotated[str, _doc(
        "Parent directory of the private directory the certificate and key files are written to; "
        "empty: /dev/shm when it exists (tmpfs: keys never reach a disk), else the system temp directory.")] = ""
    log_format: Annotated[str, _doc("Log line format: `json` (one orjson object per line) or `text`.")] = (
        "json")
    log_level: Annotated[str, _doc("Minimum log level: TRACE, DEBUG, INFO, WARNING or ERROR.")] = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Settings from a mapping of environment variables; every bad value reported at once."""
        values: dict[str, Any] = {}
        errors: list[str] = []
        for name, ftype in _field_types().items():
            raw = env.get(env_name(name))
            if raw is None:
                continue
            try:
                values[name] = msgspec.convert(raw, ftype, strict=False)
            except msgspec.ValidationError as exc:
                errors.append(f"{env_name(name)}={raw!r}: {exc}")
        settings = cls(**values)
        errors.extend(settings.check())  # range checks too, so every problem is reported at once
        if errors:
            raise ConfigError(errors)
        return settings

    @classmethod
    def from_environ(cls) -> Settings:
        return cls.from_env(os.environ)

    def check(self) -> list[str]:
        """Cross-field and range checks, as messages naming the environment variable."""
        problems = []
        for name in ("http_port", "https_port", "admin_port"):
            if not 0 <= getattr(self, name) <= 65535:
                problems.append(f"{env_name(name)} must be 0-65535, got {getattr(self, name)}")
        if not 1 <= self.redirect_https_port <= 65535:
            problems.append(f"{env_name('redirect_https_port')} must be 1-65535")
        if self.workers < 0:
            problems.append(f"{env_name('workers')} must be >= 0")
        if self.log_format not in ("json", "text"):
            problems.append(f"{env_name('log_format')} must be json or text, got {self.log_format!r}")
        if self.lb_algorithm not in ("round_robin", "least_request"):
            problems.append(f"{env_name('lb_algorithm')} must be round_robin or least_request")
        for f in fields():
            if f.name.endswith("_s") and f.name not in _ZERO_ALLOWED and getattr(self, f.name) <= 0:
                problems.append(f"{env_name(f.name)} must be > 0")
        if self.hsts_max_age_s < 0:
            problems.append(f"{env_name('hsts_max_age_s')} must be >= 0")
        if self.default_tls_secret and not _OBJECT_KEY.match(self.default_tls_secret):
            problems.append(f"{env_name('default_tls_secret')} must be namespace/name (DNS names, lower case), "
                            f"got {self.default_tls_secret!r}")
        if self.publish_service and not _OBJECT_KEY.match(self.publish_service):
            problems.append(f"{env_name('publish_service')} must be namespace/name, got {self.publish_service!r}")
        if not self.lease_retry_period_s < self.lease_renew_deadline_s < self.lease_duration_s:
            problems.append(f"{env_name('lease_retry_period_s')} < {env_name('lease_renew_deadline_s')} < "
                            f"{env_name('lease_duration_s')} must hold")
        if self.kube_watch_timeout_s < 1:
            problems.append(f"{env_name('kube_watch_timeout_s')} must be >= 1")
        problems.extend(_check_cidrs(self.trusted_proxies))
        return problems


# `_s` settings for which 0 is meaningful (HSTS max-age=0 clears a browser's HSTS entry, RFC 6797 6.1.1)
_ZERO_ALLOWED = frozenset({"hsts_max_age_s"})
# namespace (RFC 1123 label, at most 63) / name (RFC 1123 subdomain, at most 253), as the API server checks them
_OBJECT_KEY = re.compile(r"^(?=[^/]{1,63}/)[a-z0-9]([-a-z0-9]*[a-z0-9])?/"
                         r"(?=[^/]{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _check_cidrs(value: str) -> list[str]:
    problems = []
    for part in (p.strip() for p in value.split(",")):
        if part:
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                problems.append(f"{env_name('trusted_proxies')}: {part!r} is not a CIDR")
    return problems


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


class FieldInfo(msgspec.Struct, frozen=True):
    """One declared setting: field name, Python type, default and description."""

    name: str
    type: Any
    default: Any
    description: str


def fields() -> list[FieldInfo]:
    """The declared settings, in declaration order."""
    hints = typing.get_type_hints(Settings, include_extras=True)
    out = []
    for name, default in zip(Settings.__struct_fields__, Settings.__struct_defaults__, strict=True):
        base, *extras = typing.get_args(hints[name])
        desc = next((m.description for m in extras if isinstance(m, msgspec.Meta)), "") or ""
        out.append(FieldInfo(name, base, default, desc))
    return out


def _field_types() -> dict[str, Any]:
    return {f.name: f.type for f in fields()}


def render_markdown() -> str:
    """docs/configuration.md, generated from the Settings declarations."""
    lines = [
        "# Configuration",
        "",
        "<!-- GENERATED by `python -m fastingress.settings > docs/configuration.md`; do not edit. -->",
        "",
        "Static settings come from environment variables (command-line flags override them) and need a",
        "restart. Routing comes from Ingresses (or a manifests directory) and changes without one.",
        "Booleans accept `1/0/true/false`; `_S` values are seconds (float); `_BYTES` values are bytes.",
        "",
        "| Variable | Default | Description |",
        "|---|---|---|",
    ]
    for f in fields():
        default = f"`{f.default}`" if f.default != "" else "(empty)"
        lines.append(f"| `{env_name(f.name)}` | {default} | {f.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
