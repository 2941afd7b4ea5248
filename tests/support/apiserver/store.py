"""The test API server's object store: etcd plus the registry's write rules, in memory.

Theory of operation. Objects live in one dict per resource type, keyed by (namespace, name); namespace
is "" for cluster-scoped kinds. One global counter plays etcd's revision: every write that changes an
object takes the next value as its `metadata.resourceVersion` and appends a `Change` to a bounded
history (the watch window). A write that changes nothing keeps the old resourceVersion and records
nothing, like the real server. Watches resume from the history; a resourceVersion older than the
window is "too old" (the caller answers 410). Listeners (the open watches) are called synchronously
for each change, in resourceVersion order.

Not thread-safe on purpose: the server calls it only from its event-loop thread, and test code reaches
it through `ApiServer`, which marshals calls onto that thread.

Rules copied from the registry: create sets uid, creationTimestamp, generation (kinds that track it)
and resets status (kinds with a status subresource); `metadata.resourceVersion` in an update or patch
body is a compare-and-swap (409 Conflict); main-resource writes keep `.status`, `/status` writes change
only `.status`; generation bumps on changes outside metadata and status; delete with finalizers sets
deletionTimestamp and the object goes when the last finalizer is removed.
"""

from __future__ import annotations

import copy
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.support.apiserver.resources import RESOURCES, ResourceType, apply_defaults, empty_status
from tests.support.apiserver.wire import (
    JSON_PATCH,
    ApiError,
    Predicate,
    already_exists,
    conflict,
    invalid,
    json_patch,
    merge_patch,
    not_found,
)

Key = tuple[str, str]  # (namespace or "", name)

# Events the watch window keeps. The real watch cache holds 100 events per resource by default and
# grows with load; 1000 global events is far more than any test writes before compacting on purpose.
DEFAULT_HISTORY = 1000


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write, as the watch history keeps it."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    rt: ResourceType
    obj: dict[str, Any]  # the new state (for DELETED: the last state at the deletion's resourceVersion)
    old: dict[str, Any] | None  # the previous state (None for ADDED)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _outside_meta(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal apart from metadata.resourceVersion (a no-op write)."""
    strip = ({**x, "metadata": {k: v for k, v in x["metadata"].items() if k != "resourceVersion"}} for x in (a, b))
    return next(strip) == next(strip)


