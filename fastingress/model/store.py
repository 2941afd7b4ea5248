"""`Store`: the current model objects, whether a change matters, and reverse indexes for the compiler.

Theory of operation: sources emit `Change(kind, key, obj)` (obj None = deleted); the reconcile loop
calls `Store.apply` for each and marks itself dirty only when it returns True. An update equal to the
stored object, or carrying the same non-empty resourceVersion, changes nothing and returns False:
that is how our own status writes (which bump nothing we store) never trigger a rebuild. Deleting
an unknown object is not relevant either. Reverse indexes (Service -> Ingresses, Secret -> Ingresses)
are kept up to date on every apply, so that finding the Ingresses a change affects costs work
proportional to the change, never a scan of the store.

Every kubernetes.io/tls Secret is kept and every change to one is relevant, referenced by an Ingress
or not: the default certificate's Secret (FASTINGRESS_DEFAULT_TLS_SECRET) is referenced by none.
A source that narrows what it watches must still deliver that Secret.

The Store is owned by one thread (the reconcile loop) and is not locked. It does no validation
(that happened in `convert`) and no I/O.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from fastingress.model.objects import (
    EndpointSlice,
    Ingress,
    IngressClass,
    Kind,
    ObjectKey,
    Service,
    Snapshot,
    TLSSecret,
)

K = TypeVar("K", ObjectKey, str)
T = TypeVar("T", Ingress, IngressClass, Service, EndpointSlice, TLSSecret)


class Change(msgspec.Struct, frozen=True):
    """One object added, updated or deleted, as a source reports it."""

    kind: Kind
    key: ObjectKey  # IngressClass: ObjectKey("", name)
    obj: object | None  # the model object of `kind`; None when the object was deleted


class Store:
    """The current objects by kind, with Service/Secret -> Ingress reverse indexes."""

    __slots__ = ("_by_secret", "_by_service", "_classes", "_ingresses", "_secrets", "_services", "_slices", "_snapshot")

    def __init__(self) -> None:
        self._ingresses: dict[ObjectKey, Ingress] = {}
        self._classes: dict[str, IngressClass] = {}  # cluster-scoped: by name, as in the Snapshot
        self._services: dict[ObjectKey, Service] = {}
        self._slices: dict[ObjectKey, EndpointSlice] = {}
        self._secrets: dict[ObjectKey, TLSSecret] = {}
        self._by_service: dict[ObjectKey, set[ObjectKey]] = {}  # Service key -> Ingress keys
        self._by_secret: dict[ObjectKey, set[ObjectKey]] = {}  # Secret key -> Ingress keys
        self._snapshot: Snapshot | None = None  # cached until the next relevant change

    def __len__(self) -> int:
        kinds = (self._ingresses, self._classes, self._services, self._slices, self._secrets)
        return sum(len(objects) for objects in kinds)

    def apply(self, change: Change) -> bool:
        """Apply one change; True when it changed what `snapshot` returns (a rebuild is due).

        Raises TypeError when `obj` is not the model type of `kind`: that is a bug in a source.
        """
        key, obj = change.key, change.obj
        if change.kind is Kind.INGRESS:
            old = self._ingresses.get(key)
            relevant = _put(self._ingresses, key, obj, Ingress)
            if relevant:
                self._reindex_ingress(key, old, self._ingresses.get(key))
        elif change.kind is Kind.INGRESS_CLASS:
            relevant = _put(self._classes, key.name, obj, IngressClass)
        elif change.kind is Kind.SERVICE:
            relevant = _put(self._services, key, obj, Service)
        elif change.kind is Kind.ENDPOINT_SLICE:
            relevant = _put(self._slices, key, obj, EndpointSlice)
        elif change.kind is Kind.SECRET:
            relevant = _put(self._secrets, key, obj, TLSSecret)
        else:
            relevant = False  # Kind.FILE carries problems, never objects
        if relevant:
            self._snapshot = None
        return relevant

    def snapshot(self) -> Snapshot:
        """An immutable view for the compiler.

        Cost: one shallow copy of each kind's dict, O(number of objects), paid at most once per
        relevant change (cached until the next one); the objects themselves are frozen and shared.
        Callers must not mutate the dicts of the returned Snapshot: it may be handed out again.
        """
        if self._snapshot is None:
            self._snapshot = Snapshot(
                ingresses=dict(self._ingresses),
                classes=dict(self._classes),
                services=dict(self._services),
                slices=dict(self._slices),
                secrets=dict(self._secrets),
            )
        return self._snapshot

    def ingresses_for_service(self, key: ObjectKey) -> set[ObjectKey]:
        """The Ingresses whose default backend or rules name the Service `key` (a copy)."""
        return set(self._by_service.get(key, ()))

    def ingresses_for_secret(self, key: ObjectKey) -> set[ObjectKey]:
        """The Ingresses whose `spec.tls[].secretName` names the Secret `key` (a copy)."""
        return set(self._by_secret.get(key, ()))

    def _reindex_ingress(self, key: ObjectKey, old: Ingress | None, new: Ingress | None) -> None:
        """Move `key`'s entries in the reverse indexes from what `old` references to what `new` does."""
        if old is not None:
            _unlink(self._by_service, _referenced_services(old), key)
            _unlink(self._by_secret, _referenced_secrets(old), key)
        if new is not None:
            for target in _referenced_services(new):
                self._by_service.setdefault(target, set()).add(key)
            for target in _referenced_secrets(new):
                self._by_secret.setdefault(target, set()).add(key)


def _put(objects: dict[K, T], key: K, obj: object | None, model: type[T]) -> bool:
    """Store or delete `obj` under `key`; whether that changed anything."""
    old = objects.get(key)
    if obj is None:
        if old is None:
            return False  # deleting what we never had (e.g. an object convert rejected)
        del objects[key]
        return True
    if not isinstance(obj, model):
        raise TypeError(f"a {model.__name__} change carries a {type(obj).__name__}")
    if old is not None and _is_same(old, obj):
        return False
    objects[key] = obj
    return True


def _is_same(old: T, new: T) -> bool:
    """Whether an update changes nothing: equal, or the same non-empty resourceVersion."""
    return old == new or (bool(new.resource_version) and old.resource_version == new.resource_version)


def _referenced_services(ingress: Ingress) -> set[ObjectKey]:
    """The Service keys an Ingress routes to (Services live in the Ingress' namespace)."""
    backends = [path.backend for rule in ingress.rules for path in rule.paths]
    if ingress.default_backend is not None:
        backends.append(ingress.default_backend)
    namespace = ingress.key.namespace
    return {ObjectKey(namespace, b.service) for b in backends if b.service}


def _referenced_secrets(ingress: Ingress) -> set[ObjectKey]:
    """The Secret keys an Ingress takes certificates from."""
    namespace = ingress.key.namespace
    return {ObjectKey(namespace, tls.secret_name) for tls in ingress.tls if tls.secret_name}


def _unlink(index: dict[ObjectKey, set[ObjectKey]], targets: set[ObjectKey], key: ObjectKey) -> None:
    """Remove `key` from `index[target]` for each target, dropping sets that become empty."""
    for target in targets:
        ingresses = index.get(target)
        if ingresses is not None:
            ingresses.discard(key)
            if not ingresses:
                del index[target]
