"""`Store`: relevance of changes, snapshots, and the Service/Secret -> Ingress reverse indexes."""

from __future__ import annotations

import pytest

from fastingress.model import Change, Store
from fastingress.model.objects import (
    Backend,
    Endpoint,
    EndpointSlice,
    Ingress,
    IngressClass,
    IngressPath,
    IngressRule,
    IngressTLS,
    Kind,
    ObjectKey,
    Service,
    ServicePort,
    TLSSecret,
)

WEB = ObjectKey("apps", "web")


def make_ingress(
    name: str = "web",
    services: tuple[str, ...] = ("web",),
    default: str | None = None,
    secrets: tuple[str, ...] = (),
    rv: str = "",
    namespace: str = "apps",
) -> Ingress:
    paths = tuple(IngressPath(f"/{s}", "Prefix", Backend(s, 80)) for s in services)
    return Ingress(
        key=ObjectKey(namespace, name),
        resource_version=rv,
        default_backend=Backend(default, 80) if default else None,
        rules=(IngressRule("a.example.com", paths),),
        tls=tuple(IngressTLS(("a.example.com",), s) for s in secrets),
    )


def put(store: Store, obj: Ingress) -> bool:
    return store.apply(Change(Kind.INGRESS, obj.key, obj))


def test_adding_an_object_is_relevant_and_shows_in_the_snapshot() -> None:
    store = Store()
    ingress = make_ingress()
    assert put(store, ingress)
    assert len(store) == 1
    assert store.snapshot().ingresses == {WEB: ingress}


def test_an_update_equal_to_the_stored_object_is_dropped() -> None:
    store = Store()
    put(store, make_ingress())
    assert not put(store, make_ingress())


def test_an_update_with_the_same_resource_version_is_dropped() -> None:
    store = Store()
    put(store, make_ingress(rv="7"))
    assert not put(store, make_ingress(services=("other",), rv="7"))  # e.g. our own status write
    assert store.snapshot().ingresses[WEB].rules[0].paths[0].backend.service == "web"


def test_an_update_with_a_new_resource_version_or_new_content_is_relevant() -> None:
    store = Store()
    put(store, make_ingress(rv="7"))
    assert put(store, make_ingress(services=("other",), rv="8"))
    assert put(store, make_ingress(services=("third",), rv=""))  # manifests carry no resourceVersion


def test_deleting_a_known_object_is_relevant_and_an_unknown_one_is_not() -> None:
    store = Store()
    put(store, make_ingress())
    assert store.apply(Change(Kind.INGRESS, WEB, None))
    assert not store.apply(Change(Kind.INGRESS, WEB, None))
    assert len(store) == 0
    assert store.snapshot().ingresses == {}


def test_every_kind_is_stored_and_counted() -> None:
    store = Store()
    slice_key = ObjectKey("apps", "web-1")
    changes = [
        Change(Kind.INGRESS, WEB, make_ingress()),
        Change(Kind.INGRESS_CLASS, ObjectKey("", "fast"), IngressClass("fast", "fastingress.io/ingress-controller")),
        Change(Kind.SERVICE, WEB, Service(WEB, ports=(ServicePort(80),))),
        Change(Kind.ENDPOINT_SLICE, slice_key, EndpointSlice(slice_key, "web", endpoints=(Endpoint(("10.0.0.1",)),))),
        Change(Kind.SECRET, ObjectKey("apps", "cert"), TLSSecret(ObjectKey("apps", "cert"), b"C", b"K")),
    ]
    assert all(store.apply(change) for change in changes)
    assert len(store) == 5
    snapshot = store.snapshot()
    assert list(snapshot.classes) == ["fast"]
    assert list(snapshot.services) == [WEB]
    assert list(snapshot.slices) == [slice_key]
    assert list(snapshot.secrets) == [ObjectKey("apps", "cert")]


