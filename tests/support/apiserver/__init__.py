"""A test Kubernetes API server: the real REST wire protocol on 127.0.0.1 for the real `kubernetes` client.

    with ApiServer() as api:
        api.create({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "a"}, ...})
        client = api.api_client()                  # or api.write_kubeconfig(path)
        api.fail_requests(2, code=503)             # faults: fail, delay, expire, drop, compact, stop/start
        assert api.count("watch", "ingresses") == 1

Modules: `server` (ApiServer: lifecycle, test-side objects, faults, counters, client config), `front`
(HTTP routing, verbs, list pages, watch streams), `store` (objects, resourceVersions, history, write
rules), `wire` (Status, selectors, patches), `faults` (rules and the request log), `resources` (the
served kinds and their registry rules). docs/dev/testing.md describes what is faithful and what is not.
"""

from tests.support.apiserver.resources import RESOURCES, ResourceType, resource
from tests.support.apiserver.server import ApiServer
from tests.support.apiserver.wire import ApiError, status_body

__all__ = ["RESOURCES", "ApiError", "ApiServer", "ResourceType", "resource", "status_body"]
