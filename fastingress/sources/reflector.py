"""`Reflector`: keeps one kind's objects in step with the API server (list, then watch, forever).

Responsibility: for one kind (optionally one namespace and a field selector), list every object,
watch from the list's resourceVersion, convert each raw object with `model.convert`, and deliver
`Delta`s (what changed, with the object's current problems) to a callback. It owns its cache of
converted objects, its resourceVersion and its retry policy; nothing else.

Theory of operation (client-go's reflector, with the pitfalls of the Python client avoided):

- *List* page by page; start the watch from the *list's* resourceVersion. The first list is
  delivered with `initial=True` so the source knows this kind is synced. A relist is diffed against
  the cache: only what changed is delivered, objects missing from it are delivered as deleted.
- *Watch* with `timeoutSeconds` (jittered) and bookmarks. A clean end re-watches at once from the
  last resourceVersion seen (an event's or a bookmark's: bookmarks keep quiet kinds resumable). A cut
  connection re-watches from there too, after the backoff's first step.
- *410* (an ERROR event with code 410, or an HTTP 410): relist with resourceVersion unset (a
  consistent read). Any other failure: exponential backoff with jitter, then re-watch, or relist when
  no list ever succeeded. The backoff resets after a watch that delivered something or lasted.
- *Status-only updates* (our own status writes, a Service getting its load-balancer address) convert
  to objects equal to the cached ones but for resourceVersion: the cache takes them silently, no
  Delta, so they never rebuild the table. `observe(raw)` still sees every raw object (the
  load-balancer index needs exactly those status changes).
- *Stop*: `stop` (shared Event) ends the loop; `interrupt()` shuts an open watch's socket down so
  a blocked read returns at once.

State for /healthz: `state` is "syncing" until the first list, "ok" after a success, "degraded" from
a failure until the next success. Counters (lists, relists, watches, events, errors) for /metrics.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import kubernetes.client
import msgspec

from fastingress.model.convert import Converted, convert_object
from fastingress.model.objects import Kind, ObjectKey
from fastingress.model.problems import Problem
from fastingress.sources import kubeapi
from fastingress.sources.kubeapi import KindSpec

__all__ = ["Backoff", "Delta", "Reflector"]

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0  # an API server back after an outage is caught up within ~10 s (client-go: 30 s)
HEALTHY_WATCH_S = 5.0  # a watch that lasted this long resets the backoff even when it saw no event
WATCH_TIMEOUT_JITTER = 0.2  # timeoutSeconds in [t, 1.2 t): replicas' watches do not all end together


class Delta(NamedTuple):
    """One object's new state: `obj` None when deleted or rejected; `problems` its conversion problems."""

    kind: Kind
    key: ObjectKey
    obj: object | None
    problems: tuple[Problem, ...]


class _Gone(Exception):
    """The resourceVersion we hold is too old: relist."""


class _WatchError(Exception):
    """An ERROR event other than 410."""


class Backoff:
    """Exponential backoff with jitter: each delay is in [d/2, d), d doubling up to `max_s`."""

    def __init__(self, initial_s: float = BACKOFF_INITIAL_S, max_s: float = BACKOFF_MAX_S,
                 rng: Callable[[], float] = random.random) -> None:
        self.initial_s, self.max_s, self._rng = initial_s, max_s, rng
        self._next = initial_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay * (0.5 + 0.5 * self._rng())

    def reset(self) -> None:
        self._next = self.initial_s


Deliver = Callable[[list[Delta], bool], None]  # (deltas, initial): initial only for the first list
Observe = Callable[[Kind, ObjectKey, dict[str, Any] | None], None]  # raw object, None when deleted/relisted away


