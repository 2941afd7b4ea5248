"""Small builders for model objects, so compiler tests read like the manifests they stand for.

Defaults: namespace "default", class "fastingress" (ours with the default options and no
IngressClass objects), Service "web" with port 80 named "http".
"""

from __future__ import annotations

from fastingress.model.objects import (
    Backend,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    Ingress,
    IngressClass,
    IngressPath,
    IngressRule,
    IngressTLS,
    ObjectKey,
    Service,
    ServicePort,
    Snapshot,
    TLSSecret,
)

NS = "default"


def backend(service: str = "web", port: int | str = 80) -> Backend:
    """A Service backend; an int port is a number, a str port a name."""
    if isinstance(port, int):
        return Backend(service=service, port_number=port)
    return Backend(service=service, port_name=port)


def path(p: str = "/", path_type: str = "Prefix", service: str = "web", port: int | str = 80) -> IngressPath:
    return IngressPath(path=p, path_type=path_type, backend=backend(service, port))


def rule(host: str = "", *paths: IngressPath) -> IngressRule:
    return IngressRule(host=host, paths=paths)


def tls(secret: str, *hosts: str) -> IngressTLS:
    return IngressTLS(hosts=hosts, secret_name=secret)


def ingress(
    name: str, *rules: IngressRule, ns: str = NS, default: Backend | None = None, tls: tuple[IngressTLS, ...] = (),
    created: str = "", seq: int = 0, class_name: str | None = "fastingress", class_annotation: str | None = None,
    annotations: dict[str, str] | None = None,
) -> Ingress:
    return Ingress(
        key=ObjectKey(ns, name), created=created, seq=seq, class_name=class_name,
        class_annotation=class_annotation, annotations=annotations or {}, default_backend=default,
        rules=rules, tls=tls,
    )


def ingress_class(name: str, controller: str = "fastingress.io/ingress-controller", default: bool = False
                  ) -> IngressClass:
    return IngressClass(name=name, controller=controller, is_default=default)


def service(
    name: str = "web", *ports: ServicePort, ns: str = NS, type: str = "ClusterIP", external_name: str = ""
) -> Service:
    return Service(key=ObjectKey(ns, name), type=type, external_name=external_name,
                   ports=ports or (ServicePort(port=80, name="http", target_port=8080),))


def endpoints(*addresses: str, ready: bool = True, serving: bool = True, terminating: bool = False) -> Endpoint:
    return Endpoint(addresses=addresses, ready=ready, serving=serving, terminating=terminating)


def endpoint_slice(
    name: str, svc: str = "web", *eps: Endpoint, ns: str = NS, port: int = 8080, port_name: str = "http",
    address_type: str = "IPv4",
) -> EndpointSlice:
    return EndpointSlice(key=ObjectKey(ns, name), service=svc, address_type=address_type,
                         ports=(EndpointPort(port=port, name=port_name),), endpoints=eps)


def secret(name: str, cert_pem: bytes, key_pem: bytes, ns: str = NS) -> TLSSecret:
    return TLSSecret(key=ObjectKey(ns, name), cert_pem=cert_pem, key_pem=key_pem)


def snapshot(*objects: Ingress | IngressClass | Service | EndpointSlice | TLSSecret) -> Snapshot:
    """A Snapshot holding these objects, keyed as the Store keys them."""
    ingresses: dict[ObjectKey, Ingress] = {}
    classes: dict[str, IngressClass] = {}
    services: dict[ObjectKey, Service] = {}
    slices: dict[ObjectKey, EndpointSlice] = {}
    secrets: dict[ObjectKey, TLSSecret] = {}
    for obj in objects:
        if isinstance(obj, Ingress):
            ingresses[obj.key] = obj
        elif isinstance(obj, IngressClass):
            classes[obj.name] = obj
        elif isinstance(obj, Service):
            services[obj.key] = obj
        elif isinstance(obj, EndpointSlice):
            slices[obj.key] = obj
        else:
            secrets[obj.key] = obj
    return Snapshot(ingresses=ingresses, classes=classes, services=services, slices=slices, secrets=secrets)
