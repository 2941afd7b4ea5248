"""`ClusterDuties`: what the supervisor writes back to the cluster (Lease, Ingress status, Events).

Responsibility: own the three writers that only make sense with the Kubernetes source, and the
threads they run in: the `LeaseElector` (one replica leads), the `StatusWriter` (the leader keeps
`status.loadBalancer` of our Ingresses equal to the published addresses) and the `EventRecorder`
(the leader turns problems into Warning Events). The main loop calls `after_publish` after each
table publish and `tick` on its regular check; both only hand over values and never block.

Why only the leader records Events: every replica compiles the same problems, so N replicas would
post each Event N times. A replica that becomes leader offers the current problems again (the
recorder's memory is reset), so nothing is lost across a fail-over; the recorder's per-generation
deduplication keeps that from repeating Events the old leader already posted only for objects
whose generation did not change, which is the price of not reading Events back (no `list` on
events in our RBAC).

Identity and namespace: `FASTINGRESS_POD_NAME` (else the host name, which is the pod name in a
pod) and `FASTINGRESS_POD_NAMESPACE` (else the service account's namespace file, else `default`).
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import kubernetes.client

from fastingress.model.objects import Snapshot
from fastingress.settings import Settings
from fastingress.sources.lbstatus import LoadBalancerIndex
from fastingress.supervisor.election import LeaseElector
from fastingress.supervisor.events import EventRecorder
from fastingress.supervisor.reconcile import ReconcileState
from fastingress.supervisor.status import StatusWriter

__all__ = ["ClusterDuties", "identity_of", "lease_namespace"]

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
JOIN_S = 2.0


def identity_of(settings: Settings) -> str:
    return settings.pod_name or socket.gethostname()


def lease_namespace(settings: Settings, service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    if settings.pod_namespace:
        return settings.pod_namespace
    try:
        return service_account_file.read_text().strip() or "default"
    except OSError:
        return "default"


class ClusterDuties:
    """The elector, status writer and event recorder, each on its own daemon thread."""

    def __init__(self, settings: Settings, client: kubernetes.client.ApiClient, index: LoadBalancerIndex) -> None:
        identity = identity_of(settings)
        self.elector = LeaseElector(client, namespace=lease_namespace(settings), name=settings.election_id,
                                    identity=identity, lease_duration_s=settings.lease_duration_s,
                                    renew_deadline_s=settings.lease_renew_deadline_s,
                                    retry_period_s=settings.lease_retry_period_s)
        self.status = StatusWriter(client, index, self.elector, publish_address=settings.publish_address)
        self.events = EventRecorder(client, identity)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=part.run, args=(self._stop,), name=name, daemon=True)
                         for name, part in (("elector", self.elector), ("status", self.status),
                                            ("events", self.events))]
        self._leading = False  # what the main loop last saw (events are recorded by the leader only)
        self._last: tuple[ReconcileState, Snapshot] | None = None
        if not settings.publish_address and not settings.publish_service:
            log.warning("neither FASTINGRESS_PUBLISH_SERVICE nor FASTINGRESS_PUBLISH_ADDRESS is set: "
                        "Ingress status will not be written", extra={"reason": "NoPublishAddress"})

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def after_publish(self, state: ReconcileState, snapshot: Snapshot) -> None:
        """From the main loop after a publish: the owned Ingresses to the status writer, problems to Events."""
        if state.config is not None:
            self.status.update_owned(state.config.owned)
        self._last = (state, snapshot)
        if self._leading:
            self.events.record(state.problems, snapshot)

    def tick(self) -> None:
        """From the main loop's regular check: notice a leadership change (Events follow the leader)."""
        leading = self.elector.is_leader
        if leading == self._leading:
            return
        self._leading = leading
        if leading and self._last is not None:
            self.events.reset()  # offer every current problem again: the old leader may not have
            self.events.record(self._last[0].problems, self._last[1])

    def close(self) -> None:
        """Stop the threads; the elector releases the Lease on its way out so another replica takes over."""
        self._stop.set()
        for thread in self._threads:
            thread.join(JOIN_S)
