"""Raw Kubernetes objects (API-server JSON shape) for tests that feed the test API server."""

from __future__ import annotations

import base64
from typing import Any


def ingress(name: str, host: str, service: str = "web", *, namespace: str = "default", path: str = "/",
            port: int = 80, class_name: str | None = "fastingress", tls_secret: str = "",
            annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": [{"host": host, "http": {"paths": [
        {"path": path, "pathType": "Prefix", "backend": {"service": {"name": service, "port": {"number": port}}}}]}}]}
    if class_name is not None:
        spec["ingressClassName"] = class_name
    if tls_secret:
        spec["tls"] = [{"hosts": [host], "secretName": tls_secret}]
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def ingress_class(name: str = "fastingress", controller: str = "fastingress.io/ingress-controller") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": name},
            "spec": {"controller": controller}}


def service(name: str = "web", *, namespace: str = "default", port: int = 80, target_port: int = 8080,
            service_type: str = "ClusterIP") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": service_type, "ports": [{"name": "http", "port": port, "targetPort": target_port}]}}


def endpoint_slice(name: str, service_name: str, addresses: list[str], port: int, *, namespace: str = "default",
                   ready: bool = True) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a in addresses]}


def tls_secret(name: str, cert_pem: bytes, key_pem: bytes, *, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {"tls.crt": base64.b64encode(cert_pem).decode(), "tls.key": base64.b64encode(key_pem).decode()}}


def opaque_secret(name: str, *, namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": name, "namespace": namespace},
            "data": {"password": base64.b64encode(b"hunter2").decode()}}