def test_ingress_classes_are_stored_by_name() -> None:
    store = Store()
    ingress_class = IngressClass("fast", "fastingress.io/ingress-controller")
    assert store.apply(Change(Kind.INGRESS_CLASS, ObjectKey("", "fast"), ingress_class))
    assert store.snapshot().classes == {"fast": ingress_class}
    assert store.apply(Change(Kind.INGRESS_CLASS, ObjectKey("", "fast"), None))
    assert store.snapshot().classes == {}


def test_a_file_change_is_never_relevant() -> None:
    assert not Store().apply(Change(Kind.FILE, ObjectKey("", "site.yaml"), None))


def test_an_object_of_the_wrong_type_is_a_bug() -> None:
    with pytest.raises(TypeError):
        Store().apply(Change(Kind.SERVICE, WEB, make_ingress()))


def test_a_snapshot_does_not_change_after_it_is_taken() -> None:
    store = Store()
    put(store, make_ingress())
    before = store.snapshot()
    put(store, make_ingress("other"))
    assert list(before.ingresses) == [WEB]
    assert set(store.snapshot().ingresses) == {WEB, ObjectKey("apps", "other")}


def test_the_snapshot_is_reused_until_a_relevant_change() -> None:
    store = Store()
    put(store, make_ingress())
    first = store.snapshot()
    put(store, make_ingress())  # no-op
    assert store.snapshot() is first
    put(store, make_ingress("other"))
    assert store.snapshot() is not first


def test_services_map_back_to_the_ingresses_that_route_to_them() -> None:
    store = Store()
    put(store, make_ingress("a", services=("web", "api")))
    put(store, make_ingress("b", services=("api",), default="fallback"))
    put(store, make_ingress("c", services=("api",), namespace="other"))
    assert store.ingresses_for_service(ObjectKey("apps", "api")) == {ObjectKey("apps", "a"), ObjectKey("apps", "b")}
    assert store.ingresses_for_service(ObjectKey("apps", "fallback")) == {ObjectKey("apps", "b")}
    assert store.ingresses_for_service(ObjectKey("other", "api")) == {ObjectKey("other", "c")}
    assert store.ingresses_for_service(ObjectKey("apps", "unknown")) == set()


def test_the_service_index_follows_updates_and_deletions() -> None:
    store = Store()
    put(store, make_ingress("a", services=("web",)))
    put(store, make_ingress("a", services=("api",)))
    assert store.ingresses_for_service(ObjectKey("apps", "web")) == set()
    assert store.ingresses_for_service(ObjectKey("apps", "api")) == {ObjectKey("apps", "a")}
    store.apply(Change(Kind.INGRESS, ObjectKey("apps", "a"), None))
    assert store.ingresses_for_service(ObjectKey("apps", "api")) == set()


def test_secrets_map_back_to_the_ingresses_that_use_them() -> None:
    store = Store()
    put(store, make_ingress("a", secrets=("cert",)))
    put(store, make_ingress("b", secrets=("cert", "other")))
    assert store.ingresses_for_secret(ObjectKey("apps", "cert")) == {ObjectKey("apps", "a"), ObjectKey("apps", "b")}
    put(store, make_ingress("b", secrets=()))
    assert store.ingresses_for_secret(ObjectKey("apps", "cert")) == {ObjectKey("apps", "a")}
    assert store.ingresses_for_secret(ObjectKey("apps", "other")) == set()


def test_an_empty_secret_name_indexes_nothing() -> None:
    store = Store()
    put(store, make_ingress("a", secrets=("",)))
    assert store.ingresses_for_secret(ObjectKey("apps", "")) == set()


def test_index_answers_are_copies() -> None:
    store = Store()
    put(store, make_ingress())
    store.ingresses_for_service(WEB).clear()
    store.ingresses_for_secret(WEB).add(WEB)
    assert store.ingresses_for_service(WEB) == {WEB}
    assert store.ingresses_for_secret(WEB) == set()
