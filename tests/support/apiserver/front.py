"""The HTTP side of the test API server: routing, the verbs, paged lists, watch streams.

Theory of operation. Everything here runs on the server's event-loop thread (see `server.py`). A watch
is a handler that owns an `asyncio.Queue`: the store's listener puts translated events into the queues
of the matching watches at commit time, and the handler writes one JSON line per event as one HTTP
chunk. A timed bookmark is written only when the queue is empty, and a requested one
(`send_bookmarks`) is queued with the resourceVersion of its moment, so a bookmark never overtakes an
event. Watch ends: the deadline (`timeoutSeconds`; final zero-length chunk), an ERROR event (410, then
a clean end), or a drop (the transport is aborted; no final chunk).

Must not: import the product (it is the product's counterpart).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.support.apiserver.faults import Faults, Request, Rule
from tests.support.apiserver.resources import BY_PATH, ResourceType, canonical_name
from tests.support.apiserver.store import Change, Store, translate
from tests.support.apiserver.wire import (
    PATCH_TYPES,
    ApiError,
    field_selector,
    label_selector,
    status_body,
    too_old,
    truthy,
)

# Without timeoutSeconds the real apiserver picks a random timeout in [1800 s, 3600 s) (min-request-timeout).
DEFAULT_WATCH_TIMEOUT_S = 1800
# Bookmarks: about every minute, and 2 s before the watch's deadline (cacher's `nextBookmarkTime`).
BOOKMARK_INTERVAL_S = 60.0
BOOKMARK_BEFORE_DEADLINE_S = 2.0
# Paged lists keep their snapshot for continue tokens; older snapshots expire (410) like compacted ones.
MAX_SNAPSHOTS = 64

DROP, EXPIRE = object(), object()  # queue markers for an open watch

_VERBS = {("GET", False): "list", ("POST", False): "create", ("DELETE", False): "deletecollection",
          ("GET", True): "get", ("PUT", True): "update", ("PATCH", True): "patch", ("DELETE", True): "delete"}


@dataclass(frozen=True, slots=True)
class Route:
    rt: ResourceType
    namespace: str | None  # None: all namespaces (collections) or cluster-scoped
    name: str | None
    status: bool  # the `status` subresource
    verb: str

    @property
    def resource(self) -> str:
        return canonical_name(self.rt) + ("/status" if self.status else "")


def parse_route(method: str, path: str, query: Any) -> Route:
    """`/api/v1/[namespaces/{ns}/]{plural}[/{name}[/status]]` and the same under `/apis/{group}/{version}`."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "the server could not find the requested resource")
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    rt = BY_PATH.get((group, version, rest[0])) if rest else None
    if rt is None or len(rest) > 3 or (len(rest) == 3 and rest[2] != "status") or (
            rt.namespaced is False and ns is not None) or (rt.namespaced and len(rest) > 1 and ns is None):
        raise ApiError(404, "the server could not find the requested resource")
    status = len(rest) == 3
    if status and not rt.status_subresource:
        raise ApiError(404, "the server could not find the requested resource")
    verb = _VERBS.get((method, len(rest) > 1))
    if verb == "list" and truthy(query.get("watch")):
        verb = "watch"
    if verb is None or (status and verb not in ("get", "update", "patch")):
        raise ApiError(405, f"the server does not allow this method on the requested resource ({method})")
    return Route(rt, ns if rt.namespaced else None, rest[1] if len(rest) > 1 else None, status, verb)


