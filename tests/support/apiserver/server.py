"""`ApiServer`: the test API server's public face. Lifecycle (start, stop, restart on the same port),
objects written and read by tests without HTTP, fault injection, request counters, and the client
configuration (kubeconfig file or `kubernetes.client.Configuration`) for the real `kubernetes` client.

Theory of operation. One event-loop thread, started with the server and ended by `close()`, owns the
`Store`, the `HttpFront` (routing and watches), the fault rules and the request log. Every public method
runs its work on that thread (`_call`), so tests may call them from any thread, nothing needs a lock,
and a write from a test reaches open watches exactly like a write over HTTP. `stop()` is an outage: the
listening socket closes and every connection is aborted, but the store, the watch history, the fault
rules and the port survive, so `start()` (or `restart()`) serves again at the same URL.

Must not: listen anywhere but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import kubernetes.client
import yaml
from aiohttp import web

from tests.support.apiserver.faults import Faults, Request
from tests.support.apiserver.front import (
    BOOKMARK_BEFORE_DEADLINE_S,
    BOOKMARK_INTERVAL_S,
    DEFAULT_WATCH_TIMEOUT_S,
    EXPIRE,
    HttpFront,
    bookmark,
)
from tests.support.apiserver.resources import ResourceType, canonical_name
from tests.support.apiserver.resources import resource as resource_type
from tests.support.apiserver.store import DEFAULT_HISTORY, Store
from tests.support.apiserver.wire import MERGE_PATCH, ApiError

T = TypeVar("T")
CALL_TIMEOUT_S = 10.0  # a test-thread call onto the loop; the loop never blocks, so this is a hang detector
Names = str | Iterable[str] | None


class ApiServer:
    """A Kubernetes API server on http://127.0.0.1:<port> for the real client. Use as a context manager
    (or `start()` / `close()`). Resource names: `ingresses`, `ingressclasses`, `services`,
    `endpointslices`, `secrets`, `leases`, `events` (core v1) and `events.events.k8s.io`."""

    def __init__(self, *, port: int = 0, token: str | None = None, history: int = DEFAULT_HISTORY,
                 watch_timeout_s: int = DEFAULT_WATCH_TIMEOUT_S, bookmark_interval_s: float = BOOKMARK_INTERVAL_S,
                 bookmark_before_deadline_s: float = BOOKMARK_BEFORE_DEADLINE_S) -> None:
        self.port = port
        self.token = token
        self.store = Store(history)
        self.faults = Faults()
        self.front = HttpFront(self.store, self.faults, token=token, watch_timeout_s=watch_timeout_s,
                               bookmark_interval_s=bookmark_interval_s,
                               bookmark_before_deadline_s=bookmark_before_deadline_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._web: web.Server | None = None
        self._listener: asyncio.Server | None = None

    # --- lifecycle --------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> ApiServer:
        """Listen (again) on 127.0.0.1:port; the first start picks a free port when port is 0."""
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="test-apiserver", daemon=True)
            self._loop = loop
            self._thread.start()
        if self._listener is None:
            self._run(self._listen())
        return self

    async def _listen(self) -> None:
        assert self._loop is not None
        self._web = web.Server(self.front.handle, handler_cancellation=True, access_log=None)
        self._listener = await self._loop.create_server(self._web, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._listener.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """An outage: stop listening and abort every connection (open watches see the stream cut)."""
        if self._listener is not None:
            self._run(self._shutdown())

    async def _shutdown(self) -> None:
        listener, server = self._listener, self._web
        assert listener is not None and server is not None
        self._listener = None
        listener.close()
        for watch in list(self.front.watches):
            watch.abort()
        for conn in server.connections:
            if conn.transport is not None:
                conn.transport.abort()
        await listener.wait_closed()
        await server.shutdown(1.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and end the loop thread (a later `start()` begins a new one; the store is kept)."""
        self.stop()
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CALL_TIMEOUT_S)
            loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None, "the test API server is not started"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    def _call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run fn on the loop thread (where the store lives) and return its result or raise its error."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kw)

        async def call() -> T:
            return fn(*args, **kw)
        result: T = self._run(call())
        return result

    # --- objects (no HTTP; watches see these writes like any other) -------------------------------------
    @staticmethod
    def _where(obj: dict[str, Any]) -> tuple[ResourceType, str, str]:
        rt = resource_type(obj)
        meta = obj.get("metadata") or {}
        return rt, meta.get("namespace", "default") if rt.namespaced else "", meta.get("name", "")

    @staticmethod
    def _ns(rt: ResourceType, namespace: str) -> str:
        return namespace if rt.namespaced else ""

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create `obj` (apiVersion/kind pick the resource; namespace defaults to "default")."""
        rt, ns, _ = self._where(obj)
        return self._call(self.store.create, rt, ns, obj)

    def update(self, obj: dict[str, Any], *, status: bool = False) -> dict[str, Any]:
        """Replace `obj` (or only its status); a metadata.resourceVersion in it is a precondition (409)."""
        rt, ns, name = self._where(obj)
        return self._call(self.store.update, rt, ns, name, obj, status=status, require_rv=False)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create `obj`, or replace the current object whatever its resourceVersion."""
        rt, ns, name = self._where(obj)

        def upsert() -> dict[str, Any]:
            if (ns, name) not in self.store.objects[rt]:
                return self.store.create(rt, ns, obj)
            body = {**obj, "metadata": {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}}
            return self.store.update(rt, ns, name, body, require_rv=False)
        return self._call(upsert)

    def patch(self, resource: str | ResourceType, name: str, patch: dict[str, Any], namespace: str = "default", *,
              status: bool = False) -> dict[str, Any]:
        """JSON merge patch of one object (or of its status)."""
        rt = resource_type(resource)
        return self._call(self.store.patch, rt, self._ns(rt, namespace), name, patch, MERGE_PATCH, status=status)

    def delete(self, resource: str | ResourceType, name: str, namespace: str = "default") -> dict[str, Any]:
        """Delete one object; with finalizers it is only marked (deletionTimestamp)."""
        rt = resource_type(resource)
        return self._call(self.store.delete, rt, self._ns(rt, namespace), name)[0]

    def get(self, resource: str | ResourceType, name: str, namespace: str = "default") -> dict[str, Any] | None:
        rt = resource_type(resource)
        try:
            return self._call(self.store.get, rt, self._ns(rt, namespace), name)
        except ApiError:
            return None

    def objects(self, resource: str | ResourceType, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every object of a kind (in one namespace, or all), with kind and apiVersion."""
        rt = resource_type(resource)
        return self._call(self.store.list, rt, namespace if rt.namespaced else None)

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion (the last write's)."""
        return self._call(lambda: self.store.rv)

    # --- faults -----------------------------------------------------------------------------------------
    def fail_requests(self, count: int | None = 1, *, for_s: float | None = None, code: int = 500,
                      verbs: Names = None, resources: Names = None, retry_after_s: int | None = None) -> None:
        """Answer the next `count` matching requests (None: every one) during `for_s` seconds (None: until
        used up) with HTTP `code` and a Status. `verbs`: list, watch, get, create, update, patch, delete;
        `resources`: canonical names (a `/status` request matches its resource). `retry_after_s` adds a
        Retry-After header: urllib3 then retries 413/429/503 by itself, unseen by the caller."""
        self._call(self.faults.add, "fail", count=count, for_s=for_s, verbs=verbs, resources=resources,
                   code=code, retry_after_s=retry_after_s)

    def delay_requests(self, delay_s: float, count: int | None = None, *, for_s: float | None = None,
                       verbs: Names = None, resources: Names = None) -> None:
        """Hold each matching request `delay_s` seconds before serving it (count/for_s as fail_requests)."""
        self._call(self.faults.add, "delay", count=count, for_s=for_s, verbs=verbs, resources=resources,
                   delay_s=delay_s)

    def expire_next_watches(self, count: int = 1, *, resources: Names = None) -> None:
        """The next `count` watch requests get HTTP 200 with one ERROR event (410 Expired) and a clean end,
        whatever their resourceVersion."""
        self._call(self.faults.add, "expire", count=count, for_s=None, verbs="watch", resources=resources)

    def clear_faults(self) -> None:
        self._call(self.faults.clear)

    def _watches(self, resources: Names) -> list[Any]:
        names = None if resources is None else {resources} if isinstance(resources, str) else set(resources)
        return [w for w in self.front.watches if names is None or canonical_name(w.rt) in names]

    def drop_watches(self, *, resources: Names = None) -> int:
        """Cut every open watch (of `resources`) without the final chunk; returns how many."""
        def drop() -> int:
            watches = self._watches(resources)
            for watch in watches:
                watch.abort()
            return len(watches)
        return self._call(drop)

    def expire_watches(self, *, resources: Names = None) -> int:
        """Send an ERROR 410 event on every open watch (of `resources`), which then ends cleanly."""
        def expire() -> int:
            watches = self._watches(resources)
            for watch in watches:
                watch.queue.put_nowait(EXPIRE)
            return len(watches)
        return self._call(expire)

    def send_bookmarks(self, *, resources: Names = None) -> int:
        """Queue a BOOKMARK at the current resourceVersion on every open watch that allows bookmarks
        (behind the events already queued); returns how many watches got one queued."""
        def send() -> int:
            watches = [w for w in self._watches(resources) if w.bookmarks]
            for watch in watches:
                watch.queue.put_nowait(bookmark(watch.rt, self.store.rv))
            return len(watches)
        return self._call(send)

    def compact(self) -> None:
        """Forget the watch history and the paged-list snapshots (etcd compaction): a watch from any
        resourceVersion before now gets 410, and so does a list `continue` token."""
        def compact() -> None:
            self.store.compact()
            self.front.snapshots.clear()
        self._call(compact)

    # --- counters ---------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        """Every API request so far (verb, resource, namespace, name, query), oldest first."""
        return self._call(lambda: list(self.faults.log))

    def count(self, verb: str | None = None, resource: str | None = None) -> int:
        """How many requests had this verb and/or resource (`ingresses`, `ingresses/status`, ...)."""
        return sum(1 for r in self.requests
                   if (verb is None or r.verb == verb) and (resource is None or r.resource == resource))

    def counts(self) -> Counter[tuple[str, str]]:
        """Requests by (verb, resource)."""
        return self._call(self.faults.counts)

    def reset_counters(self) -> None:
        self._call(self.faults.log.clear)

    def open_watches(self, resource: str | None = None) -> int:
        return self._call(lambda: len(self._watches(resource)))

    def wait_for_watches(self, count: int = 1, resource: str | None = None, timeout_s: float = 5.0) -> None:
        """Block until at least `count` watches (of `resource`) are open; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout_s
        while self.open_watches(resource) < count:
            assert time.monotonic() < deadline, f"{count} open {resource or ''} watches not seen in {timeout_s} s"
            time.sleep(0.01)

    # --- the client's side ------------------------------------------------------------------------------
    def configuration(self, *, pool_maxsize: int = 16) -> kubernetes.client.Configuration:
        """A client Configuration for this server (plain HTTP, the bearer token if any). Each open watch
        holds one pooled connection, hence an explicit pool size."""
        config = kubernetes.client.Configuration(host=self.url)
        if self.token is not None:
            config.api_key = {"authorization": f"Bearer {self.token}"}
        config.connection_pool_maxsize = pool_maxsize
        return config

    def api_client(self, *, pool_maxsize: int = 16) -> kubernetes.client.ApiClient:
        return kubernetes.client.ApiClient(self.configuration(pool_maxsize=pool_maxsize))

    def write_kubeconfig(self, path: Path, *, namespace: str = "default") -> Path:
        """A kubeconfig for `config.new_client_from_config(config_file=path)` (or KUBECONFIG)."""
        user: dict[str, Any] = {"token": self.token} if self.token is not None else {}
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
        }))
        return path
