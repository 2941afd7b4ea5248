"""The Kubernetes API as the kube source and the status writer use it: one client, raw lists and watch streams.

Responsibility: build one `kubernetes.client.ApiClient` (in-cluster config when running in a pod,
else `KUBECONFIG` / `~/.kube/config`), describe the watched kinds, and turn the official client's
list and watch calls into plain dicts: a list as (items, resourceVersion) across pages, a watch as an
iterator of decoded event dicts. No caching, no retry policy (the reflector owns both), no model.

Why raw JSON and not the client's models: `kubernetes` 37 validates every object into pydantic
models at ~0.8 ms each (a 5,000-Ingress relist would take 4 s of CPU); `_preload_content=False`
keeps the client's config, auth and URL building and lets msgspec decode the body in ~0.1 ms. Our
own line loop also avoids `kubernetes.watch.Watch`'s hidden reconnects and its retry of a 410 with
the same stale resourceVersion (docs/dev/testing.md lists the pitfalls).

Client settings and why:
- `retries = False`: urllib3 otherwise retries refused connections, read timeouts and 503s itself
  with no backoff and unseen by us; the reflector's backoff is the one retry policy.
- TCP keepalive (the client's client-go-like options): a watch on a silently dead connection is
  noticed in about 30 s + 9 x 15 s instead of at the end of its read timeout.
- A pool large enough for one connection per open watch plus the writers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import kubernetes.client
import kubernetes.config
import msgspec
from kubernetes.config.config_exception import ConfigException

from fastingress.errors import SourceError
from fastingress.model.objects import Kind

__all__ = [
    "CONNECT_TIMEOUT_S",
    "describe_error",
    "KINDS",
    "KindSpec",
    "ListResult",
    "client_for",
    "is_gone",
    "iter_watch",
    "list_all",
    "load_client",
    "open_watch",
]

CONNECT_TIMEOUT_S = 5.0
LIST_READ_TIMEOUT_S = 60.0  # one page of a list; a watch's read timeout is its timeoutSeconds plus a margin
WATCH_READ_MARGIN_S = 30.0
PAGE_SIZE = 500  # client-go's reflector page size
POOL_SIZE = 16  # 5-7 open watches, the status writer, the elector and the event recorder

_decode = msgspec.json.Decoder().decode


class KindSpec(NamedTuple):
    """One watched kind: how to call its list, and what its items lack (list items carry no kind)."""

    kind: Kind
    api_version: str
    api_kind: str
    api: Callable[[kubernetes.client.ApiClient], Any]
    all_namespaces: str  # method name listing every namespace (or the cluster-scoped list)
    namespaced: str  # method name listing one namespace; "" for cluster-scoped kinds
    field_selector: str = ""


KINDS: tuple[KindSpec, ...] = (
    KindSpec(Kind.INGRESS_CLASS, "networking.k8s.io/v1", "IngressClass", kubernetes.client.NetworkingV1Api,
             "list_ingress_class", ""),
    KindSpec(Kind.INGRESS, "networking.k8s.io/v1", "Ingress", kubernetes.client.NetworkingV1Api,
             "list_ingress_for_all_namespaces", "list_namespaced_ingress"),
    KindSpec(Kind.SERVICE, "v1", "Service", kubernetes.client.CoreV1Api,
             "list_service_for_all_namespaces", "list_namespaced_service"),
    KindSpec(Kind.ENDPOINT_SLICE, "discovery.k8s.io/v1", "EndpointSlice", kubernetes.client.DiscoveryV1Api,
             "list_endpoint_slice_for_all_namespaces", "list_namespaced_endpoint_slice"),
    # only certificates: the API server filters, so opaque Secrets (tokens, passwords) never reach us
    KindSpec(Kind.SECRET, "v1", "Secret", kubernetes.client.CoreV1Api,
             "list_secret_for_all_namespaces", "list_namespaced_secret", "type=kubernetes.io/tls"),
)


class ListResult(NamedTuple):
    items: list[dict[str, Any]]  # raw objects, with kind and apiVersion filled in
    resource_version: str  # the list's own resourceVersion: where the watch starts


def load_client() -> kubernetes.client.ApiClient:
    """An ApiClient from the in-cluster service account, else from KUBECONFIG or ~/.kube/config.

    Raises SourceError when neither is usable. Never touches the client's global default configuration.
    """
    config = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
    except ConfigException as in_cluster:
        try:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                client_configuration=config, persist_config=False)
        except (ConfigException, OSError) as kubeconfig:
            where = os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise SourceError(f"no Kubernetes API to talk to: not in a cluster ({in_cluster}) and no usable "
                              f"kubeconfig at {where} ({kubeconfig}); use --manifests DIR to run without "
                              f"a cluster") from kubeconfig
    return client_for(config)


def client_for(config: kubernetes.client.Configuration) -> kubernetes.client.ApiClient:
    """An ApiClient with our pool, retry and keepalive settings applied to `config` (see the docstring)."""
    config.retries = False
    config.keep_alive = True
    config.connection_pool_maxsize = max(config.connection_pool_maxsize or 0, POOL_SIZE)
    return kubernetes.client.ApiClient(config)


def _list_call(client: kubernetes.client.ApiClient, spec: KindSpec, namespace: str,
               field_selector: str) -> Callable[..., Any]:
    api = spec.api(client)
    if namespace and spec.namespaced:
        method = getattr(api, spec.namespaced)
        return lambda **kw: method(namespace, field_selector=field_selector or None, **kw)
    method = getattr(api, spec.all_namespaces)
    return lambda **kw: method(field_selector=field_selector or None, **kw)


def list_all(client: kubernetes.client.ApiClient, spec: KindSpec, namespace: str = "",
             field_selector: str = "") -> ListResult:
    """Every object of a kind (in `namespace`, "" for all), page by page, as one consistent list.

    Raises `kubernetes.client.ApiException` (410 when a continue token expired: the caller relists)
    and urllib3 errors when the server cannot be reached.
    """
    call = _list_call(client, spec, namespace, field_selector or spec.field_selector)
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        resp = call(limit=PAGE_SIZE, _continue=token, _preload_content=False,
                    _request_timeout=(CONNECT_TIMEOUT_S, LIST_READ_TIMEOUT_S))
        body = _decode(resp.data)
        meta = body.get("metadata") or {}
        for item in body.get("items") or ():
            item["kind"], item["apiVersion"] = spec.api_kind, spec.api_version
            items.append(item)
        token = meta.get("continue") or None
        if token is None:
            return ListResult(items, str(meta.get("resourceVersion") or ""))


def open_watch(client: kubernetes.client.ApiClient, spec: KindSpec, resource_version: str, timeout_s: int,
               namespace: str = "", field_selector: str = "") -> Any:
    """Start a watch from `resource_version` with bookmarks; the open urllib3 response (stream it with
    `iter_watch`, end it early with `shutdown()`). Raises like `list_all`."""
    call = _list_call(client, spec, namespace, field_selector or spec.field_selector)
    return call(watch=True, resource_version=resource_version, timeout_seconds=timeout_s,
                allow_watch_bookmarks=True, _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_S, timeout_s + WATCH_READ_MARGIN_S))


def iter_watch(resp: Any) -> Iterator[dict[str, Any]]:
    """The decoded events of a watch response, one per line, until the server ends the stream.

    A clean end (the final zero-length chunk at timeoutSeconds) just stops; a cut connection raises
    urllib3's ProtocolError; a line that is not a JSON object raises msgspec.DecodeError.
    """
    pending = b""
    for chunk in resp.stream(65536, decode_content=True):
        if pending:
            chunk = pending + chunk
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if end > start:
                yield _decode(chunk[start:end])
            start = end + 1
        pending = chunk[start:]
    if pending.strip():
        yield _decode(pending)


def is_gone(status: Any) -> bool:
    """Whether an ERROR event's Status (or an ApiException status code) means "relist": HTTP 410.

    Older API servers say reason `Gone`, newer `Expired`: only the code is reliable."""
    if isinstance(status, int):
        return status == 410
    return isinstance(status, dict) and status.get("code") == 410


def describe_error(exc: BaseException) -> str:
    """A short, stable reason for an API failure: equal failures give equal strings, so callers can log
    once per distinct reason (a urllib3 message embeds object addresses and would differ every time)."""
    if isinstance(exc, kubernetes.client.ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip()
    reason = getattr(exc, "reason", None)  # MaxRetryError: the underlying error is what tells
    if isinstance(reason, BaseException):
        return f"{type(exc).__name__} ({type(reason).__name__})"
    return type(exc).__name__
