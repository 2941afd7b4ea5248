"""The Kubernetes source: the cluster's Ingresses, IngressClasses, Services, EndpointSlices and TLS Secrets.

Responsibility: run one `Reflector` per kind (each in its own thread, each listing then watching),
merge what they deliver into `Change` batches plus the source's full problem list, and hand them to
`emit` behind the same `Source` contract as the manifests directory. It also records load-balancer
addresses into a `LoadBalancerIndex` for the status writer. It never compiles, publishes or writes.

Theory of operation:

- *Kinds and scope.* IngressClasses are cluster-scoped and always watched. The four namespaced kinds
  are watched in every namespace, or only in `FASTINGRESS_WATCH_NAMESPACE`. Secrets are filtered by
  the API server to `type=kubernetes.io/tls`. When the watch is restricted to one namespace, the
  default certificate's Secret (`FASTINGRESS_DEFAULT_TLS_SECRET`) and the published Service
  (`FASTINGRESS_PUBLISH_SERVICE`) may live elsewhere: each then gets a reflector of its own, narrowed
  to its name by a field selector (the Store must see the default Secret; the status writer needs the
  Service's addresses).
- *Initial sync.* Nothing is emitted before every reflector has delivered its first list; the first
  emit then carries everything, so the supervisor never publishes a table missing a kind (an empty
  EndpointSlice set would turn every route into a 503).
- *Batches.* Reflector threads put deltas on one queue; this thread takes what is there, folds it
  into one batch (the last state of each object wins) and emits once, so a relist or a burst becomes
  one batch. The Reconciler debounces on top of that.
- *Failures.* Reflectors retry on their own (backoff, relist on 410) and keep their caches, so an API
  outage only means no news: nothing is emitted, the last table keeps serving. `health()` is "ok" when
  every reflector is, "degraded" otherwise (for /healthz; /readyz is about the data plane).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import kubernetes.client

from fastingress.model.objects import Kind, ObjectKey
from fastingress.model.problems import Problem
from fastingress.model.store import Change
from fastingress.settings import Settings
from fastingress.sources import kubeapi
from fastingress.sources.base import Emit
from fastingress.sources.kubeapi import KINDS, KindSpec
from fastingress.sources.lbstatus import LoadBalancerIndex, parse_lb_ingress, service_addresses
from fastingress.sources.reflector import Delta, Reflector

__all__ = ["KubeSource"]

log = logging.getLogger(__name__)

JOIN_S = 2.0
_Batch = tuple[list[Delta], bool, int]  # deltas, initial, the delivering reflector's number


def _split_key(value: str) -> ObjectKey | None:
    namespace, _, name = value.partition("/")
    return ObjectKey(namespace, name) if name else None


class KubeSource:
    """The cluster as a Source; see the module docstring."""

    name = "kube"

    def __init__(self, settings: Settings, *, client_factory: Callable[[], kubernetes.client.ApiClient] | None = None,
                 index: LoadBalancerIndex | None = None) -> None:
        self._settings = settings
        self._client_factory = client_factory or kubeapi.load_client
        self.client: kubernetes.client.ApiClient | None = None  # shared with the status writer once made
        self.index = index or LoadBalancerIndex(_split_key(settings.publish_service))
        self.reflectors: list[Reflector] = []
        self._queue: queue.SimpleQueue[_Batch] = queue.SimpleQueue()
        self._problems: dict[tuple[Kind, ObjectKey], tuple[Problem, ...]] = {}

    def connect(self) -> kubernetes.client.ApiClient:
        """The API client (made once; raises SourceError when there is no cluster to talk to)."""
        if self.client is None:
            self.client = self._client_factory()
        return self.client

    def health(self) -> str:
        """"syncing" until every reflector listed once, then "ok", or "degraded" while any one fails."""
        states = {r.state for r in self.reflectors}
        if not states or "syncing" in states:
            return "syncing"
        return "ok" if states == {"ok"} else "degraded"

    def counters(self) -> dict[str, dict[str, int]]:
        """Per reflector: lists, relists, watches, events, errors (read by /metrics)."""
        return {r.name: dict(r.counters) for r in self.reflectors}

    def run(self, emit: Emit, stop: threading.Event) -> None:
        client = self.connect()
        self.reflectors = self._make_reflectors(client, stop)
        threads = [threading.Thread(target=r.run, name=f"reflector-{r.spec.api_kind}", daemon=True)
                   for r in self.reflectors]
        for thread in threads:
            thread.start()
        try:
            self._loop(emit, stop)
        finally:
            stop.set()
            for reflector in self.reflectors:
                reflector.interrupt()
            for thread in threads:
                thread.join(JOIN_S)

    def _make_reflectors(self, client: kubernetes.client.ApiClient, stop: threading.Event) -> list[Reflector]:
        settings = self._settings
        namespace = settings.watch_namespace
        scopes: list[tuple[KindSpec, str, str]] = [(spec, namespace, "") for spec in KINDS]
        if namespace:
            extra = {Kind.SECRET: _split_key(settings.default_tls_secret), Kind.SERVICE: self.index.publish_service}
            for spec in KINDS:
                key = extra.get(spec.kind)
                if key is not None and key.namespace != namespace:
                    selector = ",".join(filter(None, (f"metadata.name={key.name}", spec.field_selector)))
                    scopes.append((spec, key.namespace, selector))
        return [Reflector(client, spec, functools.partial(self._deliver, number), stop, namespace=ns,
                          field_selector=selector, watch_timeout_s=settings.kube_watch_timeout_s,
                          observe=self._observe, allow_loopback=settings.allow_loopback_endpoints)
                for number, (spec, ns, selector) in enumerate(scopes)]

    def _deliver(self, number: int, deltas: list[Delta], initial: bool) -> None:
        """From reflector `number`'s thread: only enqueue."""
        self._queue.put((deltas, initial, number))

    def _observe(self, kind: Kind, key: ObjectKey, raw: dict[str, Any] | None) -> None:
        """From a reflector thread: the raw object, for the load-balancer index."""
        if kind is Kind.INGRESS:
            self.index.set_ingress(key, None if raw is None else parse_lb_ingress(raw.get("status")))
        elif kind is Kind.SERVICE and key == self.index.publish_service:
            self.index.set_service(None if raw is None else service_addresses(raw))

    def _loop(self, emit: Emit, stop: threading.Event) -> None:
        synced: set[int] = set()  # numbers of the reflectors that delivered their first list
        pending: dict[tuple[Kind, ObjectKey], object | None] = {}
        problems_dirty = False
        emitted_once = False
        while not stop.is_set():
            try:
                batch = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            while True:
                deltas, initial, reflector = batch
                if initial:
                    synced.add(reflector)
                for delta in deltas:
                    ident = (delta.kind, delta.key)
                    pending[ident] = delta.obj
                    if self._problems.get(ident, ()) != delta.problems:
                        problems_dirty = True
                        if delta.problems:
                            self._problems[ident] = delta.problems
                        else:
                            self._problems.pop(ident, None)
                try:
                    batch = self._queue.get_nowait()
                except queue.Empty:
                    break
            if len(synced) < len(self.reflectors) or not (pending or problems_dirty or not emitted_once):
                continue
            if not emitted_once:
                log.info("initial list of every kind complete: %d objects", len(pending))
            changes = [Change(kind, key, obj) for (kind, key), obj in pending.items()]
            emit(changes, sorted(p for problems in self._problems.values() for p in problems))
            pending, problems_dirty, emitted_once = {}, False, True