class Reflector:
    """List and watch one kind; see the module docstring."""

    def __init__(self, client: kubernetes.client.ApiClient, spec: KindSpec, deliver: Deliver, stop: threading.Event,
                 *, namespace: str = "", field_selector: str = "", watch_timeout_s: int = 300,
                 observe: Observe | None = None, backoff: Backoff | None = None,
                 allow_loopback: bool = False) -> None:
        self.spec = spec
        self.namespace = namespace
        self.field_selector = field_selector
        self.name = spec.api_kind + (f" in {namespace}" if namespace else "") + (
            f" ({field_selector})" if field_selector else "")
        self.state = "syncing"
        self.counters = {"lists": 0, "relists": 0, "watches": 0, "events": 0, "errors": 0}
        self._client = client
        self._deliver = deliver
        self._observe = observe
        self._stop = stop
        self._watch_timeout_s = watch_timeout_s
        self._allow_loopback = allow_loopback
        self._backoff = backoff or Backoff()
        self._cache: dict[ObjectKey, tuple[object | None, tuple[Problem, ...]]] = {}
        self._resp: Any = None  # the open watch response, for interrupt()
        self._listed = False
        self._failing: str = ""  # the reason of the current failure streak ("" = healthy)
        self._streak = 0

    def interrupt(self) -> None:
        """Shut the open watch's socket down (from another thread) so the blocked read returns."""
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()
            except Exception:  # already closed or never connected: nothing to interrupt
                pass

    def run(self) -> None:
        """List and watch until `stop` is set; never raises."""
        rv = ""
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._list()
                rv = self._watch(rv)
            except Exception as exc:
                if self._stop.is_set():
                    break
                if isinstance(exc, _Gone) or (isinstance(exc, kubernetes.client.ApiException)
                                              and kubeapi.is_gone(exc.status) and self._listed):
                    self.counters["relists"] += 1
                    log.info("resourceVersion of %s expired; relisting", self.name,
                             extra={"kind": self.spec.api_kind})
                    rv = ""
                    continue
                self._failed(exc)
                if not self._listed or isinstance(exc, _WatchError | msgspec.DecodeError):
                    rv = ""  # nothing trustworthy to resume from
                self._stop.wait(self._backoff.next())

    # --- list ---------------------------------------------------------------------------------------------
    def _list(self) -> str:
        result = kubeapi.list_all(self._client, self.spec, self.namespace, self.field_selector)
        self.counters["lists"] += 1
        initial = not self._listed
        fresh: dict[ObjectKey, tuple[object | None, tuple[Problem, ...]]] = {}
        deltas: list[Delta] = []
        for raw in result.items:
            converted = self._convert(raw)
            if converted is None:
                continue
            key, entry = converted
            fresh[key] = entry
            if initial or self._changed(self._cache.get(key), entry):
                deltas.append(Delta(self.spec.kind, key, *entry))
            if self._observe is not None:
                self._observe(self.spec.kind, key, raw)
        for key in self._cache.keys() - fresh.keys():
            deltas.append(Delta(self.spec.kind, key, None, ()))
            if self._observe is not None:
                self._observe(self.spec.kind, key, None)
        self._cache = fresh
        self._listed = True
        self._healthy()
        self._deliver(deltas, initial)
        return result.resource_version

    # --- watch --------------------------------------------------------------------------------------------
    def _watch(self, rv: str) -> str:
        timeout_s = int(self._watch_timeout_s * (1 + WATCH_TIMEOUT_JITTER * random.random()))
        started = time.monotonic()
        resp = kubeapi.open_watch(self._client, self.spec, rv, timeout_s, self.namespace, self.field_selector)
        self.counters["watches"] += 1
        self._resp = resp
        seen = 0
        try:
            if self._stop.is_set():
                return rv
            self._healthy()
            for event in kubeapi.iter_watch(resp):
                rv = self._handle(event, rv)
                seen += 1
        finally:
            self._resp = None
            resp.release_conn()
        if seen or time.monotonic() - started >= HEALTHY_WATCH_S:
            self._backoff.reset()
        elif not self._stop.is_set():
            self._stop.wait(self._backoff.next())  # a server ending every watch at once must not spin us
        return rv

    def _handle(self, event: dict[str, Any], rv: str) -> str:
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            raise _WatchError(f"a {kind} event without an object")
        if kind == "ERROR":
            if kubeapi.is_gone(obj):
                raise _Gone()
            raise _WatchError(f"watch error {obj.get('code')}: {obj.get('message')}")
        new_rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
        if kind == "BOOKMARK":
            return new_rv
        self.counters["events"] += 1
        obj.setdefault("kind", self.spec.api_kind)
        obj.setdefault("apiVersion", self.spec.api_version)
        converted = self._convert(obj)
        if converted is not None:
            key, entry = converted
            if kind == "DELETED":
                if self._cache.pop(key, None) is not None:
                    self._deliver([Delta(self.spec.kind, key, None, ())], False)
                if self._observe is not None:
                    self._observe(self.spec.kind, key, None)
            else:
                old = self._cache.get(key)
                self._cache[key] = entry
                if self._changed(old, entry):
                    self._deliver([Delta(self.spec.kind, key, *entry)], False)
                if self._observe is not None:
                    self._observe(self.spec.kind, key, obj)
        return new_rv

    # --- helpers ------------------------------------------------------------------------------------------
    def _convert(self, raw: dict[str, Any]) -> tuple[ObjectKey, tuple[object | None, tuple[Problem, ...]]] | None:
        converted: Converted = convert_object(raw, allow_loopback=self._allow_loopback)
        if converted.key is None or converted.kind is not self.spec.kind:
            return None  # no name: the API server never sends one; a foreign kind: not ours to keep
        return converted.key, (converted.obj, converted.problems)

    @staticmethod
    def _changed(old: tuple[object | None, tuple[Problem, ...]] | None,
                 new: tuple[object | None, tuple[Problem, ...]]) -> bool:
        """Whether `new` differs from `old` in anything but the resourceVersion (see the docstring)."""
        if old is None:
            return True
        (old_obj, old_problems), (new_obj, new_problems) = old, new
        if old_problems != new_problems:
            return True
        if old_obj is None or new_obj is None:
            return old_obj is not new_obj
        return msgspec.structs.replace(new_obj, resource_version=old_obj.resource_version) != old_obj  # type: ignore[attr-defined, type-var]

    def _healthy(self) -> None:
        if self._failing:
            log.info("%s: API server reachable again after %d failed attempts", self.name, self._streak,
                     extra={"kind": self.spec.api_kind})
        self._failing, self._streak = "", 0
        self.state = "ok"

    def _failed(self, exc: BaseException) -> None:
        self.counters["errors"] += 1
        self._streak += 1
        self.state = "degraded"
        reason = kubeapi.describe_error(exc)  # stable per kind of failure (the message is not)
        if reason != self._failing:  # once per distinct reason per streak, not once per retry
            log.warning("%s: %s (%s); retrying with backoff, the last table keeps serving", self.name, reason, exc,
                        extra={"kind": self.spec.api_kind, "reason": type(exc).__name__})
        self._failing = reason

