"""The resource types the test API server serves, and the per-kind rules of the real registry.

Each `ResourceType` carries what the real kube-apiserver's registry strategy decides per kind: whether it
is namespaced, whether it has a `status` subresource (then create resets `.status` and main-resource
writes ignore it), whether `metadata.generation` is tracked, whether an update without
`metadata.resourceVersion` is allowed, what DELETE answers (the object or a `Status`), and which field
labels `fieldSelector` accepts beyond `metadata.name`/`metadata.namespace`.

Pure data and pure functions: no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

_EVENT_FIELDS = frozenset({"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                           "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                           "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"})
_EVENTS_V1_FIELDS = frozenset({"regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid",
                               "regarding.apiVersion", "regarding.resourceVersion", "regarding.fieldPath",
                               "reason", "reportingController", "type"})


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False  # `.../status` exists; create resets status; main writes ignore it
    generation: bool = False  # metadata.generation starts at 1 and bumps on changes outside metadata/status
    unconditional_update: bool = True  # PUT without metadata.resourceVersion allowed (false for Lease)
    return_deleted_object: bool = False  # DELETE answers the object (Service) instead of a Status
    field_labels: frozenset[str] = frozenset()  # fieldSelector labels beyond metadata.name/namespace

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """How the real server names the resource in messages: `ingresses.networking.k8s.io`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def base_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


INGRESSES = ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress", status_subresource=True, generation=True)
INGRESS_CLASSES = ResourceType("networking.k8s.io", "v1", "ingressclasses", "IngressClass", namespaced=False,
                               generation=True)
SERVICES = ResourceType("", "v1", "services", "Service", status_subresource=True, return_deleted_object=True,
                        field_labels=frozenset({"spec.clusterIP", "spec.type"}))
ENDPOINT_SLICES = ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", generation=True,
                               field_labels=frozenset({"addressType"}))
SECRETS = ResourceType("", "v1", "secrets", "Secret", field_labels=frozenset({"type"}))
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease", unconditional_update=False)
EVENTS = ResourceType("", "v1", "events", "Event", field_labels=_EVENT_FIELDS)
EVENTS_V1 = ResourceType("events.k8s.io", "v1", "events", "Event", field_labels=_EVENTS_V1_FIELDS)

RESOURCES = (INGRESSES, INGRESS_CLASSES, SERVICES, ENDPOINT_SLICES, SECRETS, LEASES, EVENTS, EVENTS_V1)

BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


def canonical_name(rt: ResourceType) -> str:
    """The name counters and test helpers use: the plural, group-qualified only where plurals collide
    (`events` is core v1, `events.events.k8s.io` the events.k8s.io/v1 API)."""
    return rt.qualified if rt is EVENTS_V1 else rt.plural


BY_NAME = {canonical_name(r): r for r in RESOURCES} | {r.qualified: r for r in RESOURCES}


def resource(name_or_obj: str | ResourceType | dict[str, Any]) -> ResourceType:
    """A resource type by canonical name (`ingresses`), qualified name, or an object's apiVersion/kind."""
    if isinstance(name_or_obj, ResourceType):
        return name_or_obj
    if isinstance(name_or_obj, dict):
        key = (name_or_obj.get("apiVersion", ""), name_or_obj.get("kind", ""))
        if key not in BY_KIND:
            raise KeyError(f"the test API server does not serve {key[0]} {key[1]}")
        return BY_KIND[key]
    return BY_NAME[name_or_obj]


# Service ClusterIPs come from the default service CIDR (kube-apiserver --service-cluster-ip-range default).
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")


def apply_defaults(rt: ResourceType, obj: dict[str, Any], serial: int) -> None:
    """The defaults the real API server fills in on create that a controller may rely on.

    `serial` numbers the object (used to allocate a Service ClusterIP). Only the fields the project
    reads are defaulted; everything else is stored as sent.
    """
    if rt is SERVICES:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName" and "clusterIP" not in spec:
            spec["clusterIP"] = str(SERVICE_CIDR[serial % (SERVICE_CIDR.num_addresses - 2) + 1])
        if "clusterIP" in spec:
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    elif rt is ENDPOINT_SLICES:
        for port in obj.get("ports") or []:
            port.setdefault("protocol", "TCP")
    elif rt is SECRETS:
        obj.setdefault("type", "Opaque")


def empty_status(rt: ResourceType) -> dict[str, Any]:
    """What create leaves in `.status` for kinds with a status subresource (the zero value serialised)."""
    return {"loadBalancer": {}}
