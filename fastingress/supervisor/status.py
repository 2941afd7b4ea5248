"""`StatusWriter`: writes `status.loadBalancer.ingress` of every Ingress we own, from the elected leader only.

Responsibility: make the status of each owned Ingress show the addresses we publish, with as few API
writes as possible, from one daemon thread (`run(stop)`). It must not decide ownership (the compiler
does: `CompiledConfig.owned`), read objects from the API (the kube source records what each Ingress
carries in the `LoadBalancerIndex`), or write anything while this replica is not the leader.

Theory of operation:

- *What is desired.* `FASTINGRESS_PUBLISH_ADDRESS` (comma-separated; an IP becomes `{"ip": ..}`, anything
  else `{"hostname": ..}`) wins; otherwise the published Service's addresses from the index
  (`FASTINGRESS_PUBLISH_SERVICE`). Unknown (the Service not seen yet) or empty (its load balancer not
  provisioned yet) means nothing is written: an empty list would make external-dns delete records.
  Why nothing is written is logged once per reason.
- *When.* A pass runs on `update_owned` (after each table publish), on any index change, on a change
  of leadership, and every `resync_s`, all through one Event. A pass compares, for each owned Ingress
  the index knows, what it carries with what is desired, and PATCHes the status subresource (a JSON
  merge patch) only where they differ.
- *Our write in flight.* Until the watch delivers our write, the index still shows the old value. So
  each write is remembered as (what we wrote, what the index showed then, when): while the index
  still shows that old value, the key is not rewritten, for up to `SETTLE_S`. A value that is neither
  (another controller or a person overwrote it) is rewritten at once.
- *Leaving our set.* When an Ingress stops being ours (another class, deleted rules) and this process
  wrote its status and it still shows those addresses, the status is cleared (`ingress: []`), so the
  new owner starts clean. Nothing is cleared on shutdown: in a rolling update the next replica writes
  the same addresses, and clearing in between would make external-dns delete the DNS records.
- *Failures.* 404: the Ingress is gone, skipped. Unreachable API, 429 or 5xx: the pass stops. Other
  4xx: that Ingress is skipped. Either way the next pass runs after a backoff (1 s doubling to 30 s),
  and each distinct reason is logged once per streak of failures.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import kubernetes.client
import urllib3
from kubernetes.client.exceptions import ApiException

from fastingress.model.objects import ObjectKey
from fastingress.sources.kubeapi import describe_error
from fastingress.sources.lbstatus import LBAddress, LoadBalancerIndex

__all__ = ["Leadership", "StatusWriter", "Written", "is_clear_needed", "is_write_needed", "parse_publish_address",
           "status_patch"]

log = logging.getLogger(__name__)

RESYNC_S = 60.0  # a pass even when nothing woke us: repairs what a missed event or a lost write left behind
SETTLE_S = 30.0  # how long our write may take to come back through the watch before we write it again
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 30.0  # after a failed pass; the reflectors back off the same way
REQUEST_TIMEOUT_S = (5.0, 10.0)  # (connect, read) per PATCH: a hung API server cannot stall the thread
MERGE_PATCH = "application/merge-patch+json"  # a dict body would otherwise be sent as a strategic merge patch


class Leadership(Protocol):
    """What the writer needs of the elector (`LeaseElector` has it)."""

    @property
    def is_leader(self) -> bool: ...

    def on_change(self, callback: Callable[[bool], None]) -> None: ...


class Written(NamedTuple):
    """One status write of this process: what we wrote, what the index showed then, when (clock())."""

    addresses: tuple[LBAddress, ...]
    seen: tuple[LBAddress, ...]
    at: float


def parse_publish_address(text: str) -> tuple[LBAddress, ...]:
    """`FASTINGRESS_PUBLISH_ADDRESS` as sorted (ip, hostname) pairs: IPs as ip, anything else as hostname."""
    out = set()
    for part in text.split(","):
        if part := part.strip():
            try:
                out.add((str(ipaddress.ip_address(part)), ""))
            except ValueError:
                out.add(("", part))
    return tuple(sorted(out))


def status_patch(addresses: tuple[LBAddress, ...]) -> dict[str, Any]:
    """The merge patch setting `status.loadBalancer.ingress` to exactly `addresses` (a list is replaced whole)."""
    entries = [{k: v for k, v in (("ip", ip), ("hostname", hostname)) if v} for ip, hostname in addresses]
    return {"status": {"loadBalancer": {"ingress": entries}}}


def is_write_needed(desired: tuple[LBAddress, ...], current: tuple[LBAddress, ...], written: Written | None,
                    now: float, settle_s: float = SETTLE_S) -> bool:
    """Whether an owned Ingress that carries `current` must be written `desired`."""
    if not desired or current == desired:
        return False
    in_flight = (written is not None and written.addresses == desired and written.seen == current
                 and now - written.at < settle_s)
    return not in_flight


def is_clear_needed(current: tuple[LBAddress, ...], written: Written, now: float, settle_s: float = SETTLE_S) -> bool:
    """Whether an Ingress that left our set still shows what we wrote (or our write is still on its way)."""
    if current == written.addresses:
        return bool(current)
    return current == written.seen and now - written.at < settle_s


class StatusWriter:
    """Keeps the status of the owned Ingresses equal to the published addresses while `leadership` leads."""

    def __init__(self, api_client: kubernetes.client.ApiClient, index: LoadBalancerIndex, leadership: Leadership, *,
                 publish_address: str = "", resync_s: float = RESYNC_S, settle_s: float = SETTLE_S,
                 backoff_s: tuple[float, float] = (BACKOFF_MIN_S, BACKOFF_MAX_S),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = kubernetes.client.NetworkingV1Api(api_client)
        self.index = index
        self.leadership = leadership
        self.address = parse_publish_address(publish_address)  # () when not set: the Service's addresses
        self.resync_s, self.settle_s, self.backoff_s = resync_s, settle_s, backoff_s
        self._clock = clock
        self._wake = threading.Event()
        self._owned: tuple[tuple[ObjectKey, ...], frozenset[ObjectKey]] = ((), frozenset())  # replaced whole
        # the writer thread's own state
        self._written: dict[ObjectKey, Written] = {}
        self._why_not = ""  # why nothing is desired now (logged when it changes)
        self._errors: set[str] = set()  # failure reasons logged in the current streak
        self._backoff_s = 0.0
        # counters for /metrics (read from other threads; ints are replaced, never torn)
        self.writes = 0
        self.write_failures = 0
        self.clears = 0
        index.on_change(self._wake.set)
        leadership.on_change(lambda _leader: self._wake.set())

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    def stats(self) -> dict[str, int]:
        return {"writes": self.writes, "write_failures": self.write_failures, "clears": self.clears}

    def update_owned(self, keys: tuple[ObjectKey, ...]) -> None:
        """From the main loop after each table publish: the Ingresses we own now (`CompiledConfig.owned`)."""
        self._owned = (keys, frozenset(keys))
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Write until `stop` is set. Deliberately nothing on the way out (see the module docstring)."""
        threading.Thread(target=self._wake_on, args=(stop,), name="status-stop", daemon=True).start()
        while not stop.is_set():
            self._wake.clear()  # before the pass: a change during the pass runs another one
            try:
                failed = self._sync()
            except Exception as exc:  # a bug: keep the thread, retry later
                failed = True
                self._failed(f"unexpected {type(exc).__name__}: {exc}", None, exc)
            if failed is None:  # not the leader: nothing was tried, nothing to report
                self._wake.wait(self.resync_s)
                continue
            if failed:
                self._backoff_s = min(max(self._backoff_s * 2, self.backoff_s[0]), self.backoff_s[1])
                stop.wait(self._backoff_s)  # changes meanwhile leave _wake set: the pass after the backoff sees them
                continue
            if self._errors:
                log.info("Ingress status writes succeed again", extra={"kind": "Ingress"})
            self._errors.clear()
            self._backoff_s = 0.0
            self._wake.wait(self.resync_s)

    def _wake_on(self, stop: threading.Event) -> None:
        """A helper thread: the loop waits on `_wake` alone, so `stop` must set it too."""
        stop.wait()
        self._wake.set()

    def _sync(self) -> bool | None:
        """One pass; True when a write failed (then the next pass comes after a backoff), None when not leader."""
        if not self.leadership.is_leader:
            return None
        owned, owned_set = self._owned
        failed = False
        desired = self._desired()
        for key in owned if desired else ():
            current = self.index.ingress(key)  # None: not seen by the source (yet, or any more)
            if current is None or not is_write_needed(desired, current, self._written.get(key), self._clock(),
                                                      self.settle_s):
                continue
            if not self.leadership.is_leader:
                return failed
            outcome = self._patch(key, desired)
            if outcome == "ok":
                self.writes += 1
                self._written[key] = Written(desired, current, self._clock())
            failed |= outcome in ("failed", "stop")
            if outcome == "stop":
                return True
        for key in [k for k in self._written if k not in owned_set]:
            current = self.index.ingress(key)
            if current is None or not is_clear_needed(current, self._written[key], self._clock(), self.settle_s):
                del self._written[key]  # gone, or someone else's status now
                continue
            if not self.leadership.is_leader:
                return failed
            outcome = self._patch(key, ())
            if outcome in ("ok", "gone"):
                self.clears += outcome == "ok"
                del self._written[key]
            failed |= outcome in ("failed", "stop")
            if outcome == "stop":
                return True
        return failed

    def _desired(self) -> tuple[LBAddress, ...]:
        """The addresses to publish; () when nothing is to be written (why is logged once)."""
        if self.address:
            return self.address
        service = self.index.publish_service
        addresses = self.index.service() if service is not None else None
        if service is None:
            why = "neither FASTINGRESS_PUBLISH_ADDRESS nor FASTINGRESS_PUBLISH_SERVICE is set"
        elif addresses is None:
            why = f"the published Service {service} is not known (yet)"
        elif not addresses:
            why = f"the published Service {service} has no addresses (yet)"
        else:
            why = ""
        if why != self._why_not:
            self._why_not = why
            if why:
                log.info("Ingress status is not written: %s", why, extra={"kind": "Ingress", "reason": why})
        return addresses or ()

    def _patch(self, key: ObjectKey, addresses: tuple[LBAddress, ...]) -> str:
        """PATCH one status: "ok", "gone" (404), "failed" (this Ingress), or "stop" (the API is unwell)."""
        try:
            resp: Any = self.api.patch_namespaced_ingress_status(
                key.name, key.namespace, status_patch(addresses), _content_type=MERGE_PATCH,
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S)  # raw: no model validation per write
            resp.read()
            resp.release_conn()
        except ApiException as exc:
            if exc.status == 404:
                return "gone"
            self._failed(describe_error(exc), key, None)
            return "stop" if exc.status in (0, 429) or exc.status >= 500 else "failed"
        except urllib3.exceptions.HTTPError as exc:
            self._failed(describe_error(exc), key, None)
            return "stop"
        log.debug("wrote status of Ingress %s: %s", key, addresses or "cleared",
                  extra={"kind": "Ingress", "namespace": key.namespace, "object": key.name})
        return "ok"

    def _failed(self, reason: str, key: ObjectKey | None, exc: Exception | None) -> None:
        if key is not None:  # a failed request (not a bug in the pass)
            self.write_failures += 1
        if reason not in self._errors:
            self._errors.add(reason)
            log.warning("writing Ingress status failed%s: %s; retrying with backoff", f" ({key})" if key else "",
                        reason, exc_info=exc, extra={"kind": "Ingress", "reason": reason})
