"""A pure, typed view of only the Kubernetes fields fastingress uses.

`objects` holds the frozen Structs, `convert` turns raw API dicts into them (validating like the API
server, invalid input becomes a `Problem`), `store` keeps the current objects and answers whether a
change is relevant. No I/O, no clocks, no numpy, no kubernetes client here.
"""

from fastingress.model.convert import Converted, convert_object, static_endpoint_slice
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
    Kind,
    ObjectKey,
    Service,
    ServicePort,
    Snapshot,
    TLSSecret,
)
from fastingress.model.problems import Problem
from fastingress.model.store import Change, Store

__all__ = [
    "Backend",
    "Change",
    "Converted",
    "Endpoint",
    "EndpointPort",
    "EndpointSlice",
    "Ingress",
    "IngressClass",
    "IngressPath",
    "IngressRule",
    "IngressTLS",
    "Kind",
    "ObjectKey",
    "Problem",
    "Service",
    "ServicePort",
    "Snapshot",
    "Store",
    "TLSSecret",
    "convert_object",
    "static_endpoint_slice",
]