def _line(event_type: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


def bookmark(rt: ResourceType, rv: int) -> tuple[str, dict[str, Any]]:
    """A BOOKMARK event: kind, apiVersion and metadata.resourceVersion only."""
    return "BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(rv)}}


def _json(code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=code, body=json.dumps(body).encode(), content_type="application/json",
                        headers=headers)


class Watch:
    """One open watch: what it selects, and the queue its handler writes from."""

    __slots__ = ("bookmarks", "match", "namespace", "queue", "request", "rt")

    def __init__(self, rt: ResourceType, namespace: str | None, match: Callable[[dict[str, Any]], bool],
                 bookmarks: bool, request: web.BaseRequest) -> None:
        self.rt, self.namespace, self.match, self.bookmarks, self.request = rt, namespace, match, bookmarks, request
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def offer(self, change: Change) -> None:
        if change.rt is not self.rt:
            return
        if self.namespace is not None and change.obj["metadata"].get("namespace") != self.namespace:
            return
        event = translate(change, self.match)
        if event is not None:
            self.queue.put_nowait(event)

    def abort(self) -> None:
        if self.request.transport is not None:
            self.request.transport.abort()
        self.queue.put_nowait(DROP)


class HttpFront:
    """The HTTP side: routing, verbs, list pages, watch streams. Runs only on the loop thread."""

    def __init__(self, store: Store, faults: Faults, *, token: str | None, watch_timeout_s: int,
                 bookmark_interval_s: float, bookmark_before_deadline_s: float) -> None:
        self.store, self.faults, self.token = store, faults, token
        self.watch_timeout_s = watch_timeout_s
        self.bookmark_interval_s = bookmark_interval_s
        self.bookmark_before_deadline_s = bookmark_before_deadline_s
        self.watches: set[Watch] = set()
        self.snapshots: OrderedDict[str, tuple[int, list[dict[str, Any]]]] = OrderedDict()
        self._ids = itertools.count(1)
        store.listeners.append(self._offer)

    def _offer(self, change: Change) -> None:
        for watch in self.watches:
            watch.offer(change)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/version":
            return _json(200, {"major": "1", "minor": "34", "gitVersion": "v1.34.0-fastingress-test"})
        try:
            route = parse_route(request.method, request.path, request.query)
        except ApiError as exc:
            return _json(exc.code, exc.status)
        decision = self.faults.take(Request(route.verb, route.resource, route.namespace, route.name,
                                            dict(request.query), request.headers.get("Content-Type", "")))
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if decision.fail is not None:
            return self._fault(decision.fail)
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json(401, status_body(401, "Unauthorized"))
        try:
            if route.verb == "watch":
                return await self._watch(request, route, decision.expire)
            body = await request.read()
            code, out = self._serve(route, request.query, request.headers.get("Content-Type", ""), body)
            return _json(code, out)
        except ApiError as exc:
            return _json(exc.code, exc.status)

    @staticmethod
    def _fault(rule: Rule) -> web.Response:
        headers = {"Retry-After": str(rule.retry_after_s)} if rule.retry_after_s is not None else None
        return _json(rule.code, status_body(rule.code, f"injected fault: HTTP {rule.code}"), headers)

    def _serve(self, route: Route, query: Any, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        rt, ns, name, store = route.rt, route.namespace or "", route.name or "", self.store
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise ApiError(400, f"the body of the request was in an unknown format: {exc}") from exc
        if route.verb == "list":
            return 200, self._list(route, query)
        if route.verb == "get":
            return 200, store.get(rt, ns, name)
        if route.verb in ("create", "update") and not isinstance(body, dict):
            raise ApiError(400, "the body of the request must be a JSON object")
        if route.verb == "create":
            if rt.namespaced and route.namespace is None:
                raise ApiError(405, "the server does not allow this method on the requested resource (POST)")
            return 201, store.create(rt, ns, body)
        if route.verb == "update":
            return 200, store.update(rt, ns, name, body, status=route.status)
        if route.verb == "patch":
            media = content_type.split(";")[0].strip()
            if media not in PATCH_TYPES:
                raise ApiError(415, f"the body of the request was in an unknown format - accepted media types "
                               f"include: {', '.join(PATCH_TYPES)}")
            return 200, store.patch(rt, ns, name, body, media, status=route.status)
        if route.verb == "delete":
            obj, gone = store.delete(rt, ns, name, (body or {}).get("preconditions"))
            if not gone or rt.return_deleted_object:
                return 200, obj
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": obj["metadata"]["uid"]}}
        raise ApiError(405, f"{route.verb} is not supported by the test API server")

    def _list(self, route: Route, query: Any) -> dict[str, Any]:
        rt = route.rt
        labels, fields = label_selector(query.get("labelSelector")), field_selector(query.get("fieldSelector"), rt)
        try:
            limit = int(query.get("limit") or 0)
        except ValueError as exc:
            raise ApiError(400, f"invalid limit: {query.get('limit')}") from exc
        token, offset = query.get("continue"), 0
        if token:
            try:
                snap_id, offset = json.loads(base64.urlsafe_b64decode(token))
            except ValueError as exc:
                raise ApiError(400, f"invalid continue token: {exc}") from exc
            if snap_id not in self.snapshots:
                raise ApiError(410, "The provided continue parameter is too old to display a consistent list "
                               "result. You can start a new list without the continue parameter.", "Expired")
            rv, items = self.snapshots[snap_id]
        else:
            rv, items = self.store.rv, self.store.list(rt, route.namespace, lambda o: labels(o) and fields(o))
            snap_id = ""
        end = offset + limit if limit else len(items)
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if end < len(items):
            if not snap_id:
                snap_id = f"s{next(self._ids)}"
                self.snapshots[snap_id] = (rv, items)
                while len(self.snapshots) > MAX_SNAPSHOTS:
                    self.snapshots.popitem(last=False)
            meta["continue"] = base64.urlsafe_b64encode(json.dumps([snap_id, end]).encode()).decode()
            meta["remainingItemCount"] = len(items) - end
        page = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items[offset:end]]
        return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": meta, "items": page}

    async def _watch(self, request: web.BaseRequest, route: Route, expire: bool) -> web.StreamResponse:
        rt, query = route.rt, request.query
        labels, fields = label_selector(query.get("labelSelector")), field_selector(query.get("fieldSelector"), rt)
        try:
            timeout_s = int(query.get("timeoutSeconds") or self.watch_timeout_s)
            rv = int(query.get("resourceVersion") or 0)
        except ValueError as exc:
            raise ApiError(400, f"invalid watch parameter: {exc}") from exc
        if rv > self.store.rv:
            raise ApiError(504, f"Too large resource version: {rv}, current: {self.store.rv}", "Timeout",
                           {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                            "retryAfterSeconds": 1})
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"})
        resp.enable_chunked_encoding()
        oldest = self.store.oldest_resumable
        if expire or 0 < rv < oldest:
            await resp.prepare(request)
            await resp.write(_line("ERROR", too_old(rv, oldest)))
            await resp.write_eof()
            return resp
        bookmarks = truthy(query.get("allowWatchBookmarks"))
        watch = Watch(rt, route.namespace, lambda o: labels(o) and fields(o), bookmarks, request)
        if rv == 0:  # unset or "0": synthetic ADDED for the current state, then changes
            for obj in self.store.list(rt, route.namespace, watch.match):
                watch.queue.put_nowait(("ADDED", obj))
        else:
            for change in self.store.since(rv):
                watch.offer(change)
        self.watches.add(watch)
        try:
            await resp.prepare(request)
            if await self._stream(resp, watch, timeout_s, rv):
                await resp.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            self.watches.discard(watch)
        return resp

    async def _stream(self, resp: web.StreamResponse, watch: Watch, timeout_s: int, last_rv: int) -> bool:
        """Write events until the deadline (True: end cleanly) or a drop (False: no final chunk)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s

        def schedule(now: float) -> float | None:  # cacher `nextBookmarkTime`
            if not watch.bookmarks:
                return None
            at = min(now + self.bookmark_interval_s, deadline - self.bookmark_before_deadline_s)
            return at if at > now else None

        next_bookmark = schedule(loop.time())
        while True:
            wake = deadline if next_bookmark is None else min(deadline, next_bookmark)
            try:
                item = await asyncio.wait_for(watch.queue.get(), max(0.0, wake - loop.time()))
            except TimeoutError:  # the queue is empty: a bookmark now cannot overtake an event
                now = loop.time()
                if now >= deadline:
                    return True
                if next_bookmark is None or now < next_bookmark:
                    continue
                item, next_bookmark = bookmark(watch.rt, self.store.rv), schedule(now)
            if item is DROP:
                return False
            if item is EXPIRE:
                await resp.write(_line("ERROR", too_old(last_rv, self.store.oldest_resumable)))
                return True
            last_rv = int(item[1]["metadata"]["resourceVersion"])
            await resp.write(_line(*item))
