"""`LoadBalancerIndex`: the load-balancer addresses the Kubernetes source saw, for the status writer.

The model keeps no status (a status change must never rebuild the table), but the status writer needs
two facts the watches already deliver: the `status.loadBalancer.ingress` each Ingress carries now (so
it writes only when that differs from what it should be), and the addresses of the published Service
(`FASTINGRESS_PUBLISH_SERVICE`). The kube source records both here from the raw objects it receives;
the status writer reads them from its own thread.

Thread safety: writers replace whole tuples inside dicts under a lock; readers take the lock for one
lookup. The `on_change` callback runs on the source's thread after the lock is released and must only
signal (set an Event).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastingress.model.objects import ObjectKey

__all__ = ["LBAddress", "LoadBalancerIndex", "parse_lb_ingress", "service_addresses"]

LBAddress = tuple[str, str]
"""One `loadBalancer.ingress[]` entry as (ip, hostname), "" for the missing one; tuples of them are sorted."""


def parse_lb_ingress(status: Any) -> tuple[LBAddress, ...]:
    """The sorted (ip, hostname) pairs of a raw `status` object's `loadBalancer.ingress` list."""
    lb = status.get("loadBalancer") if isinstance(status, Mapping) else None
    entries = lb.get("ingress") if isinstance(lb, Mapping) else None
    if not isinstance(entries, list):
        return ()
    out = set()
    for entry in entries:
        if isinstance(entry, Mapping):
            ip, hostname = entry.get("ip") or "", entry.get("hostname") or ""
            if isinstance(ip, str) and isinstance(hostname, str) and (ip or hostname):
                out.add((ip, hostname))
    return tuple(sorted(out))


def service_addresses(raw: Mapping[str, Any]) -> tuple[LBAddress, ...]:
    """What a Service publishes, as ingress-nginx reads it: its load-balancer ingress entries; for a
    Service without them, its `spec.externalIPs`; for a ClusterIP Service, its cluster IP."""
    found = parse_lb_ingress(raw.get("status"))
    if found:
        return found
    spec: Mapping[str, Any] = raw.get("spec") or {}
    if not isinstance(spec, Mapping):
        return ()
    external = spec.get("externalIPs")
    if isinstance(external, list) and external:
        return tuple(sorted({(ip, "") for ip in external if isinstance(ip, str) and ip}))
    cluster_ip = spec.get("clusterIP")
    if spec.get("type", "ClusterIP") == "ClusterIP" and isinstance(cluster_ip, str) and cluster_ip not in ("", "None"):
        return ((cluster_ip, ""),)
    return ()


class LoadBalancerIndex:
    """Current `status.loadBalancer.ingress` of every Ingress seen, and the published Service's addresses."""

    def __init__(self, publish_service: ObjectKey | None = None) -> None:
        self.publish_service = publish_service
        self._lock = threading.Lock()
        self._ingresses: dict[ObjectKey, tuple[LBAddress, ...]] = {}
        self._service: tuple[LBAddress, ...] | None = None  # None: the published Service is not known (yet)
        self._callbacks: list[Callable[[], None]] = []

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from the source thread) after any recorded value changed."""
        self._callbacks.append(callback)

    def ingress(self, key: ObjectKey) -> tuple[LBAddress, ...] | None:
        """The addresses Ingress `key` carries now; None when the Ingress is not known."""
        with self._lock:
            return self._ingresses.get(key)

    def service(self) -> tuple[LBAddress, ...] | None:
        """The published Service's addresses; None when it does not exist (or is not watched)."""
        with self._lock:
            return self._service

    def set_ingress(self, key: ObjectKey, addresses: tuple[LBAddress, ...] | None) -> None:
        """Record an Ingress's addresses; None when it was deleted."""
        with self._lock:
            old = self._ingresses.get(key)
            if addresses is None:
                self._ingresses.pop(key, None)
            else:
                self._ingresses[key] = addresses
        if old != addresses:
            self._changed()

    def replace_ingresses(self, entries: Iterable[tuple[ObjectKey, tuple[LBAddress, ...]]]) -> None:
        """After a relist: exactly these Ingresses exist."""
        new = dict(entries)
        with self._lock:
            changed, self._ingresses = new != self._ingresses, new
        if changed:
            self._changed()

    def set_service(self, addresses: tuple[LBAddress, ...] | None) -> None:
        with self._lock:
            changed, self._service = addresses != self._service, addresses
        if changed:
            self._changed()

    def _changed(self) -> None:
        for callback in self._callbacks:
            callback()