class Store:
    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        self.rv = 1  # an empty cluster's list already has a resourceVersion
        self.history: deque[Change] = deque(maxlen=history)
        self.compacted_rv = 1  # after compact(): nothing at or below this can be resumed from
        self.objects: dict[ResourceType, dict[Key, dict[str, Any]]] = {rt: {} for rt in RESOURCES}
        self.listeners: list[Callable[[Change], None]] = []
        self._serial = 0

    # --- reads ------------------------------------------------------------------------------------------
    def get(self, rt: ResourceType, ns: str, name: str) -> dict[str, Any]:
        obj = self.objects[rt].get((ns, name))
        if obj is None:
            raise not_found(rt, name)
        return copy.deepcopy(obj)

    def list(self, rt: ResourceType, ns: str | None, match: Predicate = lambda o: True) -> list[dict[str, Any]]:
        """Matching objects in (namespace, name) order; ns None means every namespace."""
        return [copy.deepcopy(obj) for (ons, _), obj in sorted(self.objects[rt].items())
                if (ns is None or ons == ns) and match(obj)]

    @property
    def oldest_resumable(self) -> int:
        """The lowest resourceVersion a watch may resume from: the window's first change minus one."""
        first = self.history[0].rv - 1 if self.history else self.rv
        return max(first, self.compacted_rv)

    def since(self, rv: int) -> Iterator[Change]:
        """Changes after `rv` (the caller checked `rv >= oldest_resumable`)."""
        return (c for c in self.history if c.rv > rv)

    def compact(self) -> None:
        """Forget the history: every resourceVersion before now becomes too old to watch from."""
        self.history.clear()
        self.compacted_rv = self.rv

    # --- writes -----------------------------------------------------------------------------------------
    def create(self, rt: ResourceType, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced and meta.get("namespace", ns) != ns:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the "
                           "request")
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(rt, "", "metadata.name", "Required value: name or generateName is required")
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta["name"]
        if (ns, name) in self.objects[rt]:
            raise already_exists(rt, name)
        self._serial += 1
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
        if rt.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if rt.generation:
            meta["generation"] = 1
        if rt.status_subresource:
            obj["status"] = empty_status(rt)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        apply_defaults(rt, obj, self._serial)
        return self._commit(rt, (ns, name), obj, None)

    def update(self, rt: ResourceType, ns: str, name: str, body: dict[str, Any], *, status: bool = False,
               require_rv: bool = True) -> dict[str, Any]:
        """PUT (full replace) of the object or of its status. `require_rv` False for patches, which need no
        resourceVersion even on kinds that forbid unconditional updates."""
        old = self.objects[rt].get((ns, name))
        if old is None:
            raise not_found(rt, name)
        meta = body.get("metadata") or {}
        if meta.get("name", name) != name:
            raise ApiError(400, f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        if rt.namespaced and meta.get("namespace", ns) != ns:
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the "
                           "request")
        sent_rv = meta.get("resourceVersion")
        if sent_rv:
            if sent_rv != old["metadata"]["resourceVersion"]:
                raise conflict(rt, name)
        elif require_rv and not rt.unconditional_update:
            raise invalid(rt, name, "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update")
        if status:
            new = copy.deepcopy(old)
            new["status"] = copy.deepcopy(body.get("status") or {})
        else:
            new = copy.deepcopy(body)
            new["kind"], new["apiVersion"] = rt.kind, rt.api_version
            new_meta = new.setdefault("metadata", {})
            for k in ("name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion",
                      "deletionTimestamp", "deletionGracePeriodSeconds"):
                if k in old["metadata"]:
                    new_meta[k] = old["metadata"][k]
                else:
                    new_meta.pop(k, None)
            if rt.status_subresource:
                new["status"] = copy.deepcopy(old.get("status"))
                if new["status"] is None:
                    del new["status"]
            if rt.generation and _outside_meta(new) != _outside_meta(old):
                new_meta["generation"] = old["metadata"].get("generation", 1) + 1
            if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
                return self._remove(rt, (ns, name), new)
        return self._commit(rt, (ns, name), new, old)

    def patch(self, rt: ResourceType, ns: str, name: str, patch: Any, content_type: str, *,
              status: bool = False) -> dict[str, Any]:
        """PATCH: apply to the current object, then the update rules (a resourceVersion in the patch is a
        precondition). Strategic merge patch is applied as a JSON merge patch."""
        old = self.get(rt, ns, name)
        if content_type == JSON_PATCH:
            if not isinstance(patch, list):
                raise ApiError(400, "json patch must be a list of operations")
            patched = json_patch(old, patch)
        else:
            if not isinstance(patch, dict):
                raise ApiError(400, "merge patch must be a JSON object")
            patched = merge_patch(old, patch)
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise ApiError(422, "the patched object has no metadata")
        return self.update(rt, ns, name, patched, status=status, require_rv=False)

    def delete(self, rt: ResourceType, ns: str, name: str,
               preconditions: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        """DELETE: returns (object, gone). With finalizers the object stays, marked for deletion."""
        old = self.objects[rt].get((ns, name))
        if old is None:
            raise not_found(rt, name)
        pre = preconditions or {}
        for field in ("uid", "resourceVersion"):
            if pre.get(field) and pre[field] != old["metadata"].get(field):
                raise conflict(rt, name, f"Precondition failed: {field} in precondition: {pre[field]}, "
                               f"{field} in object meta: {old['metadata'].get(field)}")
        if old["metadata"].get("finalizers"):
            new = copy.deepcopy(old)
            new["metadata"].setdefault("deletionTimestamp", now_rfc3339())
            new["metadata"].setdefault("deletionGracePeriodSeconds", 0)
            return self._commit(rt, (ns, name), new, old), False
        return self._remove(rt, (ns, name), copy.deepcopy(old)), True

    # --- commit -----------------------------------------------------------------------------------------
    def _commit(self, rt: ResourceType, key: Key, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        if old is not None and _same(new, old):
            return copy.deepcopy(old)  # a no-op write: no new resourceVersion, no event
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[rt][key] = new
        self._record(Change(self.rv, "ADDED" if old is None else "MODIFIED", rt, new, old))
        return copy.deepcopy(new)

    def _remove(self, rt: ResourceType, key: Key, last: dict[str, Any]) -> dict[str, Any]:
        old = self.objects[rt].pop(key)
        self.rv += 1
        last["metadata"]["resourceVersion"] = str(self.rv)
        self._record(Change(self.rv, "DELETED", rt, last, old))
        return copy.deepcopy(last)

    def _record(self, change: Change) -> None:
        self.history.append(change)
        for listener in list(self.listeners):
            listener(change)


def translate(change: Change, match: Predicate) -> tuple[str, dict[str, Any]] | None:
    """What a watcher with selector `match` sees of a change (cacher `convertToWatchEvent`): a MODIFIED
    object that enters the selection is ADDED, one that leaves it is DELETED (old state, new RV)."""
    if change.type == "ADDED":
        return ("ADDED", change.obj) if match(change.obj) else None
    if change.type == "DELETED":
        return ("DELETED", change.obj) if match(change.obj) else None
    assert change.old is not None
    was, now = match(change.old), match(change.obj)
    if was and now:
        return "MODIFIED", change.obj
    if now:
        return "ADDED", change.obj
    if was:
        gone = copy.deepcopy(change.old)
        gone["metadata"]["resourceVersion"] = change.obj["metadata"]["resourceVersion"]
        return "DELETED", gone
    return None
